"""Reading labelled photos: layouts, splits, decoding and augmentation."""

from .dataset import PhotoDataset, collate_skipping
from .images import load_image
from .sources import DataSpec, LabelledSet, Sample, load_labelled
from .splits import split_train_val
from .transforms import AugmentConfig, Preprocess, eval_transform, train_transform

__all__ = [
    "AugmentConfig", "DataSpec", "LabelledSet", "PhotoDataset", "Preprocess", "Sample",
    "collate_skipping", "eval_transform", "load_image", "load_labelled", "split_train_val",
    "train_transform",
]

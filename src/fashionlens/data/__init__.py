"""Reading labelled photos: layouts, splits, decoding and augmentation.

The names below load on first use (module `__getattr__`): reading a CSV or listing a
folder (data.sources, data.splits) must not import torch and torchvision, which only the
dataset and the transforms need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

# Public name -> the module (relative to this package) that defines it.
_EXPORTS = {
    "AugmentConfig": ".transforms",
    "DataSpec": ".sources",
    "LabelledSet": ".sources",
    "PhotoDataset": ".dataset",
    "Preprocess": ".preprocess",
    "Sample": ".sources",
    "collate_skipping": ".dataset",
    "eval_transform": ".transforms",
    "load_image": ".images",
    "load_labelled": ".sources",
    "split_train_val": ".splits",
    "train_transform": ".transforms",
}

__all__ = [
    "AugmentConfig", "DataSpec", "LabelledSet", "PhotoDataset", "Preprocess", "Sample",
    "collate_skipping", "eval_transform", "load_image", "load_labelled", "split_train_val",
    "train_transform",
]

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ loads them
    from .dataset import PhotoDataset, collate_skipping
    from .images import load_image
    from .preprocess import Preprocess
    from .sources import DataSpec, LabelledSet, Sample, load_labelled
    from .splits import split_train_val
    from .transforms import AugmentConfig, eval_transform, train_transform


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, __all__)

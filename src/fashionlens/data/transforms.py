"""Pre-processing that matches a backbone, and augmentation suited to phone photos."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2 as T

from .augment import AugmentConfig
from .backdrop import replace_backdrop
from .preprocess import FITS, Preprocess, eval_array, letterbox, tta_arrays

__all__ = ["FITS", "AugmentConfig", "Backdrop", "Letterbox", "Preprocess", "eval_transform",
           "keep_colour", "train_transform", "tta_views"]

_INTERPOLATION = {
    "bicubic": T.InterpolationMode.BICUBIC,
    "bilinear": T.InterpolationMode.BILINEAR,
    "nearest": T.InterpolationMode.NEAREST,
}


class Letterbox(torch.nn.Module):
    """`preprocess.letterbox` as a torchvision step (training's whole-photo fits)."""

    def __init__(self, shape: tuple[int, int], fill: tuple[int, int, int],
                 interpolation: T.InterpolationMode) -> None:
        super().__init__()
        self.shape, self.fill, self.interpolation = shape, fill, interpolation

    def forward(self, img: Image.Image) -> Image.Image:
        resample = {T.InterpolationMode.BICUBIC: Image.Resampling.BICUBIC,
                    T.InterpolationMode.BILINEAR: Image.Resampling.BILINEAR}.get(
            self.interpolation, Image.Resampling.NEAREST)
        return letterbox(img, self.shape, self.fill, resample)


class Backdrop(torch.nn.Module):
    """`backdrop.replace_backdrop` with probability `p`, drawn from torch's generator as
    torchvision's steps are (worker seeds and resumed runs then cover it too). It comes
    first, at the photo's own resolution: the cut-out is cleanest before any resampling."""

    def __init__(self, p: float, shrink: tuple[float, float] = (1.0, 1.0)) -> None:
        super().__init__()
        self.p, self.shrink = p, (float(shrink[0]), float(shrink[1]))

    def forward(self, img: Image.Image) -> Image.Image:
        if not isinstance(img, Image.Image) or torch.rand(()) >= self.p:
            return img
        seed = int(torch.randint(0, 2**62, ()))
        return replace_backdrop(img, np.random.default_rng(seed), self.shrink)

    def extra_repr(self) -> str:
        return f"p={self.p}, shrink={self.shrink}"


def _finish(pre: Preprocess) -> list:
    return [T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(pre.mean, pre.std)]


class EvalTransform:
    """`preprocess.eval_array` as a tensor: the one eval pipeline, for torch callers."""

    def __init__(self, pre: Preprocess, size: int | None = None) -> None:
        self.pre, self.size = pre, size

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return torch.from_numpy(eval_array(img, self.pre, self.size))


def eval_transform(pre: Preprocess, size: int | None = None) -> EvalTransform:
    return EvalTransform(pre, size)


def train_transform(pre: Preprocess, aug: AugmentConfig, size: int | None = None) -> T.Compose:
    interp = _INTERPOLATION[pre.interpolation]
    steps: list = [Backdrop(aug.backdrop, tuple(aug.backdrop_shrink))] if aug.backdrop else []
    if pre.fit != "crop":
        # Crops keep the input's aspect (ratio is relative to it), then the jitter below.
        height, width = pre.shape
        aspect = width / height
        steps.append(T.RandomResizedCrop((height, width), scale=tuple(aug.scale),
                                         ratio=(aug.ratio[0] * aspect, aug.ratio[1] * aspect),
                                         interpolation=interp, antialias=True))
        if aug.rotation:
            steps.append(T.RandomRotation(aug.rotation,
                                          interpolation=T.InterpolationMode.BILINEAR,
                                          fill=[int(round(255 * m)) for m in pre.mean]))
        return T.Compose(steps + _jitter(aug) + _finish(pre) + _erasing(aug))
    size = size or pre.size
    if aug.rotation:
        # Crop a little larger, rotate, then cut the centre: no filled corners, and the
        # rotation runs on the small crop rather than the whole photo (about 2x faster).
        angle = math.radians(min(abs(aug.rotation), 45.0))
        margin = size * (math.cos(angle) + math.sin(angle))
        steps += [T.RandomResizedCrop(int(math.ceil(margin)), scale=tuple(aug.scale),
                                      ratio=tuple(aug.ratio), interpolation=interp, antialias=True),
                  T.RandomRotation(aug.rotation, interpolation=T.InterpolationMode.BILINEAR),
                  T.CenterCrop(size)]
    else:
        steps.append(T.RandomResizedCrop(size, scale=tuple(aug.scale), ratio=tuple(aug.ratio),
                                         interpolation=interp, antialias=True))
    return T.Compose(steps + _jitter(aug) + _finish(pre) + _erasing(aug))


def _jitter(aug: AugmentConfig) -> list:
    steps: list = []
    if aug.hflip:
        steps.append(T.RandomHorizontalFlip(aug.hflip))
    if aug.trivial_augment:
        steps.append(T.TrivialAugmentWide(interpolation=T.InterpolationMode.BILINEAR))
    elif any((aug.brightness, aug.contrast, aug.saturation, aug.hue)):
        steps.append(T.ColorJitter(aug.brightness, aug.contrast, aug.saturation, aug.hue))
    if aug.grayscale:
        steps.append(T.RandomGrayscale(aug.grayscale))
    return steps


def _erasing(aug: AugmentConfig) -> list:
    return [T.RandomErasing(aug.random_erasing, value=0)] if aug.random_erasing else []


def keep_colour(aug: AugmentConfig) -> AugmentConfig:
    """The augmentation without what changes a garment's colour name (saturation, hue,
    grayscale, TrivialAugment's colour ops): for models with a colour task, whose label a
    jittered photo would contradict. Brightness and contrast stay (light varies)."""
    return dataclasses.replace(aug, saturation=0.0, hue=0.0, grayscale=0.0,
                               trivial_augment=False)


def tta_views(img: Image.Image, pre: Preprocess) -> list[torch.Tensor]:
    """`preprocess.tta_arrays` as tensors."""
    return list(torch.from_numpy(tta_arrays(img, pre)))

"""Pre-processing that matches a backbone, and augmentation suited to phone photos."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from PIL import Image
from torchvision.transforms import v2 as T

_INTERPOLATION = {
    "bicubic": T.InterpolationMode.BICUBIC,
    "bilinear": T.InterpolationMode.BILINEAR,
    "nearest": T.InterpolationMode.NEAREST,
}


@dataclass
class Preprocess:
    """How a model expects its input; stored inside every model artifact."""

    size: int = 224
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    interpolation: str = "bicubic"
    crop_pct: float = 0.875

    @property
    def resize_size(self) -> int:
        return int(round(self.size / self.crop_pct))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Preprocess:
        return cls(
            size=int(d["size"]),
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
            interpolation=d.get("interpolation", "bicubic"),
            crop_pct=float(d.get("crop_pct", 0.875)),
        )


@dataclass
class AugmentConfig:
    """Augmentation for photos taken at home on a phone: framing, tilt, light, colour cast."""

    scale: tuple[float, float] = (0.35, 1.0)
    ratio: tuple[float, float] = (0.75, 1.333)
    hflip: float = 0.5
    rotation: float = 15.0
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    hue: float = 0.0  # hue shifts cost ~3 ms a photo and change what colour a garment is
    grayscale: float = 0.05
    trivial_augment: bool = False
    random_erasing: float = 0.0
    extra: dict = field(default_factory=dict)


def _finish(pre: Preprocess) -> list:
    return [T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(pre.mean, pre.std)]


def eval_transform(pre: Preprocess, size: int | None = None) -> T.Compose:
    size = size or pre.size
    interp = _INTERPOLATION[pre.interpolation]
    return T.Compose([T.Resize(int(round(size / pre.crop_pct)), interpolation=interp),
                      T.CenterCrop(size), *_finish(pre)])


def train_transform(pre: Preprocess, aug: AugmentConfig, size: int | None = None) -> T.Compose:
    size = size or pre.size
    interp = _INTERPOLATION[pre.interpolation]
    steps: list = []
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
    if aug.hflip:
        steps.append(T.RandomHorizontalFlip(aug.hflip))
    if aug.trivial_augment:
        steps.append(T.TrivialAugmentWide(interpolation=T.InterpolationMode.BILINEAR))
    elif any((aug.brightness, aug.contrast, aug.saturation, aug.hue)):
        steps.append(T.ColorJitter(aug.brightness, aug.contrast, aug.saturation, aug.hue))
    if aug.grayscale:
        steps.append(T.RandomGrayscale(aug.grayscale))
    steps += _finish(pre)
    if aug.random_erasing:
        steps.append(T.RandomErasing(aug.random_erasing, value=0))
    return T.Compose(steps)


def tta_views(img: Image.Image, pre: Preprocess) -> list[torch.Tensor]:
    """Test-time augmentation: the centre crop, its mirror, and a wider full view."""
    base = eval_transform(pre)
    wide = T.Compose([T.Resize((pre.size, pre.size),
                               interpolation=_INTERPOLATION[pre.interpolation]),
                      *_finish(pre)])
    center = base(img)
    return [center, torch.flip(center, dims=[-1]), wide(img)]

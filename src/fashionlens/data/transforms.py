"""Pre-processing that matches a backbone, and augmentation suited to phone photos."""

from __future__ import annotations

import dataclasses
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


FITS = ("crop", "letterbox", "stretch")


@dataclass
class Preprocess:
    """How a model expects its input; stored inside every model artifact.

    `fit`: `crop` (the ImageNet way: short side to size / crop_pct, centre size x size)
    suits phone photos of one garment. Product shots (60x80) and full-body street photos
    lose what matters to a square crop, so `letterbox` (the whole photo, fitted inside
    `height` x `width`, padded with the mean colour) and `stretch` (resized to exactly
    that) keep it all.
    """

    size: int = 224
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    fit: str = "crop"
    height: int | None = None  # letterbox / stretch: the input's height and width
    width: int | None = None

    def __post_init__(self) -> None:
        if self.fit not in FITS:
            raise ValueError(f"fit '{self.fit}' is not one of {', '.join(FITS)}")
        if self.fit != "crop":
            self.height = int(self.height or self.size)
            self.width = int(self.width or self.size)

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the model's input."""
        if self.fit == "crop":
            return self.size, self.size
        return int(self.height), int(self.width)

    @property
    def resize_size(self) -> int:
        """A short side that is enough to decode a photo at (JPEG draft mode, caches)."""
        if self.fit == "crop":
            return int(round(self.size / self.crop_pct))
        return max(self.shape)

    def to_dict(self) -> dict:
        out = asdict(self)
        if self.fit == "crop":  # format-1 artifacts had no fit: keep them byte-identical
            for key in ("fit", "height", "width"):
                out.pop(key)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> Preprocess:
        return cls(
            size=int(d["size"]),
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
            interpolation=d.get("interpolation", "bicubic"),
            crop_pct=float(d.get("crop_pct", 0.875)),
            fit=str(d.get("fit", "crop")),
            height=None if d.get("height") is None else int(d["height"]),
            width=None if d.get("width") is None else int(d["width"]),
        )


class Letterbox(torch.nn.Module):
    """The whole photo, scaled to fit inside (height, width), centred on a mean-colour pad."""

    def __init__(self, shape: tuple[int, int], fill: tuple[int, int, int],
                 interpolation: T.InterpolationMode) -> None:
        super().__init__()
        self.shape, self.fill, self.interpolation = shape, fill, interpolation

    def forward(self, img: Image.Image) -> Image.Image:
        height, width = self.shape
        scale = min(height / img.height, width / img.width)
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        if size == (width, height) and img.size == size:
            return img
        resample = {T.InterpolationMode.BICUBIC: Image.Resampling.BICUBIC,
                    T.InterpolationMode.BILINEAR: Image.Resampling.BILINEAR}.get(
            self.interpolation, Image.Resampling.NEAREST)
        resized = img.convert("RGB").resize(size, resample)
        canvas = Image.new("RGB", (width, height), self.fill)
        canvas.paste(resized, ((width - size[0]) // 2, (height - size[1]) // 2))
        return canvas


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


def _whole_photo(pre: Preprocess) -> list:
    interp = _INTERPOLATION[pre.interpolation]
    if pre.fit == "stretch":
        return [T.Resize(pre.shape, interpolation=interp, antialias=True)]
    fill = tuple(int(round(255 * m)) for m in pre.mean)
    return [Letterbox(pre.shape, fill, interp)]


def eval_transform(pre: Preprocess, size: int | None = None) -> T.Compose:
    if pre.fit != "crop":
        return T.Compose([*_whole_photo(pre), *_finish(pre)])
    size = size or pre.size
    interp = _INTERPOLATION[pre.interpolation]
    return T.Compose([T.Resize(int(round(size / pre.crop_pct)), interpolation=interp),
                      T.CenterCrop(size), *_finish(pre)])


def train_transform(pre: Preprocess, aug: AugmentConfig, size: int | None = None) -> T.Compose:
    interp = _INTERPOLATION[pre.interpolation]
    steps: list = []
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
    """Test-time augmentation: the centre crop, its mirror, and a wider full view (the
    whole-photo fits: the photo and its mirror)."""
    base = eval_transform(pre)
    if pre.fit != "crop":
        view = base(img)
        return [view, torch.flip(view, dims=[-1])]
    wide = T.Compose([T.Resize((pre.size, pre.size),
                               interpolation=_INTERPOLATION[pre.interpolation]),
                      *_finish(pre)])
    center = base(img)
    return [center, torch.flip(center, dims=[-1]), wide(img)]

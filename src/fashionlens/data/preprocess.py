"""What a model expects as input, and how a photo becomes it: Pillow and NumPy only.

Inference (predict, search, the catalog, the service) runs without torch, so the eval
pipeline lives here as plain array code: resize and crop with Pillow, then scale and
normalise with NumPy. It reproduces torchvision's `Resize` / `CenterCrop` / `ToImage` /
`ToDtype(scale=True)` / `Normalize` on PIL images step for step (torchvision resizes PIL
images with Pillow itself), so models trained with torchvision's augmentations see the
same pixels here, up to one 8-bit step: the crop is resampled straight from the photo
(Pillow's `box`, 1.35 instead of 2.64 ms a photo on the development CPU, as fast inference
wants), whose coefficients round differently from a whole resize on about 2 % of values.
`tests/test_preprocess.py` holds the two to that.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
from PIL import Image

FITS = ("crop", "letterbox", "stretch")
RESAMPLING = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


@dataclass
class Preprocess:
    """How a model expects its input; stored inside every model artifact.

    `fit`: `crop` (the ImageNet way: short side to size / crop_pct, centre size x size)
    suits phone photos of one garment. Product shots (60x80) and full-body street photos
    lose what matters to a square crop, so `letterbox` (the whole photo, fitted inside
    `height` x `width`, padded with the mean colour) and `stretch` (resized to exactly
    that) keep it all.

    `canvases`: further (height, width) inputs for whole-photo fits; each photo goes into
    the one whose shape is nearest its own (log aspect ratio; `shape` on a tie), so a
    tall street photo gets a tall input instead of a thin strip of the default one.
    Measured on the bundled `fashion` model (224 x 168, no retraining): street photos
    (2:3) at 288 x 192 gave outfit tags micro-F1 0.559 against 0.545 (cross-fitted, 10
    cuts), the 27 tall home photos (taller than 1.42) garment type 0.815 against 0.778;
    every photo at 256 x 168 instead lowered home type 0.903 -> 0.883, so one bigger input
    for all is no substitute.
    """

    size: int = 224
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    fit: str = "crop"
    height: int | None = None  # letterbox / stretch: the input's height and width
    width: int | None = None
    canvases: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        if self.fit not in FITS:
            raise ValueError(f"fit '{self.fit}' is not one of {', '.join(FITS)}")
        if self.interpolation not in RESAMPLING:
            raise ValueError(f"interpolation '{self.interpolation}' is not one of "
                             f"{', '.join(RESAMPLING)}")
        if self.fit != "crop":
            self.height = int(self.height or self.size)
            self.width = int(self.width or self.size)
        self.canvases = tuple(canvas_shape(c) for c in self.canvases or ())
        if self.canvases and self.fit == "crop":
            raise ValueError("canvases need a whole-photo fit (letterbox or stretch), not crop")

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the model's input (the default canvas)."""
        if self.fit == "crop":
            return self.size, self.size
        return int(self.height), int(self.width)

    @property
    def shapes(self) -> tuple[tuple[int, int], ...]:
        """Every input shape the model reads: `shape`, then the further canvases."""
        return (self.shape, *(c for c in self.canvases if c != self.shape))

    def shape_for(self, width: int, height: int) -> tuple[int, int]:
        """The input shape a photo of this size goes into: the canvas nearest its aspect
        ratio (in log ratio, so 2:1 and 1:2 are as far from square), `shape` on a tie."""
        if not self.canvases:
            return self.shape
        aspect = math.log(max(1, height) / max(1, width))
        return min(self.shapes, key=lambda s: abs(math.log(s[0] / s[1]) - aspect))

    def fixed(self, shape: tuple[int, int]) -> Preprocess:
        """This pre-processing with one input shape, `shape`, and no further canvases."""
        if self.fit == "crop":  # one square input already
            return self
        return replace(self, height=int(shape[0]), width=int(shape[1]), canvases=())

    @property
    def resize_size(self) -> int:
        """A short side that is enough to decode a photo at (JPEG draft mode, caches)."""
        if self.fit == "crop":
            return int(round(self.size / self.crop_pct))
        return max(max(s) for s in self.shapes)

    @property
    def fill(self) -> tuple[int, int, int]:
        """The mean colour as 8-bit RGB: what letterboxing and rotation pad with."""
        return tuple(int(round(255 * m)) for m in self.mean)  # type: ignore[return-value]

    def to_dict(self) -> dict:
        out = asdict(self)
        if self.fit == "crop":  # format-1 artifacts had no fit: keep them byte-identical
            for key in ("fit", "height", "width"):
                out.pop(key)
        if self.canvases:
            out["canvases"] = [list(c) for c in self.canvases]
        else:  # models without them keep their model.json byte-identical
            out.pop("canvases")
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
            canvases=tuple(d.get("canvases") or ()),
        )


def grouped_by_shape(arrays: Sequence) -> list[list[int]]:
    """Indices of `arrays` (NumPy arrays or tensors) grouped by their shape, in order of
    first appearance: the stacks a batch of photos from several canvases runs as."""
    groups: dict[tuple, list[int]] = {}
    for k, array in enumerate(arrays):
        groups.setdefault(tuple(array.shape), []).append(k)
    return list(groups.values())


def canvas_shape(value) -> tuple[int, int]:
    """A canvas as (height, width) of positive ints; ValueError naming what is wrong."""
    try:
        height, width = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"canvas {value!r} is not [height, width]") from None
    if height < 8 or width < 8:
        raise ValueError(f"canvas {value!r}: height and width must be at least 8 pixels")
    return height, width


def letterbox(img: Image.Image, shape: tuple[int, int], fill: tuple[int, int, int],
              resample: Image.Resampling) -> Image.Image:
    """The whole photo, scaled to fit inside (height, width), centred on a `fill` pad."""
    height, width = shape
    scale = min(height / img.height, width / img.width)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    if size == (width, height) and img.size == size:
        return img
    resized = img.convert("RGB").resize(size, resample)
    canvas = Image.new("RGB", (width, height), fill)
    canvas.paste(resized, ((width - size[0]) // 2, (height - size[1]) // 2))
    return canvas


def resize_short(img: Image.Image, size: int, resample: Image.Resampling) -> Image.Image:
    """Short side to `size`, the long side scaled and truncated (torchvision's rule)."""
    width, height = img.size
    if width <= height:
        new = (size, int(size * height / width))
    else:
        new = (int(size * width / height), size)
    return img if new == img.size else img.resize(new, resample)


def center_crop(img: Image.Image, size: int) -> Image.Image:
    """The centred size x size square (torchvision's rounding; Pillow pads with black)."""
    width, height = img.size
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def fitted(img: Image.Image, pre: Preprocess, size: int | None = None) -> Image.Image:
    """The photo resized (and cropped or padded) to the model's input, still a PIL image."""
    resample = RESAMPLING[pre.interpolation]
    if pre.fit == "stretch":
        height, width = pre.shape_for(*img.size)
        return img if img.size == (width, height) else img.resize((width, height), resample)
    if pre.fit == "letterbox":
        return letterbox(img, pre.shape_for(*img.size), pre.fill, resample)
    size = size or pre.size
    short = int(round(size / pre.crop_pct))
    if min(img.size) <= short or short < size:  # upscaled, padded or nothing to resample
        return center_crop(resize_short(img, short, resample), size)
    return resized_crop(img, short, size, resample)


def resized_crop(img: Image.Image, short: int, size: int,
                 resample: Image.Resampling) -> Image.Image:
    """`center_crop(resize_short(img, short), size)` resampled from the photo in one go:
    only the kept square is computed (same scale and offsets, so the same pixels up to
    one 8-bit step of rounding)."""
    width, height = img.size
    new_w, new_h = ((short, int(short * height / width)) if width <= height
                    else (int(short * width / height), short))
    scale_x, scale_y = width / new_w, height / new_h
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    box = (left * scale_x, top * scale_y, (left + size) * scale_x, (top + size) * scale_y)
    return img.resize((size, size), resample, box=box)


def to_array(img: Image.Image, pre: Preprocess) -> np.ndarray:
    """An RGB image as the normalised 3 x H x W float32 array a model reads: one pass to
    planar float, then one multiply-add per value (0.40 instead of 0.95 ms at 224 px)."""
    pixels = np.asarray(img.convert("RGB") if img.mode != "RGB" else img)
    planes = np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32)
    std = np.asarray(pre.std, dtype=np.float32)
    mean = np.asarray(pre.mean, dtype=np.float32)
    planes *= (np.float32(1 / 255) / std)[:, None, None]
    planes -= (mean / std)[:, None, None]
    return planes


def eval_array(img: Image.Image, pre: Preprocess, size: int | None = None) -> np.ndarray:
    """One photo as the model's input (3 x H x W float32): what every inference path uses."""
    return to_array(fitted(img, pre, size), pre)


def tta_arrays(img: Image.Image, pre: Preprocess) -> np.ndarray:
    """Test-time views (V x 3 x H x W): the centre crop, its mirror and a wider full view
    (the whole-photo fits: the photo and its mirror)."""
    view = eval_array(img, pre)
    views = [view, view[:, :, ::-1]]
    if pre.fit == "crop":
        wide = img.resize((pre.size, pre.size), RESAMPLING[pre.interpolation])
        views.append(to_array(wide, pre))
    return np.ascontiguousarray(np.stack(views))

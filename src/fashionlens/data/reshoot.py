"""A second photo of the same garment, simulated: the "re-shot view" of an item.

A seller who photographs the same item twice changes the framing, the angle, the light
and often the surface it lies on. `reshoot` makes such a view from one photo: background
replacement (the region connected to the photo's border that has the border's colour is
repainted with another colour, gradient or texture), a perspective tilt, an in-plane
rotation, a crop, a lighting and white-balance change, blur or sharpening, and JPEG
re-compression. Every parameter is drawn from a numpy Generator, so a seed gives the same
view each time: evaluation pairs are reproducible, training views are fresh per epoch.

This drives two things: the pair-retrieval protocol (photo vs its re-shot view; can the
embedding find the pair?) and metric learning for sets with one photo per item.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter
from scipy import ndimage
from torchvision.transforms.v2 import functional as F


@dataclass(frozen=True)
class ReshootConfig:
    """How far a re-shot view may move from the original (the defaults are "strong")."""

    background: float = 0.7  # probability of repainting the background
    perspective: float = 0.25  # corner displacement, share of the side
    rotation: float = 25.0  # degrees either way
    crop_scale: tuple[float, float] = (0.55, 0.9)  # area kept
    brightness: float = 0.35
    contrast: float = 0.3
    saturation: float = 0.3
    warmth: float = 0.12  # white-balance shift, share of a channel
    jpeg_quality: tuple[int, int] = (55, 92)
    hflip: float = 0.5


STRONG = ReshootConfig()
# Views for metric learning: the same family, a little milder so that training pairs stay
# recognisable while the model learns what must not matter.
TRAINING = ReshootConfig(background=0.5, perspective=0.2, rotation=20.0,
                         crop_scale=(0.5, 0.95))

# A border-coloured region covering less than this share is no background, and one
# covering more has swallowed the garment too: then the photo is laid on a new surface.
MASK_SHARE = (0.08, 0.6)


def _background_mask(rgb: np.ndarray) -> np.ndarray:
    """Soft mask (1 = background) of the border-connected region of border-like colour."""
    edge = max(2, min(rgb.shape[:2]) // 40)
    border = np.concatenate([rgb[:edge].reshape(-1, 3), rgb[-edge:].reshape(-1, 3),
                             rgb[:, :edge].reshape(-1, 3), rgb[:, -edge:].reshape(-1, 3)])
    colour = np.median(border, axis=0)
    spread = np.linalg.norm(border - colour, axis=1)
    threshold = np.percentile(spread, 80) + 18.0
    near = np.linalg.norm(rgb - colour, axis=2) < threshold
    near = ndimage.binary_opening(near, iterations=2)
    labels, _ = ndimage.label(near)
    on_border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    mask = np.isin(labels, on_border[on_border > 0]).astype(np.float32)
    return ndimage.gaussian_filter(mask, sigma=1.5)[..., None]


def _new_background(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A plain colour, a gradient, or a noisy texture (a rug, a bedsheet, a floor)."""
    h, w = shape
    base = rng.uniform(20, 235, size=3)
    kind = rng.integers(3)
    if kind == 0:
        return np.broadcast_to(base, (h, w, 3)).astype(np.float32)
    if kind == 1:
        other = rng.uniform(20, 235, size=3)
        angle = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        t = (xx * math.cos(angle) + yy * math.sin(angle))
        t = (t - t.min()) / max(float(np.ptp(t)), 1.0)
        return base * (1 - t[..., None]) + other * t[..., None]
    scale = rng.uniform(2, 12)
    noise = rng.normal(size=(max(2, int(h / scale)), max(2, int(w / scale)), 3))
    noise = np.asarray(Image.fromarray(
        np.clip(128 + 40 * noise, 0, 255).astype(np.uint8)).resize((w, h), Image.BILINEAR),
        dtype=np.float32) - 128
    return np.clip(base + rng.uniform(0.3, 1.0) * noise, 0, 255)


def reshoot(img: Image.Image, rng: np.random.Generator,
            config: ReshootConfig = STRONG) -> Image.Image:
    """A simulated second photo of the garment in `img` (RGB), drawn with `rng`."""
    img = img.convert("RGB")
    w, h = img.size
    if rng.random() < config.background:
        rgb = np.asarray(img, dtype=np.float32)
        mask = _background_mask(rgb)
        backdrop = _new_background((h, w), rng)
        if MASK_SHARE[0] <= float(mask.mean()) <= MASK_SHARE[1]:
            rgb = rgb * (1 - mask) + backdrop * mask
        else:  # no clear background: lay the whole photo, smaller, on a new surface
            scale = rng.uniform(0.7, 0.9)
            small = img.resize((max(1, int(w * scale)), max(1, int(h * scale))),
                               Image.BILINEAR)
            canvas = Image.fromarray(backdrop.astype(np.uint8))
            canvas.paste(small, (int(rng.integers(0, w - small.width + 1)),
                                 int(rng.integers(0, h - small.height + 1))))
            rgb = np.asarray(canvas, dtype=np.float32)
        img = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    fill = [int(v) for v in np.asarray(img, dtype=np.float32)[[0, -1]][:, [0, -1]]
            .reshape(-1, 3).mean(0)]
    if config.perspective > 0:
        d = config.perspective
        start = [[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]]
        end = [[int(x + sx * rng.uniform(0, d) * w), int(y + sy * rng.uniform(0, d) * h)]
               for (x, y), (sx, sy) in zip(start, [(1, 1), (-1, 1), (-1, -1), (1, -1)],
                                           strict=True)]
        img = F.perspective(img, start, end, interpolation=F.InterpolationMode.BILINEAR,
                            fill=fill)
    if config.rotation > 0:
        img = F.rotate(img, float(rng.uniform(-config.rotation, config.rotation)),
                       interpolation=F.InterpolationMode.BILINEAR, fill=fill)
    area = rng.uniform(*config.crop_scale)
    aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    cw = min(w, int(round(math.sqrt(area * w * h * aspect))))
    ch = min(h, int(round(math.sqrt(area * w * h / aspect))))
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    img = img.crop((left, top, left + cw, top + ch))
    if rng.random() < config.hflip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    for enhancer, amount in ((ImageEnhance.Brightness, config.brightness),
                             (ImageEnhance.Contrast, config.contrast),
                             (ImageEnhance.Color, config.saturation)):
        img = enhancer(img).enhance(float(rng.uniform(1 - amount, 1 + amount)))
    if config.warmth > 0:
        shift = rng.uniform(-config.warmth, config.warmth)
        gains = np.array([1 + shift, 1.0, 1 - shift], dtype=np.float32)
        img = Image.fromarray(np.clip(np.asarray(img, dtype=np.float32) * gains, 0, 255)
                              .astype(np.uint8))
    blur = rng.random()
    if blur < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.4, 1.4))))
    elif blur < 0.5:
        img = img.filter(ImageFilter.SHARPEN)
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=int(rng.integers(*config.jpeg_quality)))
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")

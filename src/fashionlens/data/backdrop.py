"""Studio shots laid on other surfaces: the garment cut out of its plain white background
and placed on a wall, a floor, a bedsheet (issue 19, item 2).

A catalogue photo teaches the model that a garment sits on white; a buyer's photo has it
on whatever was behind it. Replacing the white teaches the model to ignore what lies
around the garment. The step is colour-safe: a pixel of the garment is never changed
(the colour task learns from exactly those pixels); only pixels of the white background,
and the light fringe where the garment's edge blends into it, are repainted. Photos with
no plain light background (home and street photos) are returned as they are.

NumPy and Pillow only, no torch: randomness comes from a numpy Generator the caller
seeds (`transforms.Backdrop` seeds it from torch, so DataLoader workers and resumed runs
draw what torchvision's steps draw).
"""

from __future__ import annotations

import colorsys
import math

import numpy as np
from PIL import Image

# The white of a studio background: every channel at least LIGHT, channels within CHROMA
# of each other (a pale pink garment does not pass). The fill from the border runs through
# these pixels only: a white T-shirt (230-245 in the products photos) keeps its body.
LIGHT = 246
CHROMA = 20
# Light enough to be the background's shaded edge or JPEG noise (`SOFT_LIGHT`): joined to
# the background only within SOFT_STEPS pixels of it, so it cannot run into a garment.
SOFT_LIGHT = 228
SOFT_STEPS = 2
# The photo has a plain light background when most of its border is near-white...
BORDER_SHARE = 0.85
# ...and the white region reached from the border leaves a garment of sensible size
# (less: the garment is white and the fill ran into it; more: the garment is a speck).
BACKGROUND_SHARE = (0.1, 0.92)
# Shaded "background" (see plain_background) above this share of the garment's area: the
# fill probably ran into a white garment; the photo is left alone. On every 10th products
# photo, 0.12 left 278 of the 2811 with a white background (9.9%): white skirts, shorts,
# shirts and sneakers the fill had eaten, necklaces, shoes on a reflecting floor, and a
# few it need not have (a small shirt with a soft shadow), which merely stay on white.
SHADED_SHARE = 0.12
# Fringe: background pixels within this many pixels of the garment keep part of their
# own colour, in proportion to how far from white they are (the garment's soft edge).
FRINGE = 2
# Distance from the white (0..441) at which a fringe pixel counts as wholly garment.
FRINGE_FULL = 40.0


def _row_runs(light: np.ndarray) -> tuple[np.ndarray, int]:
    """Each pixel's horizontal run of light pixels, numbered from 1 (0: not light), and
    how many numbers there are."""
    starts = light.copy()
    starts[:, 1:] &= ~light[:, :-1]
    runs = np.cumsum(starts.ravel(), dtype=np.int32).reshape(light.shape)
    runs *= light
    return runs, int(runs.max()) + 1


def border_connected(light: np.ndarray) -> np.ndarray:
    """The light pixels connected (4-way) to the photo's border: a flood fill done a whole
    row or column run at a time, so a handful of NumPy passes instead of a pixel loop."""
    reach = np.zeros_like(light)
    for edge in (np.s_[0, :], np.s_[-1, :], np.s_[:, 0], np.s_[:, -1]):
        reach[edge] = light[edge]
    # The runs do not change while the fill grows: numbered once, each direction.
    rows = _row_runs(light)
    cols_t, n_cols = _row_runs(np.ascontiguousarray(light.T))
    cols = (cols_t.T, n_cols)
    # Rows and columns in turn; once a pass adds nothing, the pass before it (the other
    # direction) left nothing to add either: the fill is complete.
    count, along_rows = int(reach.sum()), True
    while True:
        runs, n = rows if along_rows else cols
        hit = np.zeros(n, dtype=bool)
        hit[runs[reach]] = True
        hit[0] = False
        reach = hit[runs]
        now, along_rows = int(reach.sum()), not along_rows
        if now == count:
            return reach
        count = now


def _lightness(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(darkest channel, channel spread) of each pixel, channel by channel: a reduction
    over the last axis of uint8 is several times slower."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    low = np.minimum(np.minimum(r, g), b)
    return low, np.maximum(np.maximum(r, g), b) - low


def _near_white(rgb: np.ndarray, light: int) -> np.ndarray:
    low, spread = _lightness(rgb)
    return (low >= light) & (spread <= CHROMA)


def plain_background(rgb: np.ndarray) -> np.ndarray | None:
    """The background mask (True = white background) of a studio shot, or None when the
    photo has no plain light background to replace."""
    edge = np.concatenate([rgb[0], rgb[-1], rgb[1:-1, 0], rgb[1:-1, -1]])
    edge_low, edge_spread = _lightness(edge)
    if ((edge_low >= SOFT_LIGHT) & (edge_spread <= CHROMA)).mean() < BORDER_SHARE:
        return None  # checked first: home and street photos stop here, at little cost
    low, spread = _lightness(rgb)
    plain = spread <= CHROMA
    background = border_connected((low >= LIGHT) & plain)
    soft = (low >= SOFT_LIGHT) & plain
    for _ in range(SOFT_STEPS):
        background |= _grow(background, 1) & soft
    if not BACKGROUND_SHARE[0] <= background.mean() <= BACKGROUND_SHARE[1]:
        return None
    garment = ~background
    # A fill that ran into a white garment (through a gap in its outline) took its shading
    # with it: "background" pixels away from the garment's edge that are darker than the
    # border's white by more than its noise. Shadows, reflections under shoes and the
    # light beads of a necklace look the same; all are better left on their white.
    white = float(np.median(edge_low))
    noise = 1.5 * float(np.median(np.abs(edge_low.astype(np.float32) - white))) + 1.0
    shaded = background & ~_grow(garment, FRINGE) & (low < white - 3 * noise - 2)
    if shaded.sum() > SHADED_SHARE * garment.sum():
        return None
    return background


def _grow(mask: np.ndarray, steps: int) -> np.ndarray:
    """The mask grown by `steps` pixels (4-way), by shifted ORs."""
    out = mask.copy()
    for _ in range(steps):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        out = grown
    return out


def _white(rgb: np.ndarray, background: np.ndarray) -> np.ndarray:
    """The background's white, from the border (all of it background but for the garment's
    edges): reading every background pixel cost more than the rest of the fringe work."""
    edge = np.concatenate([rgb[0], rgb[-1], rgb[1:-1, 0], rgb[1:-1, -1]])
    inside = np.concatenate([background[0], background[-1], background[1:-1, 0],
                             background[1:-1, -1]])
    return edge[inside].mean(axis=0).astype(np.float32)


def garment_alpha(rgb: np.ndarray, background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The garment as a layer: opacity (0..1, float32; 1 on every garment pixel, 0 on the
    white background, between on the fringe, by how far the pixel is from white) and its
    colours. A fringe pixel is part garment, part white: its white share is taken out
    (colour = (pixel - (1 - alpha) * white) / alpha), so no pale halo follows the garment
    onto a dark surface. Garment pixels are returned as they are."""
    alpha = (~background).astype(np.float32)
    fringe = background & _grow(~background, FRINGE)
    if not fringe.any():
        return alpha, rgb
    white = _white(rgb, background)
    pixels = rgb[fringe].astype(np.float32)
    share = np.clip(np.linalg.norm(pixels - white, axis=1) / FRINGE_FULL, 0.0, 1.0)
    alpha[fringe] = share
    colours = rgb.copy()
    unmixed = (pixels - (1.0 - share[:, None]) * white) / np.maximum(share[:, None], 0.05)
    colours[fringe] = np.clip(np.round(unmixed), 0, 255).astype(np.uint8)
    return alpha, colours


def _muted(rng: np.random.Generator, avoid: np.ndarray | None) -> np.ndarray:
    """A colour of walls, floors and bedding (low saturation, not white), away from the
    garment's own colour when `avoid` is given."""
    colour = np.zeros(3)
    for _ in range(6):
        hue = rng.random()
        saturation = rng.uniform(0.0, 0.3) if rng.random() < 0.85 else rng.uniform(0.3, 0.6)
        value = rng.uniform(0.2, 0.85)
        colour = 255.0 * np.array(colorsys.hsv_to_rgb(hue, saturation, value))
        if avoid is None or np.linalg.norm(colour - avoid) >= 60.0:
            break
    return colour


def make_backdrop(shape: tuple[int, int], rng: np.random.Generator,
                  avoid: np.ndarray | None = None) -> np.ndarray:
    """A surface (uint8 HxWx3): a plain colour, a soft gradient, a blotchy texture (a rug,
    a crumpled sheet) or stripes (floorboards, a striped sheet), with a little grain.

    The smooth part is drawn at a third of the size and enlarged by Pillow (it has no
    detail to lose), the grain at full size in 16-bit integers: float work on every pixel
    was most of the step's time at 256 x 192."""
    h, w = shape
    sh, sw = max(8, -(-h // 3)), max(8, -(-w // 3))
    base = _muted(rng, avoid).astype(np.float32)
    kind = rng.integers(4)
    if kind == 0:
        surface = np.broadcast_to(base, (sh, sw, 3))
    elif kind == 1 or kind == 3:
        other = (np.clip(base + rng.normal(0.0, 35.0, 3), 0, 255) if kind == 1
                 else _muted(rng, avoid)).astype(np.float32)
        angle = rng.uniform(0.0, 2 * math.pi)
        ys = np.linspace(0.0, 1.0, sh, dtype=np.float32)[:, None]
        xs = np.linspace(0.0, 1.0, sw, dtype=np.float32)[None, :]
        t = xs * math.cos(angle) + ys * math.sin(angle)
        if kind == 3:  # stripes: a few soft bands across the photo
            t = 0.5 + 0.5 * np.sin(t * rng.uniform(6.0, 25.0) + rng.uniform(0, 2 * math.pi))
            t = t * rng.uniform(0.2, 0.6)
        else:
            t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        surface = base * (1 - t[..., None]) + other * t[..., None]
    else:
        cells = rng.uniform(1.0, 3.5)  # blotch size, in pixels of the small surface
        small = rng.normal(0.0, 1.0, (max(2, int(sh / cells)), max(2, int(sw / cells))))
        blotches = np.asarray(Image.fromarray(
            np.clip(128 + 40 * small, 0, 255).astype(np.uint8)).resize(
            (sw, sh), Image.Resampling.BILINEAR), dtype=np.float32) - 128.0
        surface = base + rng.uniform(0.3, 0.9) * blotches[..., None]
    smooth = Image.fromarray(np.clip(surface, 0, 255).astype(np.uint8)).resize(
        (w, h), Image.Resampling.BILINEAR)
    spread = int(rng.integers(2, 11))
    grain = rng.integers(-spread, spread + 1, (h, w, 1), dtype=np.int16)
    return np.clip(np.asarray(smooth, dtype=np.int16) + grain, 0, 255).astype(np.uint8)


def replace_backdrop(img: Image.Image, rng: np.random.Generator,
                     shrink: tuple[float, float] = (1.0, 1.0)) -> Image.Image:
    """`img` with its white studio background replaced by a random surface, the garment
    shrunk by a factor drawn from `shrink` and placed anywhere on it (1.0: left where it
    is, every garment pixel unchanged). A photo without such a background is returned
    unchanged (the same object)."""
    if img.mode != "RGB":
        return img
    rgb = np.asarray(img)
    background = plain_background(rgb)
    if background is None:
        return img
    alpha, rgb = garment_alpha(rgb, background)
    every = max(1, min(background.shape) // 64)  # a sample does for the mean colour
    avoid = rgb[::every, ::every][~background[::every, ::every]].mean(axis=0)
    h, w = background.shape
    canvas = Image.fromarray(make_backdrop((h, w), rng, avoid))
    garment = Image.fromarray(rgb).convert("RGBA")
    garment.putalpha(Image.fromarray(np.round(alpha * 255).astype(np.uint8)))
    scale = float(rng.uniform(*shrink))
    left = top = 0
    if scale < 0.98:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        garment = garment.resize(size, Image.Resampling.BILINEAR)
        left = int(rng.integers(0, w - size[0] + 1))
        top = int(rng.integers(0, h - size[1] + 1))
    canvas.paste(garment, (left, top), garment)
    return canvas

"""Studio backdrops replaced (issue 19, item 2): garment pixels never change, photos with
no plain light background pass through, and the config refuses a bad probability."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from fashionlens.config import FieldError, load_config
from fashionlens.data.augment import AugmentConfig
from fashionlens.data.backdrop import border_connected, plain_background, replace_backdrop
from fashionlens.data.preprocess import Preprocess
from fashionlens.data.transforms import Backdrop, train_transform

pytestmark = pytest.mark.timeout(60)

RECT = np.s_[20:62, 15:45]
COLOUR = (180, 40, 60)


def _studio(width: int = 60, height: int = 80) -> Image.Image:
    """A product shot: a red garment on a white (slightly noisy, like a JPEG) background."""
    rng = np.random.default_rng(1)
    rgb = np.clip(255 - rng.integers(0, 4, (height, width, 3)), 0, 255).astype(np.uint8)
    rgb[RECT] = COLOUR
    return Image.fromarray(rgb)


def _busy(width: int = 60, height: int = 80) -> Image.Image:
    """A home photo: a cluttered background running to every edge."""
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    rgb[RECT] = COLOUR
    return Image.fromarray(rgb)


@pytest.mark.parametrize("seed", range(8))
def test_garment_pixels_kept_and_background_replaced(seed: int) -> None:
    photo = _studio()
    out = np.asarray(replace_backdrop(photo, np.random.default_rng(seed)))
    assert out.shape == np.asarray(photo).shape
    assert (out[RECT] == COLOUR).all()
    background = np.ones(out.shape[:2], dtype=bool)
    background[20 - 3:62 + 3, 15 - 3:45 + 3] = False  # the fringe may keep some white
    white = (out[background].min(axis=1) >= 228)
    assert white.mean() < 0.2, f"{white.mean():.0%} of the background is still white"


def test_the_step_keeps_the_garment_through_torch_seeding() -> None:
    torch.manual_seed(0)
    step = Backdrop(1.0)
    photo = _studio()
    outs = [np.asarray(step(photo)) for _ in range(4)]
    for out in outs:
        assert (out[RECT] == COLOUR).all()
    corners = {tuple(out[0, 0]) for out in outs}
    assert len(corners) > 1, "each call should draw a new surface"


def test_shrunk_garment_keeps_its_colour() -> None:
    out = np.asarray(replace_backdrop(_studio(120, 160), np.random.default_rng(3),
                                      shrink=(0.5, 0.6)))
    assert out.shape == (160, 120, 3)
    exact = (out == COLOUR).all(axis=2)
    # the garment was 84 x 60 pixels; at half to 0.6 its size its inside is still exact
    assert 400 <= exact.sum() <= 0.6 ** 2 * 84 * 60 * 1.1


def test_busy_background_passes_through() -> None:
    photo = _busy()
    assert plain_background(np.asarray(photo)) is None
    assert replace_backdrop(photo, np.random.default_rng(0)) is photo
    torch.manual_seed(0)
    assert np.array_equal(np.asarray(Backdrop(1.0)(photo)), np.asarray(photo))


def test_white_garment_swallowed_by_the_fill_passes_through() -> None:
    """A white garment with no outline merges with the white: the garment left would be
    a speck, so the photo is left alone rather than the garment repainted."""
    rgb = np.full((80, 60, 3), 252, dtype=np.uint8)
    rgb[40:42, 28:32] = 30
    photo = Image.fromarray(rgb)
    assert replace_backdrop(photo, np.random.default_rng(0)) is photo


def test_other_modes_pass_through() -> None:
    photo = _studio().convert("L")
    assert replace_backdrop(photo, np.random.default_rng(0)) is photo


@pytest.mark.parametrize("fit", ["crop", "letterbox"])
def test_train_transform_runs_it_first_and_pickles(fit: str) -> None:
    pre = Preprocess(size=32, fit=fit, height=40, width=30)
    transform = train_transform(pre, AugmentConfig(backdrop=0.5))
    assert isinstance(transform.transforms[0], Backdrop)
    again = pickle.loads(pickle.dumps(transform))
    assert again(_studio()).shape[0] == 3
    assert not any(isinstance(s, Backdrop)
                   for s in train_transform(pre, AugmentConfig()).transforms)


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_config_refuses_a_probability_outside_0_1(value: float) -> None:
    assert [name for name, _ in AugmentConfig(backdrop=value).problems()] == ["backdrop"]
    with pytest.raises(FieldError, match="augment.backdrop"):
        load_config(values={"augment": {"backdrop": value}})


@pytest.mark.parametrize("shrink", [(0.0, 1.0), (0.8, 0.6), (0.5, 1.2)])
def test_config_refuses_a_bad_shrink(shrink: tuple[float, float]) -> None:
    assert [name for name, _ in AugmentConfig(backdrop_shrink=shrink).problems()] == \
        ["backdrop_shrink"]


def test_the_fill_follows_winding_paths() -> None:
    """White reached only through a spiral of corridors is background; white walled in
    by the garment (a print, a buttonhole) is not."""
    light = np.zeros((9, 9), dtype=bool)
    light[0, :] = True          # the border's top row
    light[0:8, 8] = True        # down the right side
    light[7, 1:9] = True        # along the bottom, inside
    light[2:8, 1] = True        # up the left
    light[2, 1:7] = True        # along, inside
    light[4, 4] = True          # walled in
    reach = border_connected(light)
    assert reach[2, 6] and reach[7, 1]
    assert not reach[4, 4]


def test_the_same_torch_seed_draws_the_same_surface() -> None:
    """Resumed runs replay the seeds: the step must draw only from torch's generator."""
    outs = []
    for _ in range(2):
        torch.manual_seed(5)
        outs.append(np.asarray(Backdrop(1.0, (0.6, 1.0))(_studio())))
    assert np.array_equal(*outs)


def test_a_white_garment_the_fill_ran_into_passes_through() -> None:
    """A white garment, shaded, whose dark outline has a gap: the fill from the border
    runs inside and would repaint it; its shading gives it away."""
    rgb = np.full((80, 60, 3), 255, dtype=np.uint8)
    rgb[15:65, 12:48] = 40                                   # the outline...
    shade = np.linspace(253, 240, 48).astype(np.uint8)[:, None, None]
    rgb[16:64, 13:47] = np.broadcast_to(shade, (48, 34, 1))  # ...round a shaded white
    rgb[15, 25:35] = 255                                     # ...with a gap at the top
    photo = Image.fromarray(rgb)
    assert replace_backdrop(photo, np.random.default_rng(0)) is photo


@pytest.mark.parametrize("density", [0.45, 0.6, 0.75])
def test_the_fill_matches_a_labelling_flood_fill(density: float) -> None:
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(int(density * 100))
    for _ in range(5):
        light = rng.random((37, 29)) < density
        labels, _ = ndimage.label(light)  # 4-connected
        edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
        expected = np.isin(labels, edge[edge > 0])
        assert np.array_equal(border_connected(light), expected)

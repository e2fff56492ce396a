"""The torch-free eval pipeline gives the pixels torchvision's composition gives, up to
one 8-bit step where the crop is resampled straight from the photo."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2 as T

from fashionlens.data.images import load_image
from fashionlens.data.preprocess import Preprocess, eval_array, tta_arrays
from fashionlens.data.transforms import eval_transform, tta_views
from fashionlens.inference import SAMPLE_PHOTOS

MODES = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR}


def _photo(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _garment(width: int, height: int) -> Image.Image:
    """A real photo at that size (random noise would exaggerate rounding differences)."""
    return load_image(SAMPLE_PHOTOS / "Dress" / "dress-1.jpg").resize((width, height))


def _finish(pre: Preprocess) -> list:
    return [T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(pre.mean, pre.std)]


def _torchvision(pre: Preprocess) -> T.Compose:
    """The eval pipeline as torchvision composes it (what training validated with)."""
    interp = MODES[pre.interpolation]
    if pre.fit == "stretch":
        return T.Compose([T.Resize(pre.shape, interpolation=interp, antialias=True),
                          *_finish(pre)])
    return T.Compose([T.Resize(int(round(pre.size / pre.crop_pct)), interpolation=interp),
                      T.CenterCrop(pre.size), *_finish(pre)])


@pytest.mark.parametrize("size", [(640, 480), (333, 517), (224, 224), (97, 300)])
@pytest.mark.parametrize("pre", [
    Preprocess(size=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    Preprocess(size=96, interpolation="bilinear", crop_pct=0.9),
    Preprocess(size=96, fit="stretch", height=128, width=96),
])
def test_eval_array_matches_torchvision(pre: Preprocess, size: tuple[int, int]) -> None:
    img = _garment(*size)
    expected = _torchvision(pre)(img).numpy()
    got = eval_array(img, pre)
    assert got.dtype == np.float32 and got.shape == expected.shape
    steps = np.abs(got - expected) / (1 / 255 / np.asarray(pre.std, np.float32))[:, None, None]
    # resampled straight into the crop, Pillow may run its two passes in the other order
    # and round the in-between image otherwise: a step on a few values, rarely more
    assert (steps > 1e-3).mean() <= 0.1 and steps.mean() <= 0.1 and steps.max() <= 8
    # the tensor wrapper torch callers use is the same array
    np.testing.assert_array_equal(eval_transform(pre)(img).numpy(), got)


def test_letterbox_pads_with_the_mean_colour() -> None:
    pre = Preprocess(size=64, fit="letterbox", height=64, width=32, mean=(0.5, 0.5, 0.5))
    img = Image.new("RGB", (100, 50), (255, 0, 0))  # wide: bands above and below
    arr = eval_array(img, pre)
    assert arr.shape == (3, 64, 32)
    assert np.allclose(arr[:, 0, :], (128 / 255 - 0.5) / 0.5, atol=1e-6)  # pad
    assert np.allclose(arr[0, 32, :], 1.0, atol=1e-6)  # red centre row


def test_tta_views_are_the_centre_its_mirror_and_the_wide_view() -> None:
    pre = Preprocess(size=64)
    img = _photo(120, 80, seed=3)
    views = tta_arrays(img, pre)
    assert views.shape == (3, 3, 64, 64)
    np.testing.assert_array_equal(views[1], views[0][:, :, ::-1])
    wide = T.Compose([T.Resize((64, 64), interpolation=T.InterpolationMode.BICUBIC),
                      *_finish(pre)])(img).numpy()
    np.testing.assert_allclose(views[2], wide, atol=1e-5)
    assert len(tta_views(img, pre)) == 3
    whole = Preprocess(size=64, fit="stretch", height=64, width=48)
    assert tta_arrays(img, whole).shape == (2, 3, 64, 48)


def test_grey_and_rgba_photos_become_rgb() -> None:
    pre = Preprocess(size=32)
    assert eval_array(Image.new("L", (40, 40), 7), pre).shape == (3, 32, 32)
    assert eval_array(Image.new("RGBA", (40, 40)), pre).shape == (3, 32, 32)

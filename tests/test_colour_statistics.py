"""The photo's colour statistics (`models.colour`) and the heads that read them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fashionlens.data.preprocess import Preprocess, eval_array
from fashionlens.errors import ConfigError
from fashionlens.inference.runtime import COLOURS, TorchRuntime
from fashionlens.models import load_model
from fashionlens.models.colour import COLOUR_FEATURES, LEVELS, colour_statistics
from fashionlens.models.heads import stage_term
from fashionlens.training import refit

from .helpers import tiny_run_config

pytestmark = pytest.mark.timeout(300)
EVEN = slice(LEVELS ** 3, 2 * LEVELS ** 3)
CENTRE = slice(0, LEVELS ** 3)


def _bin(red: int, green: int, blue: int) -> int:
    return red * LEVELS ** 2 + green * LEVELS + blue


def _normalised(rgb: np.ndarray, pre: Preprocess) -> torch.Tensor:
    """8-bit RGB images (N x H x W x 3) as the model's input."""
    mean, std = np.asarray(pre.mean), np.asarray(pre.std)
    return torch.as_tensor(((rgb / 255.0 - mean) / std).transpose(0, 3, 1, 2),
                           dtype=torch.float32)


def test_a_plain_colour_fills_its_own_bin_and_padding_counts_for_nothing():
    from PIL import Image

    pre = Preprocess(height=64, width=48, fit="letterbox")
    red = np.zeros((1, 64, 48, 3))
    red[..., 0] = 255
    stats = colour_statistics(_normalised(red, pre), pre.mean, pre.std)
    assert stats.shape == (1, COLOUR_FEATURES)
    for part in (CENTRE, EVEN):
        histogram = stats[0, part] ** 2  # the features are square roots of shares
        assert histogram.sum() == pytest.approx(1.0, abs=1e-5)
        assert histogram[_bin(LEVELS - 1, 0, 0)] == pytest.approx(1.0, abs=1e-5)
    # a wide blue photo letterboxed into a tall input: the mean-colour pad is not counted
    wide = Image.new("RGB", (200, 50), (0, 0, 255))
    padded = torch.as_tensor(eval_array(wide, pre))[None]
    histogram = colour_statistics(padded, pre.mean, pre.std)[0, EVEN] ** 2
    assert histogram[_bin(0, 0, LEVELS - 1)] > 0.95


def test_the_centre_weighting_favours_the_garment_in_the_middle():
    pre = Preprocess(size=64)
    photo = np.full((1, 64, 64, 3), 255.0)  # a white backdrop ...
    photo[:, 20:44, 20:44] = (0, 0, 0)  # ... and a black garment in the middle
    stats = colour_statistics(_normalised(photo, pre), pre.mean, pre.std)[0]
    black, white = _bin(0, 0, 0), _bin(LEVELS - 1, LEVELS - 1, LEVELS - 1)
    centre, even = stats[CENTRE] ** 2, stats[EVEN] ** 2
    assert even[black] == pytest.approx(24 * 24 / 64 ** 2, abs=0.02)
    assert centre[black] > 2 * even[black] and centre[white] < even[white]
    # a colour between grid levels is shared between the two neighbours
    grey = np.full((1, 64, 64, 3), 255.0 * 0.375)  # 1.5 grid steps
    shares = colour_statistics(_normalised(grey, pre), pre.mean, pre.std)[0, EVEN] ** 2
    assert shares[_bin(1, 1, 1)] == pytest.approx(0.125, abs=0.03)
    assert shares[_bin(2, 2, 2)] == pytest.approx(0.125, abs=0.03)


def test_a_refit_head_reads_colour_statistics_and_the_cache_keeps_them(
        tmp_path, spoiled_model, tiny_folder, monkeypatch):
    out = tmp_path / "refit"
    result = refit.refit_heads(spoiled_model, tiny_run_config(tiny_folder), ["label"], out,
                               epochs=30, colour_heads=["label"])
    assert result.heads[0].kept
    model, info = load_model(out / "model")
    head = info.heads[0]
    assert head.taps and head.colour_statistics
    taps = sum(json.loads((out / "model" / "model.json").read_text())
               ["embedding"]["tap_channels"])
    assert stage_term(model, "label").in_features == taps + COLOUR_FEATURES
    assert json.loads((out / "refit.json").read_text())["colour_statistics"] == ["label"]
    assert (out / "features" / "train-colours.npz").is_file()

    # the runtime feeds the term the histograms of the same batch
    runtime = TorchRuntime(model, info.preprocess, info=info, precision="fp32")
    batch = torch.rand(2, 3, *info.preprocess.shape, generator=torch.Generator().manual_seed(2))
    got = runtime.run(batch * 2 - 1, ("label", COLOURS))
    np.testing.assert_allclose(got[COLOURS], colour_statistics(
        batch * 2 - 1, info.preprocess.mean, info.preprocess.std).numpy(), atol=1e-6)
    spec = info.heads[0]
    spec.colour_statistics = False  # the same weights without the histograms differ
    with pytest.raises(RuntimeError):  # the term is wider than the taps alone
        runtime.run(batch * 2 - 1, ("label",))

    # a second refit reads both caches back: no pass over the photos at all
    def no_pass(*args, **kwargs):
        raise AssertionError("photos read again")

    monkeypatch.setattr(refit, "run_dataset", no_pass)
    again = refit.refit_heads(spoiled_model, tiny_run_config(tiny_folder), ["label"], out,
                              epochs=30, colour_heads=["label"])
    assert again.heads[0].after == pytest.approx(result.heads[0].after)


def test_colour_statistics_only_for_a_head_that_is_refit(tmp_path, spoiled_model,
                                                          tiny_folder):
    with pytest.raises(ConfigError, match="--colour-statistics colour: not among the heads"):
        refit.refit_heads(spoiled_model, tiny_run_config(tiny_folder), ["label"], tmp_path / "a",
                          colour_heads=["colour"])


def test_the_command_takes_colour_statistics_and_the_card_says_so(
        tmp_path, spoiled_model, tiny_folder):
    from typer.testing import CliRunner

    from fashionlens.cli.main import app
    from fashionlens.models.card import card_text

    config = tmp_path / "run.yaml"
    tiny_run_config(tiny_folder).save(config)
    done = CliRunner().invoke(app, ["refit-heads", str(spoiled_model), str(config),
                                    "--heads", "label", "--colour-statistics", "label",
                                    "--epochs", "30", "--out", str(tmp_path / "out")])
    assert done.exit_code == 0, done.output
    _, info = load_model(tmp_path / "out" / "model")
    assert info.heads[0].colour_statistics
    assert "`label` also read the photo's colour statistics" in card_text(info)

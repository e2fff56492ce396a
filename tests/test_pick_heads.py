"""tools/pick_heads.py: per-head selection between two runs that share one backbone."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import torch

from fashionlens.data.transforms import Preprocess
from fashionlens.models import ModelInfo, create_model, load_model, save_model
from fashionlens.models.embedding import (
    EmbeddingSpec,
    attach_embedding_head,
    pooled_features,
    stage_taps,
)
from fashionlens.models.heads import add_stage_term, attach_heads, head_module, stage_term
from fashionlens.models.info import HeadSpec

from .helpers import load_tool

HEADS = [HeadSpec("a", "classification", ["x", "y", "z"]),
         HeadSpec("b", "classification", ["p", "q"])]


@pytest.fixture(scope="module")
def tool():
    return load_tool("pick_heads")


def _run(folder: Path, model: torch.nn.Module, accuracy: float) -> Path:
    info = ModelInfo(architecture="test_efficientnet", classes=[], preprocess=Preprocess(
        size=64), heads=copy.deepcopy(HEADS), name=folder.name)
    save_model(model, info, folder / "model")
    (folder / "validation.txt").write_text("/photos/1.jpg\n")
    figures = {"a": {"accuracy": accuracy}, "b": {"accuracy": accuracy}}
    (folder / "metrics.json").write_text(json.dumps(
        {"metrics": {"tasks": figures, "summary": {**figures, "score": accuracy}}}))
    return folder


@pytest.fixture
def runs(tmp_path):
    torch.manual_seed(0)
    first = create_model("test_efficientnet", num_classes=3, pretrained="none")
    attach_heads(first, HEADS)
    second = copy.deepcopy(first)
    with torch.no_grad():
        for name in ("a", "b"):
            head_module(second, HEADS, name).weight.add_(1.0)
    return first, _run(tmp_path / "one", first, 0.5), _run(tmp_path / "two", second, 0.7)


def _main(tool, monkeypatch, *argv) -> None:
    monkeypatch.setattr(sys, "argv", ["pick_heads.py", *map(str, argv)])
    tool.main()


def test_the_named_head_comes_from_the_second_run_and_the_rest_stays(tool, runs, tmp_path,
                                                                       monkeypatch):
    first, one, two = runs
    _main(tool, monkeypatch, one, two, "--heads", "b", "--out", tmp_path / "picked")
    model, info = load_model(tmp_path / "picked" / "model")
    assert torch.equal(head_module(model, info.heads, "a").weight,
                       head_module(first, HEADS, "a").weight)
    assert torch.equal(head_module(model, info.heads, "b").weight,
                       head_module(first, HEADS, "b").weight + 1.0)
    summary = json.loads((tmp_path / "picked" / "metrics.json").read_text())
    assert summary["metrics"]["tasks"]["a"]["accuracy"] == 0.5
    assert summary["metrics"]["tasks"]["b"]["accuracy"] == 0.7
    assert "score" not in summary["metrics"]["summary"]  # a mean of mixed heads: dropped
    assert summary["picked"]["heads_from_second"] == ["b"]


def test_runs_with_other_backbones_or_validation_photos_are_refused(tool, runs, tmp_path,
                                                                    monkeypatch, capsys):
    first, one, two = runs
    other = copy.deepcopy(first)
    with torch.no_grad():
        other.conv_stem.weight.add_(0.01)
    three = _run(tmp_path / "three", other, 0.9)
    with pytest.raises(SystemExit):
        _main(tool, monkeypatch, one, three, "--heads", "b", "--out", tmp_path / "x")
    assert "the backbones differ" in capsys.readouterr().err
    (two / "validation.txt").write_text("/photos/2.jpg\n")
    with pytest.raises(SystemExit):
        _main(tool, monkeypatch, one, two, "--heads", "b", "--out", tmp_path / "y")
    assert "different photos" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_a_picked_head_brings_its_stage_term(tool, tmp_path, monkeypatch):
    """A head refit to read the tapped stages (`refit-heads`) travels with its term."""
    torch.manual_seed(0)
    first = create_model("test_efficientnet", num_classes=3, pretrained="none").eval()
    attach_heads(first, HEADS)
    taps, channels = stage_taps(first, 2)
    pooled = int(pooled_features(first, torch.zeros(1, 3, 64, 64)).shape[1])
    spec = EmbeddingSpec(dim=8, in_features=pooled + sum(channels), taps=taps,
                         tap_channels=channels)
    attach_embedding_head(first, spec)
    second = copy.deepcopy(first)
    term = add_stage_term(second, "b", sum(channels), 2)
    with torch.no_grad():
        term.weight.fill_(0.5)
    for folder, model, tapping in (("one", first, False), ("two", second, True)):
        heads = copy.deepcopy(HEADS)
        heads[1].taps = tapping
        info = ModelInfo(architecture="test_efficientnet", classes=[],
                         preprocess=Preprocess(size=64), heads=heads,
                         embedding=spec.to_dict(), name=folder)
        save_model(model, info, tmp_path / folder / "model")
        (tmp_path / folder / "validation.txt").write_text("/photos/1.jpg\n")
        figures = {"a": {"accuracy": 0.5}, "b": {"accuracy": 0.5}}
        (tmp_path / folder / "metrics.json").write_text(json.dumps(
            {"metrics": {"tasks": figures, "summary": dict(figures)}}))
    _main(tool, monkeypatch, tmp_path / "one", tmp_path / "two", "--heads", "b", "--out",
          tmp_path / "picked")
    model, info = load_model(tmp_path / "picked" / "model")
    assert [h.taps for h in info.scored_heads] == [False, True]
    assert torch.equal(stage_term(model, "b").weight, term.weight)

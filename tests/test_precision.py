"""One precision decision for training, evaluation, prediction and embedding."""

from __future__ import annotations

import logging

import pytest
import torch

from fashionlens import precision as prec

# Trimmed /proc/cpuinfo of three machines.
SAPPHIRE_RAPIDS = ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
                   "flags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile\n")
CASCADE_LAKE = ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Gold 6248\n"
                "flags\t\t: fpu sse2 avx2 avx512f avx512bw avx512dq avx512vl avx512_vnni\n")
GRAVITON3 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\nCPU implementer\t: 0x41\n"


@pytest.mark.parametrize("cpuinfo, native", [
    (SAPPHIRE_RAPIDS, True),
    (CASCADE_LAKE, False),  # AVX-512 without BF16: bf16 is emulated and ~19x slower
    (GRAVITON3, True),
    ("flags\t: fpu sse2 avx2\n", False),
    ("", False),
])
def test_native_bf16_from_cpu_flags(cpuinfo, native):
    assert prec.cpu_has_native_bf16(cpuinfo) is native


@pytest.fixture
def cpu_with(monkeypatch):
    """Pretend the CPU has (or lacks) native bf16, through the /proc/cpuinfo reader."""
    def fake(cpuinfo: str) -> None:
        monkeypatch.setattr(prec, "_native_bf16_cached", lambda: prec.cpu_has_native_bf16(cpuinfo))
    return fake


def test_auto_resolves_from_the_cpu(cpu_with):
    cpu_with(SAPPHIRE_RAPIDS)
    assert prec.resolve_precision("auto", "cpu") == "bf16"
    assert prec.resolve_precision(None, torch.device("cpu")) == "bf16"
    cpu_with(CASCADE_LAKE)
    assert prec.resolve_precision("auto", "cpu") == "fp32"


def test_explicit_choices_are_kept_with_a_warning_for_emulated_bf16(cpu_with, caplog):
    cpu_with(CASCADE_LAKE)
    prec._warn_emulated_bf16.cache_clear()
    assert prec.resolve_precision("fp32", "cpu") == "fp32"
    with caplog.at_level(logging.WARNING, logger="fashionlens.precision"):
        assert prec.resolve_precision("bf16", "cpu") == "bf16"
    assert "no native bf16" in caplog.text


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="fp16"):
        prec.resolve_precision("fp16", "cpu")


def test_cuda_uses_the_gpu_check(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert prec.resolve_precision("auto", "cuda") == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert prec.resolve_precision("auto", "cuda") == "bf16"


def test_training_evaluation_and_prediction_share_the_decision(cpu_with, model_dir, tiny_folder):
    from fashionlens.evaluation.evaluate import evaluate
    from fashionlens.inference.predictor import Predictor
    from fashionlens.search.embeddings import Embedder

    torch = {"runtime": "torch"}  # the exported runtimes run fp32 or int8 whatever the CPU
    cpu_with(CASCADE_LAKE)
    assert Predictor(model_dir, **torch).precision == "fp32"
    assert Embedder(model_dir, **torch).precision == "fp32"
    assert evaluate(model_dir, tiny_folder, **torch).precision == "fp32"
    cpu_with(SAPPHIRE_RAPIDS)
    assert Predictor(model_dir, **torch).precision == "bf16"
    assert Embedder(model_dir, **torch).precision == "bf16"
    assert evaluate(model_dir, tiny_folder, **torch).precision == "bf16"
    assert Predictor(model_dir, precision="fp32", **torch).precision == "fp32"
    assert Predictor(model_dir, precision="bf16").precision == "bf16"  # auto stays in torch


def test_metric_learning_config_checks_precision_and_finite_floats():
    from fashionlens.errors import ConfigError
    from fashionlens.training.metric import MetricConfig

    MetricConfig().check()
    with pytest.raises(ConfigError, match="metric.precision"):
        MetricConfig(precision="fp16").check()
    with pytest.raises(ConfigError, match="metric.margin: must be a finite number"):
        MetricConfig(margin=float("nan")).check()

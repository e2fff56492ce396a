"""The command line starts without torch: `--help` of every command and `runs` must not
import torch, timm or torchvision (seconds of start-up), and `import fashionlens` loads
its public names only when used. Start-up times are printed, not asserted (the targets
live in benchmarks/)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import fashionlens
import fashionlens.data

HEAVY = ("torch", "timm", "torchvision")
MARKER = "HEAVY-MODULES="

# Runs the CLI in-process in a fresh interpreter, then reports which heavy modules the
# command imported (on a line of its own, after whatever the command printed).
CLI_SCRIPT = f"""
import json, sys
from fashionlens.cli.main import app
try:
    app(sys.argv[1:], prog_name="fashionlens")
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print()
print({MARKER!r} + json.dumps({{"code": code,
      "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""


def _heavy_after(code: str, *args: str, cwd: Path | None = None) -> tuple[dict, str]:
    """Run `code` in a fresh interpreter: what it reported on its marker line, and what
    it printed."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd)
    seconds = time.perf_counter() - started
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARKER)]
    assert lines, (done.stdout, done.stderr)
    report = json.loads(lines[-1][len(MARKER):])
    print(f"{' '.join(args) or code.strip()[:40]}: {seconds:.2f} s")  # shown with -s
    return report, done.stdout


@pytest.mark.parametrize("args", [
    ["--help"],
    ["predict", "--help"],
    ["search", "--help"],
    ["catalog", "--help"],
    ["catalog", "add", "--help"],
    ["serve", "--help"],
    ["train", "--help"],
    ["evaluate", "--help"],
    ["export", "--help"],
    ["train-embedding", "--help"],
])
def test_help_does_not_import_torch(args):
    report, output = _heavy_after(CLI_SCRIPT, *args)
    assert report == {"code": 0, "heavy": []}
    assert "Usage" in output


def test_runs_does_not_import_torch(trained_run):
    report, output = _heavy_after(CLI_SCRIPT, "runs", str(trained_run.output_dir.parent),
                                  "--json")
    assert report == {"code": 0, "heavy": []}
    assert trained_run.output_dir.name in output  # the run was read, header and all


def test_importing_the_package_loads_nothing_heavy():
    code = f"""
import json, sys
import fashionlens, fashionlens.data
from fashionlens.data import DataSpec, load_labelled
print({MARKER!r} + json.dumps({{"heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""
    assert _heavy_after(code)[0] == {"heavy": []}


def test_the_public_names_load_on_use():
    from fashionlens import Predictor, evaluate, load_config, train
    from fashionlens.evaluation.evaluate import evaluate as evaluate_function
    from fashionlens.inference.predictor import Predictor as predictor_class

    assert Predictor is predictor_class and evaluate is evaluate_function
    assert callable(train) and callable(load_config)
    for name in fashionlens.__all__:
        assert getattr(fashionlens, name) is not None
    assert sorted(fashionlens.__all__) == sorted(fashionlens._EXPORTS)
    assert set(fashionlens.__all__) <= set(dir(fashionlens))
    assert sorted(fashionlens.data.__all__) == sorted(fashionlens.data._EXPORTS)
    for name in fashionlens.data.__all__:
        assert getattr(fashionlens.data, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        fashionlens.nothing_here  # noqa: B018
    with pytest.raises(ImportError):
        from fashionlens import nothing_here  # noqa: F401


def test_constants_spelled_twice_agree():
    """The CLI spells a few constants of torch-importing modules itself."""
    from fashionlens.cli import common
    from fashionlens.cli import export as export_cli
    from fashionlens.inference.backends import RUNTIMES
    from fashionlens.inference.export_cache import FORMATS

    assert common.RUNTIMES == RUNTIMES
    assert export_cli.FORMATS == FORMATS

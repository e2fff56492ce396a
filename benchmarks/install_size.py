"""Install benchmark: the plain (inference-only) install against the full one; JSON.

    python benchmarks/install_size.py            # writes benchmarks/results-install.json

Each install goes into a fresh virtual environment in a temporary folder, from this
checkout (not editable, so the package's own files count too), with pip's cache off:
- plain: `pip install .` (predict, search, catalog, serve; OpenVINO; no torch);
- full: `pip install torch==2.14.1 torchvision==0.29.1` then `pip install '.[train]'`
  (training, evaluation, export, int8 calibration), as the README's first command.
Reported: seconds to install, MB on disk (the whole environment), and whether
`fashionlens predict` answers in the plain one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TORCH = ["torch==2.14.1", "torchvision==0.29.1"]


def size_mb(folder: Path) -> float:
    total = 0
    for dirpath, _, files in os.walk(folder):
        for name in files:
            path = Path(dirpath) / name
            if not path.is_symlink():
                total += path.stat().st_size
    return round(total / 2**20, 1)


def install(venv: Path, steps: list[list[str]]) -> dict:
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-cache-dir"]
    started = time.perf_counter()
    for step in steps:
        subprocess.run(pip + step, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    return {"seconds": round(time.perf_counter() - started, 1), "megabytes": size_mb(venv),
            "commands": [" ".join(["pip install", *step]) for step in steps]}


def main() -> None:
    result: dict = {"python": sys.version.split()[0]}
    with tempfile.TemporaryDirectory(prefix="fashionlens-install-") as tmp:
        plain = Path(tmp) / "plain"
        result["plain"] = install(plain, [[str(ROOT)]])
        photo = ROOT / "src" / "fashionlens" / "assets" / "samples" / "Dress" / "dress-1.jpg"
        answer = subprocess.run([str(plain / "bin" / "fashionlens"), "predict", "--json",
                                 str(photo)], capture_output=True, text=True, cwd=tmp)
        result["plain"]["predict_works"] = answer.returncode == 0 and '"label"' in answer.stdout
        check = subprocess.run([str(plain / "bin" / "python"), "-c",
                                "import importlib.util as u; print(u.find_spec('torch') is None)"],
                               capture_output=True, text=True)
        result["plain"]["has_no_torch"] = check.stdout.strip() == "True"
        del plain
        full = Path(tmp) / "full"
        result["full"] = install(full, [TORCH, [f"{ROOT}[train]"]])
    result["size_ratio"] = round(result["plain"]["megabytes"] / result["full"]["megabytes"], 3)
    result["target"] = "plain install at most a tenth of the full one's size on disk"
    result["reached"] = result["size_ratio"] <= 0.1
    text = json.dumps(result, indent=2)
    print(text)
    (ROOT / "benchmarks" / "results-install.json").write_text(text + "\n")


if __name__ == "__main__":
    main()

"""Which float precision a forward/backward pass runs in: one decision for the whole package.

bf16 autocast halves memory traffic. On a CPU without native bf16 instructions every
bf16 op is emulated: one epoch of the README's demo took 3 min 26 s in bf16 against 11 s
in fp32. So "auto" (the default everywhere) picks bf16 only where the hardware has it
(AVX512-BF16, AMX, ARM bf16, a bf16 GPU). Measured there (AMD EPYC, AVX512-BF16, no
AMX): eager inference of the bundled model 2.5x faster than fp32
(benchmarks/results-inference.json), the `fashion` recipe's training step no faster
(benchmarks/results-train-time-native-bf16.json); a run can ask for fp32 outright.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# torch is imported inside the functions that need it: reading CPU facts (benchmarks,
# a future torch-free install) does not need torch itself.

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "bf16", "fp32")

# /proc/cpuinfo flags that mean native bf16 arithmetic: x86 (AVX512-BF16, AMX-BF16) and
# ARMv8.6 (the "bf16" feature).
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
# x86 flags of int8 dot-product instructions, which int8 inference speeds up with.
INT8_DOT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
CPUINFO = Path("/proc/cpuinfo")


def _cpuinfo_flags(text: str) -> set[str]:
    """The CPU feature flags listed in /proc/cpuinfo text (x86 'flags', ARM 'Features')."""
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return flags


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """True where the CPU computes bf16 natively.

    Reads the flags of /proc/cpuinfo (or the `cpuinfo` text given, for tests); where that
    file does not exist (macOS, Windows), asks PyTorch's own CPU capability check.
    """
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text(errors="replace")
        except OSError:
            return _torch_native_bf16()
    return bool(_cpuinfo_flags(cpuinfo) & NATIVE_BF16_FLAGS)


def cpu_description(cpuinfo: str | None = None) -> dict:
    """The CPU a measurement ran on, for benchmark JSON: speed ratios only mean something
    next to the CPU model and whether it computes bf16 natively."""
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    model = next((line.partition(":")[2].strip() for line in cpuinfo.splitlines()
                  if line.partition(":")[0].strip().lower() in ("model name", "cpu model")),
                 platform.processor() or platform.machine())
    flags = _cpuinfo_flags(cpuinfo)
    return {"model": model, "cores": os.cpu_count(),
            "native_bf16": bool(flags & NATIVE_BF16_FLAGS) if cpuinfo
            else _torch_native_bf16(),
            "avx512": "avx512f" in flags, "avx2": "avx2" in flags,
            "int8_dot": bool(flags & INT8_DOT_FLAGS)}


def _torch_native_bf16() -> bool:
    import torch

    # Not torch.ops.mkldnn._is_mkldnn_bf16_supported: that one says yes on any AVX-512
    # CPU, including those that only emulate bf16.
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    for name in checks:
        check = getattr(torch.cpu, name, None)
        try:
            if check is not None and check():
                return True
        except RuntimeError:
            continue
    return False


@functools.cache
def _native_bf16_cached() -> bool:
    return cpu_has_native_bf16()


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """'auto' -> the GPU when there is one, else the CPU; any other name as given."""
    import torch

    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_precision(precision: str | None, device: str | torch.device = "cpu") -> str:
    """'auto' (or None) -> 'bf16' where `device` computes bf16 natively, else 'fp32'.

    An explicit 'bf16' or 'fp32' is kept as asked (with a warning when bf16 will be slow).
    """
    import torch

    precision = precision or "auto"
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    dev = torch.device(device)
    if dev.type == "cuda":
        native = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    elif dev.type == "cpu":
        native = _native_bf16_cached()
    else:  # mps and others: bf16 autocast support varies; fp32 is always right
        native = False
    if precision == "auto":
        return "bf16" if native else "fp32"
    if precision == "bf16" and not native:
        _warn_emulated_bf16(dev.type)
    return precision


@functools.cache
def _warn_emulated_bf16(device_type: str) -> None:
    log.warning("bf16 was asked for, but this %s has no native bf16: expect it to be much "
                "slower than fp32 (precision 'auto' chooses for you)", device_type)


def autocast(device: str | torch.device, precision: str):
    """A bf16 autocast context when `precision` (already resolved) is 'bf16'."""
    import torch

    dev = torch.device(device)
    return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16")

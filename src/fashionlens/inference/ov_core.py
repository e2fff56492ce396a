"""One OpenVINO Core for the whole process.

OpenVINO's CPU plugin gives the thread that compiles a model a signal stack of its own
(sigaltstack) and puts back the one it found when that Core is destroyed. Two Cores
destroyed in another order than they were made leave the thread on a freed stack, and the
next signal with a Python handler (SIGCHLD from a finished subprocess, SIGINT, SIGTERM,
SIGALRM) kills the process with SIGSEGV: a full test run died so in `waitpid` (OpenVINO
2026.0 on a Xeon with AMX). A Core that lives as long as the process is never destroyed
out of order, and its compiled models share one set of CPU threads besides.
"""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def openvino_core() -> Any:
    import openvino as ov

    return ov.Core()

"""OpenVINO runtimes made and dropped in any order leave the process able to take a
signal (issue 18's CI crash): each OpenVINO Core gave the compiling thread a signal stack
of its own and restored the previous one when it died, so two Cores dropped out of order
left the thread on a freed stack, and the next SIGCHLD (a subprocess ending) killed the
test run with SIGSEGV. Run in a child process: the failure is the process dying."""

from __future__ import annotations

import signal
import subprocess
import sys

SCRIPT = """
import gc, os, signal
from fashionlens.inference.loading import load_runtime

first = load_runtime("clothing10", "openvino")
second = load_runtime("clothing10", "openvino", threads=1)
del first
gc.collect()
del second
gc.collect()
got = []
signal.signal(signal.SIGCHLD, lambda *_: got.append(1))
os.kill(os.getpid(), signal.SIGCHLD)
print("signal handled" if got else "no signal")
"""


def test_runtimes_dropped_out_of_order_leave_signals_working(tmp_path):
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=240, env={"FASHIONLENS_CACHE": str(tmp_path),
                                            "PATH": "/usr/bin:/bin"})
    assert done.returncode != -signal.SIGSEGV, "the process died of SIGSEGV on a signal"
    assert done.returncode == 0, done.stderr[-2000:]
    assert "signal handled" in done.stdout

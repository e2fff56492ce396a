"""Started by torchrun from test_distributed: several fashionlens commands in one launch
(each process imports torch and the training stack once), each run as the command line
runs it, inside one process group."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fashionlens.cli.main import app
from fashionlens.training import distributed


def main() -> None:
    commands = json.loads(Path(sys.argv[1]).read_text())
    with distributed.session("cpu"):
        for args in commands:
            app(args, standalone_mode=False)


if __name__ == "__main__":
    main()

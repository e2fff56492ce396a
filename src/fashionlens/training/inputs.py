"""What a training run reads before it trains, checked without torch.

`fashionlens train` reads the run's data (and, resuming, its folder) here before it loads
torch and timm: a typo in a path or a CSV listing no photo that exists is answered at
once, not after seconds of start-up. `training.run` reads the data through the same
functions, so the two checks cannot disagree.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..config import RunConfig, TaskConfig, load_config
from ..data.sources import FOLDER_COLUMN, LabelledSet, csv_columns, load_labelled
from ..errors import DataError

CHECKPOINT = "checkpoint.pt"  # the last epoch's training state, removed when the run ends


def task_configs(config: RunConfig) -> list[TaskConfig]:
    """The run's tasks; a folder-per-class source names its one column `label`."""
    configs = config.task_configs()
    if not config.tasks and csv_columns(config.data) is None:  # folder per class
        configs = [dataclasses.replace(configs[0], column=FOLDER_COLUMN)]
    return configs


def read_run_data(config: RunConfig) -> LabelledSet:
    """The run's labelled photos (DataError naming the file, column or path when unusable).

    A multi-task run reads every task's column; splits stratify by the first task's
    label when it is a plain column."""
    spec = config.data
    if not config.tasks:
        return load_labelled(spec)
    configs = task_configs(config)
    columns = csv_columns(spec) or [FOLDER_COLUMN]
    for cfg in configs:
        if cfg.source_column not in columns:
            raise DataError(f"{spec.path}: no column '{cfg.source_column}' (the column of "
                            f"task '{cfg.name}'); columns are: {', '.join(columns)}")
    first = configs[0]
    label_column = (first.source_column if first.kind == "classification"
                    and not first.keywords else None)
    return load_labelled(spec, [c.source_column for c in configs], label_column)


def resume_config(run_dir: str | Path) -> RunConfig:
    """The config an interrupted run was started with (its own config.yaml)."""
    run_dir = Path(run_dir).expanduser()
    if not (run_dir / CHECKPOINT).is_file():
        finished = (run_dir / "model" / "model.json").is_file()
        raise DataError(f"{run_dir}: no {CHECKPOINT} to resume from ("
                        + ("the run finished; its model is in model/" if finished else
                           "not a run folder, or the run stopped before its first epoch ended")
                        + ")")
    return load_config(run_dir / "config.yaml")

"""What a training run reads before it trains, checked without torch.

`fashionlens train` reads the run's data (and, resuming, its folder) here before it loads
torch and timm: a typo in a path or a CSV listing no photo that exists is answered at
once, not after seconds of start-up. `training.run` reads the data through the same
functions, so the two checks cannot disagree.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..config import RunConfig, SourceConfig, TaskConfig, load_config
from ..data.sources import FOLDER_COLUMN, LabelledSet, Sample, csv_columns, load_labelled
from ..errors import DataError

CHECKPOINT = "checkpoint.pt"  # the last epoch's training state, removed when the run ends


def task_configs(config: RunConfig) -> list[TaskConfig]:
    """The run's tasks; a folder-per-class source names its one column `label`."""
    configs = config.task_configs()
    folder = not config.sources and csv_columns(config.data) is None  # folder per class
    if not config.tasks and folder:
        configs = [dataclasses.replace(configs[0], column=FOLDER_COLUMN)]
    return configs


def read_run_data(config: RunConfig) -> LabelledSet:
    """The run's labelled photos (DataError naming the file, column or path when unusable).

    A multi-task run reads every task's column; splits stratify by the first task's
    label when it is a plain column."""
    spec = config.data
    if config.sources:
        if not config.tasks:
            raise DataError("a joint run (sources:) names its heads under tasks:")
        read = read_sources(config)
        return LabelledSet([s for _, d in read for s in d.samples], [],
                           ", ".join(d.source for _, d in read),
                           [p for _, d in read for p in d.missing])
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


def read_sources(config: RunConfig) -> list[tuple[SourceConfig, LabelledSet]]:
    """Each source's labelled photos, their cells renamed to the tasks' columns.

    A source gives a task its column as `columns` says (else a column of the task's own
    name, when it has one); a task column it cannot give stays missing on its rows, which
    that task's loss then skips. Rows whose `exclude` column holds a listed value are left
    out (e.g. cosmetics in a fashion catalog)."""
    configs = task_configs(config)
    read = []
    for index, source in enumerate(config.sources):
        where = f"sources[{index}] ({source.name or source.data.path})"
        if not source.data.path:
            raise DataError(f"{where}: no data.path")
        columns = csv_columns(source.data)
        if columns is None:
            raise DataError(f"{source.data.path}: a joint run reads CSV sources ({where})")
        given: dict[str, str] = {}  # task column -> this source's column
        for cfg in configs:
            own = str(source.columns.get(cfg.source_column, cfg.source_column))
            if own in columns:
                given[cfg.source_column] = own
            elif cfg.source_column in source.columns:
                raise DataError(f"{source.data.path}: no column '{own}' (columns."
                                f"{cfg.source_column} of {where}); columns are: "
                                f"{', '.join(columns)}")
        for column in source.mappings:
            if column not in given:
                raise DataError(f"{source.data.path}: mappings.{column} of {where}: the "
                                f"source gives no task column '{column}' (it gives: "
                                f"{', '.join(given)})")
        for column in source.exclude:
            if column not in columns:
                raise DataError(f"{source.data.path}: no column '{column}' (exclude of "
                                f"{where}); columns are: {', '.join(columns)}")
        if not given:
            raise DataError(f"{source.data.path}: {where} gives no task a column; tasks "
                            f"read {', '.join(c.source_column for c in configs)}")
        wanted = sorted({*given.values(), *source.exclude})
        data = load_labelled(source.data, wanted, None)
        dropped = {str(k): {str(v) for v in (values if isinstance(values, list) else [values])}
                   for k, values in source.exclude.items()}
        samples = [
            Sample(path=s.path, label="", group=s.group, split=s.split,
                   values={task_col: _mapped(s.values[col], source.mappings.get(task_col))
                           for task_col, col in given.items()})
            for s in data.samples
            if not any(s.values.get(col, "") in values for col, values in dropped.items())]
        if not samples:
            raise DataError(f"{source.data.path}: every row of {where} is excluded")
        read.append((source, LabelledSet(samples, [], data.source, data.missing)))
    return read


def _mapped(cell: str, mapping: dict | None) -> str:
    """A source's cell in the task's terms (`SourceConfig.mappings`); ~ gives no label."""
    if not mapping or cell not in mapping:
        return cell
    value = mapping[cell]
    return "" if value is None else str(value)


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

"""One YAML file describes a run; dotted command-line overrides adjust it.

The fully resolved config is written next to every run's outputs, so a run can be
repeated from its own folder.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import re
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from .data.augment import AugmentConfig
from .data.preprocess import FITS
from .data.sources import DataSpec, extension_problem
from .errors import ConfigError, shorten
from .precision import PRECISIONS


class FieldError(ConfigError):
    """A bad value in one config field; `field` (e.g. 'train.lr') lets the CLI name the flag
    the value came from instead."""

    def __init__(self, field: str, reason: str, file: str | None = None) -> None:
        self.field, self.reason, self.file = field, reason, file
        where = f" (in {file})" if file else ""
        super().__init__(f"{field}: {reason}{where}" if field else f"{reason}{where}")

    def __reduce__(self):
        return (type(self), (self.field, self.reason, self.file))


@dataclass
class TaskConfig:
    """One head to train; an entry of the run config's `tasks:` list (`tasks.base` holds
    what the head does; the config stays torch-free, below the tasks that read it)."""

    name: str = ""
    kind: str = "classification"  # classification | multilabel
    column: str = ""  # the data column (default: the name)
    weight: float = 1.0  # its share of the summed loss
    # Classes (tags) with fewer training photos: folded into `other` (classification) or
    # dropped (multilabel). 1 keeps every value.
    min_count: int = 1
    other: str = "other"
    # raw value -> class (e.g. colour groups); in a config file also the name of a YAML
    # file beside it holding that mapping (a taxonomy shared by several configs)
    mapping: dict | str = field(default_factory=dict)
    unmapped: str = "keep"  # keep: a value the mapping lacks is its own class; drop: missing
    keywords: dict = field(default_factory=dict)  # class -> words found in a text column
    default: str | None = None  # keywords: the class when no word matches (else missing)
    separator: str = ";"  # multilabel: between tags
    loss: str = "auto"  # classification: ce; multilabel: bce | focal (auto: bce)
    focal_gamma: float = 2.0
    focal_alpha: float | None = None
    pos_weight: str = "none"  # multilabel: none | sqrt | inverse (negatives / positives)
    colour: bool = False  # a colour task: colour-changing augmentation is turned off
    # multilabel: tag -> its parent tag (boots -> shoes). A photo's tags gain their
    # parents; a photo whose tags name a parent but none of its children is not taught
    # that the children are absent (those targets are masked).
    parents: dict = field(default_factory=dict)
    # multilabel: at most this many tags a photo; "auto": the cap with the best
    # cross-fitted micro-F1 on validation (or none); None: no cap
    max_tags: int | str | None = None
    # multilabel: what the per-tag thresholds maximise: tag_f1 (each tag's own F1) or
    # micro_f1 (the F1 of all tags pooled: fewer tags of the rare, unsure kinds)
    threshold_objective: str = "tag_f1"

    @property
    def source_column(self) -> str:
        return self.column or self.name


@dataclass
class ModelConfig:
    name: str = "efficientnet_lite0"
    pretrained: str = "embedded"
    image_size: int | None = None
    # crop: a square centre crop of image_size; letterbox / stretch: the whole photo at
    # height x width (product shots, full-body photos)
    fit: str = "crop"
    height: int | None = None
    width: int | None = None
    # letterbox / stretch: further [height, width] inputs; each photo is read at the one
    # nearest its aspect ratio (`Preprocess.canvases`); training keeps each source's size
    canvases: list[list[int]] = field(default_factory=list)
    drop_rate: float = 0.2
    drop_path_rate: float = 0.1


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    layer_decay: float = 0.85
    weight_decay: float = 0.02
    warmup_epochs: float = 0.5
    schedule: str = "cosine"  # cosine | plateau
    label_smoothing: float = 0.1
    balance: str = "sqrt"  # none | sqrt | inverse | sampler
    linear_probe: bool = True
    freeze_bn: bool = True
    freeze_stages: int = 0
    early_stopping_patience: int = 4
    monitor: str = "accuracy"  # accuracy | macro_f1
    train_size: int | None = None
    # auto: bf16 where the CPU (AVX512-BF16/AMX) or GPU computes it natively, else fp32
    precision: str = "auto"  # auto | bf16 | fp32
    device: str = "auto"
    num_workers: int | None = None
    cache_images: bool = True
    threads: int | None = None
    tta: bool = False
    max_minutes: float | None = None
    # The linear probe fits on at most this many training photos (a random subset): on
    # 25,000 photos the logistic regressions alone would take minutes per task.
    probe_photos: int = 10000
    # Largest gradient norm a step may take (None: no clipping). Each epoch's row records
    # the median and largest norm before clipping, to choose it from.
    grad_clip: float | None = None
    # Which weights the run saves: the best epoch by validation score (the linear probe
    # counts as epoch 0), or the last one. `last` is for a backbone whose heads are refit
    # afterwards (`refit-heads`): trained heads then score below the probe's logistic
    # regressions although the backbone under them improved.
    keep: str = "best"  # best | last


@dataclass
class OutputConfig:
    dir: str = "runs"
    name: str = ""  # taken: numbered name-2, name-3, ... unless exist_ok
    exist_ok: bool = False  # write into an existing run folder (its old outputs are replaced)
    half_weights: bool = False


# Choices of metric learning (`metric:` section; training.metric reads them).
LOSSES = ("triplet", "supcon")
MINING = ("semihard", "hard", "all")
MODES = ("head", "full")
DEFAULT_EPOCHS = {"head": 40, "full": 5}


@dataclass
class MetricConfig:
    """Metric learning's settings (`train-embedding`): the `metric:` section of a run config,
    so an embedding run is configured, overridden and saved like a classifier run."""

    base: str = "default"  # the model to start from: `--model` (models.resolve's spellings)
    pretrained: str = "embedded"  # weights of a backbone-name base: embedded, timm, none, file
    mode: str = "head"
    dim: int = 256
    hidden: int = 0
    loss: str = "triplet"
    mining: str = "semihard"
    margin: float = 0.2
    temperature: float = 0.1
    category_weight: float = 0.2
    # Class posterior appended to the search vector; None: 0.25 when the base classifies
    # and its backbone stays frozen (head mode), else 0.
    posterior_weight: float | None = None
    stage_taps: int = 2  # the backbone's last N stages feed the head too (0: pooled only)
    item_column: str | None = None
    views: int = 4  # head mode: re-shot views computed per photo
    epochs: int | None = None  # None: 40 in head mode, 5 in full mode (DEFAULT_EPOCHS)
    batch_items: int = 64
    lr: float = 1e-3
    backbone_lr: float = 1e-4
    weight_decay: float = 1e-4
    freeze_stages: int = 2
    seed: int = 0
    precision: str = "auto"  # auto (bf16 where the hardware has it) | bf16 | fp32
    device: str = "auto"
    threads: int = 2
    eval_views_seed: int = 0

    def with_defaults(self) -> MetricConfig:
        """A copy with the mode-dependent defaults (epochs) filled in."""
        if self.epochs is not None:
            return self
        return dataclasses.replace(self, epochs=DEFAULT_EPOCHS.get(self.mode, 40))

    def check(self) -> None:
        """Refuse bad values, naming the field (the CLI turns 'metric.margin' into --margin)."""
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise FieldError(f"metric.{spec.name}", f"must be a finite number, got {value}")
        for name, value, allowed in (("mode", self.mode, MODES), ("loss", self.loss, LOSSES),
                                     ("mining", self.mining, MINING),
                                     ("precision", self.precision or "auto", PRECISIONS)):
            if value not in allowed:
                raise FieldError(f"metric.{name}", f"'{value}' is not one of "
                                                   f"{', '.join(allowed)}")
        for name in ("dim", "views", "epochs", "batch_items"):
            least = 2 if name in ("dim", "batch_items") else 1
            value = getattr(self, name)
            if value is not None and int(value) < least:
                raise FieldError(f"metric.{name}", f"must be at least {least}, got {value}")
        for name in ("margin", "temperature"):
            if getattr(self, name) <= 0:
                raise FieldError(f"metric.{name}", f"must be positive, got {getattr(self, name)}")
        for name in ("category_weight", "posterior_weight", "stage_taps"):
            if (getattr(self, name) or 0) < 0:
                raise FieldError(f"metric.{name}", f"cannot be negative: {getattr(self, name)}")
        for name in ("seed", "eval_views_seed"):
            if not 0 <= getattr(self, name) <= MAX_SEED:
                raise FieldError(f"metric.{name}", f"must be a whole number from 0 to "
                                                   f"{MAX_SEED}, got {getattr(self, name)}")
        if not 1 <= self.threads <= 1024:
            raise FieldError("metric.threads", f"must be between 1 and 1024, got {self.threads}")


@dataclass
class SourceConfig:
    """One data source of a joint run (`sources:`): its photos, the columns it gives the
    tasks, and the input size its photos train at."""

    name: str = ""
    data: DataSpec = field(default_factory=DataSpec)
    # task column -> this source's column (e.g. `type: label`); a task column the source
    # lacks leaves that task's targets missing on its rows (the head does not learn there)
    columns: dict = field(default_factory=dict)
    exclude: dict = field(default_factory=dict)  # column -> values whose rows are left out
    height: int | None = None  # training input size (default: the model's)
    width: int | None = None
    draws: int | None = None  # photos drawn per epoch (default: all; more repeats them)
    augment: dict = field(default_factory=dict)  # this source's changes to `augment:`
    val_limit: int | None = None  # validation photos scored after each epoch (seeded subset)
    # how many times each of its photos counts when `refit-heads` fits a head on frozen
    # features (its rows repeated): a few hundred hand-labelled photos beside thousands of
    # teacher-labelled ones. Training runs draw photos by `draws` and do not read it.
    refit_weight: int = 1
    # task column -> {this source's value: the task's value} (or a mapping file beside the
    # config): a source that names things its own way, e.g. a home photo's garment type as
    # the one outfit tag it shows; a value mapped to ~ leaves the cell empty (no label), a
    # value the mapping lacks is passed on as it is
    mappings: dict = field(default_factory=dict)


@dataclass
class TeacherConfig:
    """Knowledge distillation (`teacher:`): a trained model reads the same augmented
    photos as the student, and one task also learns its answers (Hinton et al.'s soft
    targets at a temperature), beside the labels: e.g. a specialist trained on one kind
    of photo teaching a joint model's head on those photos."""

    model: str = ""  # the teacher (models.resolve's spellings); empty: no teacher
    head: str = ""  # the teacher's head that teaches (default: its first)
    task: str = ""  # the task it teaches (default: the first); a single-label one
    # teacher class -> task class (or a mapping file beside the config); a class the
    # mapping lacks keeps its name, one mapped to ~ or not among the task's is not taught
    mapping: dict | str = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)  # rows it teaches (default: all)
    weight: float = 1.0  # of its loss beside the task's own (times temperature squared)
    temperature: float = 2.0


@dataclass
class RunConfig:
    data: DataSpec = field(default_factory=DataSpec)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    metric: MetricConfig = field(default_factory=MetricConfig)  # train-embedding only
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    # The heads to train; empty: one classification head `label` from data.target_column.
    tasks: list[TaskConfig] = field(default_factory=list)
    # Several data sources trained together (one backbone, every head); `data` is unused.
    sources: list[SourceConfig] = field(default_factory=list)
    seed: int = 0

    def task_configs(self) -> list[TaskConfig]:
        if self.tasks:
            return list(self.tasks)
        return [TaskConfig(name="label", kind="classification", column=self.data.target_column)]

    def to_dict(self) -> dict:
        return _plain(asdict(self))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _coerce(value, hint, where: str):
    """Check a YAML value against a dataclass field's type hint and convert it."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            value = [value]
        (inner, *_) = typing.get_args(hint) or (typing.Any,)
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if hint is typing.Any or hint is dict:
        if hint is dict and not isinstance(value, dict):
            raise FieldError(where, f"expected a mapping, got {value!r}")
        return value
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        obj = hint()
        _apply(obj, value, where)
        return obj
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise FieldError(where, f"expected true or false, got {value!r}")
    if hint is float:
        number = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            # YAML 1.1 reads 1e-3 (no dot) as a string; accept it as the number it means.
            with contextlib.suppress(ValueError):
                number = float(value)
        if number is not None:
            if not math.isfinite(number):  # every check like `lr > 0` would let NaN through
                raise FieldError(where, f"must be a finite number, got {value!r}")
            return number
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is str and isinstance(value, str | int | float):
        return str(value)
    raise FieldError(where, f"expected {getattr(hint, '__name__', hint)}, got {value!r}")


def _apply(obj, values: dict, where: str) -> None:
    if not isinstance(values, dict):
        raise FieldError(where, f"expected a mapping of fields, got {values!r}")
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in values.items():
        if key not in names:
            raise FieldError(where, f"unknown field '{key}'; "
                                    f"known fields: {', '.join(sorted(names))}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _apply(current, value, f"{where}.{key}" if where else key)
        elif isinstance(value, dict) and _named_dataclasses(current):
            _apply_by_name(current, value, f"{where}.{key}" if where else key)
        elif isinstance(value, dict) and isinstance(current, dict) and current:
            # a mapping set before (a file, then an override): field by field, as `extends`
            setattr(obj, key, merge_trees(current, value))
        else:
            setattr(obj, key, _coerce(value, hints[key], f"{where}.{key}" if where else key))


def _named_dataclasses(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(
        dataclasses.is_dataclass(item) and isinstance(getattr(item, "name", None), str)
        for item in value)


def _apply_by_name(items: list, values: dict, where: str) -> None:
    """`-o sources.studio.draws=4000`: fields of the named source (or task), as `extends`
    merges them by name; a name that is not there is an error naming those that are."""
    by_name = {item.name: item for item in items}
    for name, fields in values.items():
        if name not in by_name:
            raise FieldError(f"{where}.{name}", f"no item named {name!r} here; named: "
                                                f"{', '.join(by_name)}")
        _apply(by_name[name], fields, f"{where}.{name}")


def apply_fields(obj, values: dict, where: str) -> None:
    """Set a dataclass's fields from a mapping, checked as a config file's are (a source's
    `augment:` changes, for one)."""
    _apply(obj, values, where)


def parse_override(text: str) -> dict:
    """'train.epochs=5' -> {'train': {'epochs': 5}} (the value is read as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}': expected section.field=value")
    key, raw = text.split("=", 1)
    try:  # safe_load: a tag such as !!python/object is refused, not constructed
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"override '{shorten(text, 80)}': the value is not plain YAML "
                          f"({problem}); write a number, text, true/false or a [list]") from None
    return nest(key.strip(), value)


def nest(dotted: str, value, into: dict | None = None) -> dict:
    """Set 'train.epochs' to `value` in a nested mapping (a new one unless `into`)."""
    tree = {} if into is None else into
    node = tree
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return tree


EXTENDS = "extends"


def read_config_tree(path: Path, _chain: tuple[Path, ...] = (),
                     read: list[Path] | None = None) -> dict:
    """A config file's fields as a mapping, its relative paths made absolute against its
    own folder, with the config it `extends` (a path relative to it) underneath.

    Why: a training stage differs from the one before by a handful of values; a file that
    copies the rest hides which. Merging (`merge_trees`): mappings field by field, lists of
    named items (`sources`, `tasks`) item by item by name (new names appended), anything
    else replaced; `~` returns a field to its default. `read` gathers the files read, the
    extended ones after."""
    resolved = path.resolve()
    if not path.is_file():
        if _chain:
            raise ConfigError(f"{_chain[-1]}: extends {path}, which is not a file")
        raise ConfigError(f"{path}: config file not found")
    if resolved in _chain:
        loop = " -> ".join(str(p) for p in (*_chain, resolved))
        raise ConfigError(f"{path}: the configs extend each other in a loop ({loop})")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: invalid YAML ({exc})") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (data, model, train, "
                          f"augment, output, metric, seed), got {type(loaded).__name__} "
                          f"{shorten(repr(loaded), 60)}")
    if read is not None:
        read.append(path)
    base = loaded.pop(EXTENDS, None)
    own = _absolute_paths(loaded, path.parent)  # before merging: the base's are its own
    if base is None:
        return own
    if not isinstance(base, str) or not base.strip():
        raise FieldError(EXTENDS, f"expected the path of the config this one builds on "
                                  f"(relative to this file), got {base!r}", file=str(path))
    return merge_trees(read_config_tree(path.parent / base, (*_chain, resolved), read), own)


def merge_trees(base: dict, over: dict) -> dict:
    """`over`'s fields on top of `base`'s (`read_config_tree` says how)."""
    merged = dict(base)
    for key, value in over.items():
        below = merged.get(key)
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(below, dict):
            merged[key] = merge_trees(below, value)
        elif _named_items(value) and _named_items(below):
            items = {item["name"]: dict(item) for item in below}
            for item in value:
                items[item["name"]] = merge_trees(items.get(item["name"], {}), item)
            merged[key] = list(items.values())
        else:
            merged[key] = value
    return merged


def _named_items(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(item, dict) and isinstance(item.get("name"), str) for item in value)


def _absolute_paths(tree: dict, folder: Path) -> dict:
    """The tree with the paths a config names relative to its file (data files, mapping
    files, starting weights that exist there) made absolute against `folder`; anything
    malformed is left for the field checks to name."""
    def absolute(value: object, must_exist: bool = False) -> object:
        if not isinstance(value, str) or not value or Path(value).expanduser().is_absolute():
            return value
        candidate = folder / value
        if must_exist and not candidate.is_file():
            return value
        return str(candidate.resolve())

    def sections(key: str) -> list[dict]:
        items = tree.get(key)
        return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []

    tree = copy.deepcopy(tree)
    data_specs = [tree.get("data"), *(s.get("data") for s in sections("sources"))]
    for spec in data_specs:
        if isinstance(spec, dict) and "path" in spec:
            spec["path"] = absolute(spec["path"])
    model = tree.get("model")
    # starting weights named by a path relative to the config file (a shipped model's);
    # other spellings (embedded, timm, none, a timm name) are not paths
    if isinstance(model, dict) and model.get("pretrained") not in (None, "embedded", "timm",
                                                                     "none", ""):
        model["pretrained"] = absolute(model["pretrained"], must_exist=True)
    for task in sections("tasks"):
        if "mapping" in task:
            task["mapping"] = absolute(task["mapping"])
    teacher = tree.get("teacher")
    if isinstance(teacher, dict):
        if "mapping" in teacher:
            teacher["mapping"] = absolute(teacher["mapping"])
        # a model folder relative to the config file; other spellings (a bundled model's
        # name, `default`) are not paths
        model = teacher.get("model")
        if isinstance(model, str) and model and (folder / model).is_dir():
            teacher["model"] = absolute(model)
    for source in sections("sources"):
        if isinstance(source.get("mappings"), dict):
            source["mappings"] = {k: absolute(v) for k, v in source["mappings"].items()}
    return tree


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                values: dict | None = None) -> RunConfig:
    """Defaults, then the YAML file (and the files it extends), then `values`, then dotted
    overrides."""
    config = RunConfig()
    loaded: dict = {}
    where = ""
    if path is not None:
        path = Path(path)
        files: list[Path] = []
        loaded = read_config_tree(path, read=files)
        # which file a bad field is in (a config that extends others: one of them)
        where = str(path) if len(files) == 1 else \
            f"{path} or the configs it extends: {', '.join(str(f) for f in files[1:])}"
        try:
            _apply(config, loaded, "")
        except FieldError as exc:
            raise FieldError(exc.field, exc.reason, file=where) from None
        for index, task in enumerate(config.tasks):
            if isinstance(task.mapping, str):
                task.mapping = _mapping_file(Path(task.mapping), f"tasks[{index}].mapping",
                                             where)
        for index, source in enumerate(config.sources):
            for column, mapping in list(source.mappings.items()):
                if isinstance(mapping, str):
                    source.mappings[column] = _mapping_file(
                        Path(mapping), f"sources[{index}].mappings.{column}", where)
        if isinstance(config.teacher.mapping, str):
            config.teacher.mapping = _mapping_file(Path(config.teacher.mapping),
                                                   "teacher.mapping", where)
    if values:
        _apply(config, values, "")
    parsed = [parse_override(text) for text in overrides or []]
    for override in parsed:
        _apply(config, override, "")
    try:
        validate(config)
    except FieldError as exc:
        # A bad value that only the file set: say which file, as for an unknown field.
        if path is not None and exc.file is None and _sets(loaded, exc.field) \
                and not any(_sets(tree, exc.field) for tree in [values or {}, *parsed]):
            raise FieldError(exc.field, exc.reason, file=where) from None
        raise
    return config


def _mapping_file(path: Path, where: str, config_file: str) -> dict:
    """A task's mapping kept in a YAML file of its own (raw value -> class; a value mapped
    to nothing, `~`, is missing)."""
    try:
        loaded = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise FieldError(where, f"{path}: mapping file not found", file=config_file) from None
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as exc:
        raise FieldError(where, f"{path}: cannot read this mapping ({exc})",
                         file=config_file) from None
    if not isinstance(loaded, dict) or not all(
            isinstance(k, str | int | float) and (v is None or isinstance(v, str | int | float))
            for k, v in loaded.items()):
        raise FieldError(where, f"{path}: expected a mapping of raw values to class names",
                         file=config_file)
    return {str(k): (None if v is None else str(v)) for k, v in loaded.items()}


def _sets(tree: dict, dotted: str) -> bool:
    """Whether a nested mapping (YAML, flags or an override) gives the dotted field."""
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def validate(config: RunConfig) -> None:
    t = config.train
    choices = {"train.schedule": (t.schedule, ("cosine", "plateau")),
               "train.balance": (t.balance, ("none", "sqrt", "inverse", "sampler")),
               "train.monitor": (t.monitor, ("accuracy", "macro_f1")),
               "train.keep": (t.keep, ("best", "last")),
               "train.precision": (t.precision, PRECISIONS),
               "model.fit": (config.model.fit, FITS)}
    for where, (value, allowed) in choices.items():
        if value not in allowed:
            raise FieldError(where, f"'{value}' is not one of {', '.join(allowed)}")
    for where, value in {"train.epochs": t.epochs, "train.batch_size": t.batch_size}.items():
        if value < 1:
            raise FieldError(where, f"must be at least 1, got {value}")
    if not t.lr > 0:
        raise FieldError("train.lr", f"must be positive, got {t.lr}")
    _check_ranges(config)
    for index, task in enumerate(config.tasks):
        _refuse_mapping_path(f"tasks[{index}].mapping", task.mapping)
    for index, source in enumerate(config.sources):
        for column, mapping in source.mappings.items():
            where = f"sources[{index}].mappings.{column}"
            _refuse_mapping_path(where, mapping)
            if not isinstance(mapping, dict):
                raise FieldError(where, f"expected a mapping of this source's values to the "
                                 f"task's, got {mapping!r}")
    _check_teacher(config)
    for where, value in {"model.height": config.model.height,
                         "model.width": config.model.width}.items():
        if value is not None and not 16 <= value <= 2048:
            raise FieldError(where, f"must be between 16 and 2048 pixels, got {value}")
    if config.model.canvases and config.model.fit == "crop":
        raise FieldError("model.canvases", "need a whole-photo fit (model.fit: letterbox or "
                         "stretch); a crop reads one square")
    for index, canvas in enumerate(config.model.canvases):
        if len(canvas) != 2 or not all(16 <= v <= 2048 for v in canvas):
            raise FieldError(f"model.canvases[{index}]", f"expected [height, width], each "
                             f"16 to 2048 pixels, got {canvas}")
    config.metric.check()
    name = config.output.name
    if name and (name in (".", "..") or any(sep in name for sep in ("/", "\\"))):
        raise FieldError("output.name", f"'{name}' must be a plain folder name (no / or \\); "
                                        "the parent folder is output.dir")


def _refuse_mapping_path(where: str, mapping: object) -> None:
    """A mapping given as a file name outside a config file (flags, overrides, `values`):
    there is no file for its path to be relative to."""
    if isinstance(mapping, str):
        raise FieldError(where, f"'{mapping}': a mapping file is named in a config file "
                                "(its path is relative to that file)")


def _check_teacher(config: RunConfig) -> None:
    """What can be told of `teacher:` before any model is read (its classes and heads are
    checked when the run starts: `training.distill`)."""
    teacher = config.teacher
    if not teacher.model:
        return
    _refuse_mapping_path("teacher.mapping", teacher.mapping)
    if not teacher.temperature > 0:
        raise FieldError("teacher.temperature", f"must be positive, got {teacher.temperature}")
    if not teacher.weight >= 0:
        raise FieldError("teacher.weight", f"must be at least 0, got {teacher.weight}")
    names = [s.name for s in config.sources]
    known = ", ".join(n for n in names if n) if names else \
        "it has no sources: leave teacher.sources empty"
    for index, name in enumerate(teacher.sources):
        if name not in names:
            raise FieldError(f"teacher.sources[{index}]",
                             f"'{name}' is not a source of this run ({known})")
    tasks = [t.name for t in config.task_configs()]
    if teacher.task and teacher.task not in tasks:
        raise FieldError("teacher.task", f"'{teacher.task}' is not a task of this run "
                                         f"({', '.join(tasks)})")


# Seeds numpy and torch both accept.
MAX_SEED = 2**32 - 1
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d{1,2})?")


def _check_ranges(config: RunConfig) -> None:
    """Bounds of the numeric fields: values the libraries would refuse mid-run (with a
    traceback) or accept and misread (a negative patience, a warm-up of -5 epochs)."""
    t, m = config.train, config.model

    def between(where: str, value, low, high, unit: str = "") -> None:
        if value is not None and not low <= value <= high:
            raise FieldError(where, f"must be between {low:g} and {high:g}{unit}, got {value}")

    def at_least(where: str, value, low) -> None:
        if value is not None and value < low:
            raise FieldError(where, f"must be at least {low:g}, got {value}")

    if not 0 <= config.seed <= MAX_SEED:
        raise FieldError("seed", f"must be a whole number from 0 to {MAX_SEED}, "
                                 f"got {config.seed}")
    between("model.image_size", m.image_size, 16, 2048, " pixels")
    between("train.train_size", t.train_size, 16, 2048, " pixels")
    for name in ("drop_rate", "drop_path_rate"):
        value = getattr(m, name)
        if not 0.0 <= value < 1.0:
            raise FieldError(f"model.{name}", f"is a probability, at least 0 and below 1; "
                                              f"got {value}")
    if not 0.0 <= t.label_smoothing < 1.0:
        raise FieldError("train.label_smoothing",
                         f"must be at least 0 and below 1, got {t.label_smoothing}")
    if not 0.0 < t.layer_decay <= 1.0:
        raise FieldError("train.layer_decay", f"must be above 0 and at most 1 (1: the same "
                                              f"rate for every layer), got {t.layer_decay}")
    at_least("train.weight_decay", t.weight_decay, 0)
    at_least("train.warmup_epochs", t.warmup_epochs, 0)
    at_least("train.early_stopping_patience", t.early_stopping_patience, 1)
    between("train.freeze_stages", t.freeze_stages, 0, 16)
    between("train.num_workers", t.num_workers, 0, 256)
    between("train.threads", t.threads, 1, 1024)
    at_least("train.probe_photos", t.probe_photos, 1)
    for index, source in enumerate(config.sources):  # a whole number: `_coerce` saw to it
        between(f"sources[{index}].refit_weight", source.refit_weight, 1, 1000)
    if t.max_minutes is not None and not t.max_minutes > 0:
        raise FieldError("train.max_minutes", f"must be positive (or null: no time budget), "
                                              f"got {t.max_minutes}")
    if t.grad_clip is not None and not t.grad_clip > 0:
        raise FieldError("train.grad_clip", f"must be positive (or null: no clipping), "
                                            f"got {t.grad_clip}")
    if not DEVICE.fullmatch(t.device or "auto"):
        raise FieldError("train.device", f"'{t.device}' is not a device; use auto, cpu, "
                                         "cuda, cuda:N or mps")
    if not 0.0 < config.data.val_fraction < 1.0:
        raise FieldError("data.val_fraction",
                         f"must be between 0 and 1, got {config.data.val_fraction}")
    problem = extension_problem(config.data.image_extension)
    if problem:
        raise FieldError("data.image_extension", problem)
    for name, reason in config.augment.problems():
        raise FieldError(f"augment.{name}", reason)

"""Refit a trained model's heads on frozen features, each head also reading the backbone's
tapped stages.

Why: a head on the pooled features alone sees what the last stage kept, "which category",
and little of the colour, print and texture the earlier stages still hold. The embedding
head of a model already taps those stages in the same backbone pass (`models.embedding`),
so a head can read them for the price of one small matrix (`models.heads`: the head's
stage term). Measured on the bundled `fashion` model's own validation photos (1,000 studio
shots, 336 street photos; AMD EPYC, the stage-2 config's 29,213 training photos): starting
from the trained heads, with the stage term at zero, 10 epochs on frozen features moved
articleType 0.840 -> 0.873, colour 0.704 -> 0.717, tags cross-fitted micro-F1 0.536 ->
0.545 (without `KEEP` below; with it articleType 0.869, colour 0.720); the same fit
without the stage term reached only 0.851 / 0.711 / 0.534, and logistic regressions
fitted from scratch on the same features scored below the trained heads (articleType
0.829 pooled, 0.857 with the stages).

How: the backbone runs once over the training and validation photos (eval view, no
augmentation; the features are cached under OUT/features and reused while the model and
photos are the same). Each named head then starts from its trained weights and stage term
(zero where it has none yet) and is fitted with its task's own loss (label smoothing, tag
weights as in training), held near where it started (an L2 pull towards it, `PULL`). On
the photos without the head's label (other kinds of photo, in a joint run) it is held to
the trained head's own answers (`KEEP`):
there nothing checks it, and a head refit on studio shots alone learned studio-only cues
that moved its answers on home photos. A head is kept only where it scores higher on
the validation photos than before; a multilabel head's thresholds (and tag cap) are tuned
again, on out-of-fold scores of its training photos (`FOLDS`), so that its validation
figures at those thresholds are held out. The first head is refit like any
other, but its posterior is part of the search vector and the "not a garment" score:
refitting it calls for re-running their calibration. Heads named in `colour_heads` also
read the photo's colour statistics through their stage term (`models.colour` has the
measurements); those are cached beside the features.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..atomic import write_json_atomic
from ..config import RunConfig
from ..data.dataset import PhotoDataset, source_of
from ..data.transforms import eval_transform
from ..errors import ConfigError, ModelError
from ..evaluation.plots import plot_confusion
from ..inference.outputs import COLOURS, FEATURES, STAGES
from ..inference.runtime import TorchRuntime, run_dataset
from ..models.artifact import load_model, save_model
from ..models.card import carry_summary
from ..models.colour import SIGNATURE
from ..models.embedding import tap_channels
from ..models.heads import (
    activate,
    add_stage_term,
    head_logits,
    head_module,
    resize_head,
    stage_term,
    term_input,
    term_inputs,
)
from ..models.info import HeadSpec, ModelInfo, fingerprint_of, task_heads
from ..models.resolve import resolve_model
from ..search.alignment import carry_alignment, valid_alignment
from ..tasks.base import Task
from .run import prepare_datasets

log = logging.getLogger(__name__)

EPOCHS = 10  # measured: articleType 0.866 after 5 epochs, 0.873 after 10, 0.872 after 20
PULL = 1e-4  # L2 weight towards the trained head (and of the stage term towards zero)
LEARNING_RATE = 1e-3
# Weight of agreeing with the trained head on photos without the head's label. Without it
# (measured, bundled `fashion`), heads learned from studio shots only gained on studio
# shots and lost on home photos: articleType read through the taxonomy 0.792 -> 0.692 on
# home photos, and 23 of 30 home dresses came out as gender "Men" (10 before).
KEEP = 1.0
BATCH = 512
# Folds of the training photos whose out-of-fold scores tune a multilabel head's thresholds
# and tag cap (`out_of_fold_scores`). Measured (bundled `fashion`, tags): thresholds tuned on
# the 336 validation photos' halves scored micro-F1 0.542 on the other halves; tuned on
# 4 / 5 / 8 folds of the 1,341 training photos, 0.550 / 0.557 / 0.551 on all 336.
FOLDS = 5
# what refit.json reports of a multilabel head's decisions on validation
DECISION_FIGURES = ("micro_f1", "micro_precision", "micro_recall", "micro_f1_crossfit",
                    "max_tags")


@dataclass
class FrozenFeatures:
    """The backbone's outputs for the readable photos of a dataset (`rows`), and their
    colour statistics where a head reads them."""

    pooled: np.ndarray
    taps: np.ndarray
    rows: np.ndarray
    colours: np.ndarray | None = None

    def side(self, head: HeadSpec | None = None, rows: np.ndarray | slice = slice(None)
             ) -> np.ndarray:
        """What a head's stage term reads: the taps, then the colour statistics for a
        head that reads them."""
        if head is None or not head.colour_statistics:
            return self.taps[rows]
        colours = None if self.colours is None else torch.as_tensor(self.colours[rows])
        return term_input(head, torch.as_tensor(self.taps[rows]), colours).numpy()


@dataclass
class HeadRefit:
    name: str
    monitor: str
    before: float
    after: float
    kept: bool
    photos: int
    # classification: the share of validation photos without this head's label on which
    # the refit head names the class the trained head named (None for multilabel)
    agreement: float | None = None
    # multilabel: the refit head's decisions on validation, its thresholds and tag cap
    # tuned on out-of-fold training scores (held out), and cross-fitted on validation
    decisions: dict | None = None

    def to_dict(self) -> dict:
        out = {"monitor": self.monitor, "before": round(self.before, 4),
               "after": round(self.after, 4), "kept": self.kept,
               "training_photos": self.photos}
        if self.agreement is not None:
            out["agreement_without_label"] = round(self.agreement, 4)
        if self.decisions is not None:
            out["decisions"] = self.decisions
        return out


@dataclass
class RefitResult:
    model_dir: Path
    heads: list[HeadRefit] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def extract_features(runtime: TorchRuntime, dataset: PhotoDataset, description: str,
                     colours: bool = False) -> FrozenFeatures:
    """Pooled features and tapped stages of every readable photo (and their colour
    statistics), in one backbone pass."""
    wanted = (FEATURES, STAGES, COLOURS) if colours else (FEATURES, STAGES)
    outputs, rows = run_dataset(runtime, dataset, wanted, description=description)
    if not len(rows):
        raise ModelError(f"{description}: no readable photo")
    return FrozenFeatures(outputs[FEATURES], outputs[STAGES], rows, outputs.get(COLOURS))


def _saved(cache: Path, key: str, names: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    if not cache.is_file():
        return None
    with np.load(cache) as saved:
        if str(saved["key"]) != key or any(n not in saved.files for n in names):
            return None
        return {n: saved[n] for n in names}


def _save(cache: Path, key: str, **arrays: np.ndarray) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_name(f".{cache.name}.partial.npz")
    np.savez(partial, key=key, **arrays)
    partial.replace(cache)


def cached_features(runtime: TorchRuntime, dataset: PhotoDataset, description: str,
                    cache: Path, model_key: str, colours: bool = False) -> FrozenFeatures:
    """`extract_features`, read back from `cache` when the same model saw the same photos.
    The colour statistics are kept beside it (CACHE-colours.npz): they depend on the
    photos and their pre-processing only, so adding them later costs no backbone pass."""
    paths = "\n".join(str(s.path) for s in dataset.samples)
    key = hashlib.sha256(f"{model_key}\n{paths}".encode()).hexdigest()
    colour_cache = cache.with_name(f"{cache.stem}-colours.npz")
    colour_key = hashlib.sha256(f"{SIGNATURE}|{runtime.preprocess!r}\n{paths}"
                                .encode()).hexdigest()
    saved = _saved(cache, key, ("pooled", "taps", "rows"))
    if saved is None:
        features = extract_features(runtime, dataset, description, colours)
        _save(cache, key, pooled=features.pooled, taps=features.taps, rows=features.rows)
        if features.colours is not None:
            _save(colour_cache, colour_key, colours=features.colours, rows=features.rows)
        return features
    log.info("%s: features read from %s", description, cache)
    features = FrozenFeatures(saved["pooled"], saved["taps"], saved["rows"])
    if colours:
        kept = _saved(colour_cache, colour_key, ("colours", "rows"))
        if kept is None:
            outputs, rows = run_dataset(runtime, dataset, (COLOURS,),
                                        description=f"{description}, colours")
            kept = {"colours": outputs[COLOURS], "rows": rows}
            _save(colour_cache, colour_key, **kept)
        if not np.array_equal(kept["rows"], features.rows):
            raise ModelError(f"{cache}: other photos were readable when the features were "
                             "extracted than now; delete the folder and run again")
        features.colours = kept["colours"]
    return features


def fit_head(task: Task, weight: torch.Tensor, bias: torch.Tensor, pooled: np.ndarray,
             taps: np.ndarray, targets: np.ndarray, epochs: int = EPOCHS, pull: float = PULL,
             seed: int = 0, unlabelled: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
             keep: float = KEEP, stage_weight: torch.Tensor | None = None,
             repeats: np.ndarray | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(weight, bias, stage weight) of a head fitted on frozen features with its task's
    loss, from its trained weights and stage term (`stage_weight`, as the model applies it
    to the raw taps; zero where the head has none yet).

    `unlabelled`: (pooled, taps, the trained head's scores) of photos without this head's
    label; the fitted head is held to those answers (weight `keep`), so that it does not
    change what it says on kinds of photo it cannot be checked on. `repeats`: how many
    times each row counts (its source's `refit_weight`). The stage term reads
    the taps standardised (their scales differ by stage); the standardisation is folded
    into the returned weight and bias, so the model applies it to the raw taps."""
    generator = torch.Generator().manual_seed(seed)
    x_pooled = torch.as_tensor(pooled, dtype=torch.float32)
    raw_taps = torch.as_tensor(taps, dtype=torch.float32)
    mean, std = raw_taps.mean(0), raw_taps.std(0).clamp_min(1e-6)
    x_taps = (raw_taps - mean) / std
    y = torch.as_tensor(targets)
    others = None
    if unlabelled is not None and len(unlabelled[0]) and keep > 0:
        others = (torch.as_tensor(unlabelled[0], dtype=torch.float32),
                  (torch.as_tensor(unlabelled[1], dtype=torch.float32) - mean) / std,
                  torch.as_tensor(unlabelled[2], dtype=torch.float32))
    start_w, start_b = weight.detach().float().clone(), bias.detach().float().clone()
    start_taps = torch.zeros(len(start_b), x_taps.shape[1])
    if stage_weight is not None:  # the same term on standardised taps: raw = std * x + mean
        start_taps = stage_weight.detach().float() * std
        start_b = start_b + stage_weight.detach().float() @ mean
    w, b = start_w.clone().requires_grad_(), start_b.clone().requires_grad_()
    w_taps = start_taps.clone().requires_grad_()
    optimizer = torch.optim.Adam([w, b, w_taps], lr=LEARNING_RATE)
    index = torch.arange(len(y))
    if repeats is not None:
        index = torch.repeat_interleave(index, torch.as_tensor(repeats, dtype=torch.long))
    for _ in range(epochs):
        order = index[torch.randperm(len(index), generator=generator)]
        for start in range(0, len(order), BATCH):
            rows = order[start:start + BATCH]
            logits = x_pooled[rows] @ w.T + b + x_taps[rows] @ w_taps.T
            loss = (task.loss(logits, y[rows]) + pull * ((w - start_w) ** 2).sum()
                    + pull * ((w_taps - start_taps) ** 2).sum())
            if others is not None:
                drawn = torch.randint(len(others[0]), (BATCH,), generator=generator)
                kept = others[0][drawn] @ w.T + b + others[1][drawn] @ w_taps.T
                loss = loss + keep * _agreement_loss(task, kept, others[2][drawn])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        folded = w_taps / std
        return w.detach(), (b - folded @ mean).detach(), folded.detach()


def out_of_fold_scores(task: Task, weight: torch.Tensor, bias: torch.Tensor,
                       pooled: np.ndarray, taps: np.ndarray, targets: np.ndarray, *,
                       folds: int = FOLDS, seed: int = 0, repeats: np.ndarray | None = None,
                       **fit_options) -> np.ndarray:
    """Each training photo's scores from the head fitted (`fit_head`) without it, in
    `folds` folds: photos to tune decision thresholds on that the figures are not read
    on, four times as many as the validation photos in the bundled model's case."""
    order = np.random.default_rng(seed).permutation(len(targets))
    scores = np.zeros(targets.shape, np.float32)
    spec = task.head_spec()
    for fold in range(folds):
        held = np.sort(order[fold::folds])
        fitted = np.setdiff1d(order, held)
        w, b, w_taps = fit_head(task, weight, bias, pooled[fitted], taps[fitted],
                                targets[fitted], seed=seed, repeats=None if repeats is None
                                else repeats[fitted], **fit_options)
        with torch.no_grad():
            logits = (torch.as_tensor(pooled[held]) @ w.T + b
                      + torch.as_tensor(taps[held]) @ w_taps.T)
        scores[held] = activate(spec, logits).numpy()
    return scores


def source_weights(config: RunConfig) -> np.ndarray:
    """Each source's `refit_weight`, by source index (one weight of 1 without sources)."""
    return np.array([s.refit_weight for s in config.sources] or [1], dtype=np.int64)


def balanced_rows(sources: np.ndarray, seed: int = 0) -> np.ndarray:
    """As many rows of each source as the smallest has (a seeded draw), so that tuning
    pools every kind of photo alike. Measured (bundled `fashion`, tags learned from
    street photos and the one-garment home and studio photos): thresholds tuned on all
    out-of-fold scores, 20,795 studio rows among 24,964, gave street photos micro-F1 0.509
    (cap 5 tags); on 1,341 rows of each source, 0.542 (studio 0.923, home 0.884)."""
    rng = np.random.default_rng(seed)
    kinds, counts = np.unique(sources, return_counts=True)
    keep = np.zeros(len(sources), bool)
    for kind in kinds:
        where = np.flatnonzero(sources == kind)
        keep[rng.choice(where, counts.min(), replace=False)] = True
    return keep


def _rounded(value: object) -> object:
    return round(value, 4) if isinstance(value, float) else value


def _agreement_loss(task: Task, logits: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against the trained head's own scores (soft targets)."""
    if task.kind == "multilabel":
        return F.binary_cross_entropy_with_logits(logits, scores)
    return -(scores * logits.log_softmax(-1)).sum(-1).mean()


def _validation_figures(task: Task, logits: torch.Tensor, targets: np.ndarray) -> dict:
    """The task's figures on validation, thresholds tuned there first (multilabel), as a
    training run's final evaluation does."""
    scores = activate(task.head_spec(), logits).numpy()
    task.tune(scores, targets)
    return task.metrics(scores, targets)


def _check_tasks(info: ModelInfo, tasks: list[Task], names: list[str], where: str,
                 add_classes: bool = False) -> dict[str, list[int]]:
    """Refuse heads the config cannot refit. Returns, for each head whose task has classes
    the head lacks (allowed with `add_classes`), where its classes sit among the task's."""
    heads = {h.name: h for h in task_heads(info.heads)}
    first = next(iter(heads), None)
    by_name = {t.name: t for t in tasks}
    grown: dict[str, list[int]] = {}
    for name in names:
        if name not in heads:
            raise ConfigError(f"--heads {name}: the model has no such head (it has: "
                              f"{', '.join(heads)})")
        if name not in by_name:
            raise ConfigError(f"{where}: no task named '{name}' (the config's tasks: "
                              f"{', '.join(by_name)})")
        if by_name[name].kind != heads[name].kind:
            raise ConfigError(f"{where}: task '{name}' is {by_name[name].kind}, the model's "
                              f"head {heads[name].kind}")
        wanted, has = list(by_name[name].classes), list(heads[name].classes)
        if wanted == has:
            continue
        missing = [c for c in has if c not in wanted]
        if not add_classes or missing or by_name[name].kind != "classification":
            hint = (f" (missing from the config: {', '.join(missing[:5])})" if missing else
                    "; --add-classes lets a classification head learn the new ones")
            raise ConfigError(f"{where}: task '{name}' has other classes than the model's "
                              f"head of that name ({len(wanted)} against {len(has)}): not "
                              f"the data it was trained on{hint}")
        if name == first:  # its posterior is part of the search vector
            raise ConfigError(f"--add-classes: '{name}' is the model's first head, whose "
                              "classes the search vector and the \"not a garment\" score "
                              "are built on; it cannot gain classes in a refit")
        grown[name] = [wanted.index(c) for c in has]
    return grown


def _widen(values: torch.Tensor, positions: list[int], classes: int, fill: float
           ) -> torch.Tensor:
    """`values` (one row per class of the head as trained) at `positions` among `classes`
    rows, `fill` in the rows of the classes it did not have."""
    widened = values.new_full((classes, *values.shape[1:]), fill)
    widened[positions] = values
    return widened


def _prior_bias(bias: torch.Tensor, positions: list[int], targets: np.ndarray,
                classes: int) -> torch.Tensor:
    """A grown head's starting bias: the trained biases kept, each new class at the log of
    its share of the training photos on the same footing (the trained biases' median
    offset from their own classes' log shares)."""
    counts = np.bincount(targets[targets >= 0], minlength=classes).astype(np.float64) + 1.0
    log_share = torch.as_tensor(np.log(counts / counts.sum()), dtype=bias.dtype)
    offset = (bias - log_share[positions]).median()
    widened = log_share + offset
    widened[positions] = bias
    return widened


def _starting_term(network: torch.nn.Module, name: str, width: int) -> torch.Tensor | None:
    """The head's stage term to go on from (a head refit before), widened with zeros
    where it now reads colour statistics too; None where it has none."""
    term = stage_term(network, name)
    if term is None:
        return None
    weight = term.weight.detach()
    if weight.shape[1] > width:
        raise ModelError(f"head '{name}': its stage term reads {weight.shape[1]} numbers, "
                         f"more than the {width} it is given")
    return F.pad(weight, (0, width - weight.shape[1]))


def refit_heads(model: str | Path, config: RunConfig, names: list[str], out: Path, *,
                config_path: Path | None = None, epochs: int = EPOCHS, keep: float = KEEP,
                seed: int = 0, colour_heads: Sequence[str] = (), add_classes: bool = False,
                report: Callable[[str], None] = log.info) -> RefitResult:
    """Refit the named heads of `model` on the photos `config` (read from `config_path`)
    trains and validates on; write the model with the heads that scored higher to
    OUT/model and what was measured to OUT/refit.json. The heads in `colour_heads` also
    read the photos' colour statistics (`models.colour`); a head that read them before
    goes on reading them. With `add_classes`, a classification head (not the first) whose
    task has classes it lacks gains them: e.g. the studio heads of a model trained on
    garments alone learning the catalogue's cosmetics too, which its "not a garment"
    score (first head and search vector, untouched) still refuses."""
    started = time.perf_counter()
    ref = resolve_model(model)
    if ref.folder is None:
        raise ModelError(f"{model}: a trained model folder is needed, not a bare backbone")
    network, info = load_model(ref.folder)
    channels = tap_channels(network)
    if channels < 1:
        raise ModelError(f"{ref.folder}: the model taps no backbone stages (its embedding "
                         "head declares no taps): train its search vector with "
                         "`metric.stage_taps` first")
    where = str(config_path or "the config")
    # one pass over the photos (or none, with cached features): nothing to hold in memory
    config = copy.deepcopy(config)
    config.train.cache_images = False
    prepared = prepare_datasets(config, info.preprocess, config.seed)
    grown = _check_tasks(info, prepared.tasks, names, where, add_classes)
    strange = [h for h in colour_heads if h not in names]
    if strange:
        raise ConfigError(f"--colour-statistics {strange[0]}: not among the heads refit "
                          f"(--heads {','.join(names)})")
    heads = {h.name: h for h in info.heads}
    reading = {n: dataclasses.replace(heads[n], taps=True, colour_statistics=(
        n in colour_heads or heads[n].colour_statistics)) for n in names}
    colours = any(h.colour_statistics for h in reading.values())
    tasks = {t.name: t for t in prepared.tasks}
    view = eval_transform(info.preprocess)
    # the weights and how photos become inputs (model.json's preprocess can change alone)
    model_key = f"{fingerprint_of(ref.folder, info)}|{info.preprocess!r}"
    runtime = TorchRuntime(network, info.preprocess, info=info, precision="fp32")
    train = cached_features(runtime, prepared.train_ds.with_transform(view),
                            "features (training photos)", out / "features" / "train.npz",
                            model_key, colours)
    val = cached_features(runtime, prepared.val_ds.with_transform(view),
                          "features (validation photos)", out / "features" / "validation.npz",
                          model_key, colours)
    extracted = time.perf_counter()
    result = RefitResult(model_dir=out / "model")
    repeats = source_weights(config)[source_of(prepared.train_ds, train.rows)]
    val_colours = None if val.colours is None else torch.as_tensor(val.colours)
    for name in names:
        task = tasks[name]
        task.prepare(prepared.train_targets[name][train.rows], config.train, torch.device("cpu"))
        train_targets = prepared.train_targets[name][train.rows]
        val_targets = prepared.val_targets[name][val.rows]
        fit_rows = task.present(train_targets)
        if not fit_rows.any() or not task.present(val_targets).any():
            report(f"{name}: no training or validation photo carries it; left as it was")
            continue
        module = head_module(network, info.heads, name)
        other_rows = ~fit_rows
        side_spec = reading[name]
        start_term = _starting_term(network, name, term_inputs(side_spec, channels))
        start_weight, start_bias = module.weight.detach(), module.bias.detach()
        with torch.no_grad():
            pooled_val = torch.as_tensor(val.pooled)
            before_logits = head_logits(network, info.heads, pooled_val, [name],
                                        taps=torch.as_tensor(val.taps),
                                        colours=val_colours)[name]
            trained = activate(heads[name], head_logits(
                network, info.heads, torch.as_tensor(train.pooled[other_rows]), [name],
                taps=torch.as_tensor(train.taps[other_rows]),
                colours=None if train.colours is None
                else torch.as_tensor(train.colours[other_rows]))[name])
        positions = grown.get(name)
        if positions is not None:  # new classes: never named by the head as trained
            width = len(task.classes)
            before_logits = _widen(before_logits.T, positions, width, -30.0).T
            trained = _widen(trained.T, positions, width, 0.0).T
            start_weight = _widen(start_weight, positions, width, 0.0)
            start_bias = _prior_bias(start_bias, positions, train_targets[fit_rows], width)
            if start_term is not None:
                start_term = _widen(start_term, positions, width, 0.0)
            report(f"{name}: {width - len(positions)} new classes ("
                   f"{', '.join(c for i, c in enumerate(task.classes) if i not in positions)})")
        before = float(_validation_figures(task, before_logits, val_targets)[task.monitor])
        unlabelled = (train.pooled[other_rows], train.side(side_spec, other_rows),
                      trained.numpy())
        fit_options = {"epochs": epochs, "unlabelled": unlabelled, "keep": keep,
                       "stage_weight": start_term, "repeats": repeats[fit_rows]}
        weight, bias, tap_weight = fit_head(
            task, start_weight, start_bias, train.pooled[fit_rows],
            train.side(side_spec, fit_rows), train_targets[fit_rows], seed=seed,
            **fit_options)
        with torch.no_grad():
            after_logits = (pooled_val @ weight.T + bias
                            + torch.as_tensor(val.side(side_spec)) @ tap_weight.T)
        if task.tunes_thresholds:
            # thresholds from photos the validation figures are not read on, each source
            # counting the same
            scores = out_of_fold_scores(
                task, start_weight, start_bias, train.pooled[fit_rows],
                train.side(side_spec, fit_rows), train_targets[fit_rows], seed=seed,
                **fit_options)
            even = balanced_rows(source_of(prepared.train_ds, train.rows[fit_rows]), seed)
            task.tune(scores[even], train_targets[fit_rows][even])
            figures = task.metrics(activate(heads[name], after_logits).numpy(), val_targets)
            decisions = {"thresholds_from": f"out-of-fold training scores ({FOLDS} folds, "
                                            f"{int(even.sum())} photos, each source alike)",
                         **{k: _rounded(figures.get(k)) for k in DECISION_FIGURES}}
        else:
            decisions = None
            figures = _validation_figures(task, after_logits, val_targets)
        after = float(figures[task.monitor])
        kept = after > before
        unchecked = ~task.present(val_targets)
        agreement = None
        if task.kind == "classification" and unchecked.any():
            agreement = float((after_logits[unchecked].argmax(-1)
                               == before_logits[unchecked].argmax(-1)).float().mean())
        result.heads.append(HeadRefit(name, task.monitor, before, after, kept,
                                      int(fit_rows.sum()), agreement, decisions))
        same = "" if agreement is None else (f"; same class as before on {agreement:.1%} of "
                                             f"the {int(unchecked.sum())} without the label")
        report(f"{name}: validation {task.monitor.replace('_', '-')} {before:.4f} -> "
               f"{after:.4f}{same}: {'refit kept' if kept else 'trained head kept'}")
        if not kept:
            continue
        if positions is not None:
            module = resize_head(network, info.heads, name, len(bias))
        with torch.no_grad():
            module.weight.copy_(weight)
            module.bias.copy_(bias)
            add_stage_term(network, name, term_inputs(side_spec, channels),
                           len(bias)).weight.copy_(tap_weight)
        spec = task.head_spec()  # with the thresholds (and tag cap) tuned just now
        spec.taps, spec.colour_statistics = True, side_spec.colour_statistics
        info.heads = [spec if h.name == name else h for h in info.heads]
        if isinstance(info.metrics.get("tasks"), dict):
            info.metrics["tasks"][name] = figures
        if isinstance(info.metrics.get("summary"), dict):
            info.metrics["summary"][name] = {k: figures.get(k) for k in task.headline}
        if "confusion_matrix" in figures:  # as a training run draws it, for the refit head
            plot_confusion(figures["confusion_matrix"], figures["classes"],
                           out / f"confusion-{name}.png",
                           title=f"{name} after refit (accuracy {figures['accuracy']:.3f})")
    summary = {
        "model": str(ref.folder), "config": str(config_path or ""), "epochs": epochs,
        "pull": PULL, "keep": keep, "learning_rate": LEARNING_RATE,
        "training_photos": int(len(train.rows)), "validation_photos": int(len(val.rows)),
        "colour_statistics": [n for n in names if reading[n].colour_statistics],
        "refit_weights": {s.name: s.refit_weight for s in config.sources if s.refit_weight != 1},
        "heads": {h.name: h.to_dict() for h in result.heads},
        "seconds": {"features": round(extracted - started, 1),
                    "fitting": round(time.perf_counter() - extracted, 1)},
    }
    if isinstance(info.metrics, dict):
        # the mean over heads was the training run's and mixes both now: not restated
        if isinstance(info.metrics.get("summary"), dict):
            info.metrics["summary"].pop("score", None)
        info.metrics.setdefault("refit", {}).update({h.name: h.to_dict() for h in result.heads})
    alignment = valid_alignment(ref.folder)
    save_model(network, info, out / "model")
    carry_summary(ref.folder, out / "model")
    # the refit leaves the search vectors as they were: words still find the same photos
    summary["text_alignment_carried"] = carry_alignment(alignment, out / "model")
    write_json_atomic(out / "refit.json", summary)
    result.seconds = summary["seconds"]
    if not math.isfinite(sum(h.after for h in result.heads)):
        log.warning("a refit head scored no finite figure; see %s", out / "refit.json")
    return result

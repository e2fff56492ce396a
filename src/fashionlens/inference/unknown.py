""""Not a garment" rejection: one score per photo, from outputs every runtime gives.

A model may declare in `model.json` how to tell photos it was not made for (a watch, a
perfume bottle, a landscape, a chart) from the garments it knows:

```json
"unknown": {"method": "head", "head": "label", "threshold": 0.975,
            "parameters": {"features": ["vector", "msp", "prototype"], "mean": [...],
                           "std": [...], "weights": [...], "bias": -1.3,
                           "prototypes": [[...], ...]},
            "calibration": {...figures measured when it was fitted...}}
```

Every method is the same two steps, so that one NumPy function applies them all (the
CLI, the service, the catalog; PyTorch, ONNX Runtime or OpenVINO alike):

1. raw features of a photo, computed from the first classification head's probabilities
   and/or the unit search `vector`: `msp` (1 - the top probability), `entropy` (of the
   probabilities, divided by its maximum), `prototype` (1 - the cosine to the nearest
   class prototype: the mean search vector of the reference photos the model puts in that
   class), `mahalanobis` (distance to the nearest class mean under the shared, shrunk
   within-class covariance, in its principal directions), `vector` (the search vector
   itself: with it the logistic model below is a small rejection head);
2. a logistic model of those features (weights fitted on garments against other photos),
   giving `unknown_score` in 0-1 (higher = less like a garment the model knows).

A photo is `unknown` when its score is at or above `threshold`, chosen when calibrating so
that at most a given share of garment photos the fit did not see are refused. A model
without the entry gives None for both: no score rather than a made-up one. Calibration
(`fit_scorer`, scikit-learn, the `train` extra) lives here too; `fashionlens
calibrate-unknown` and `benchmarks/unknown.py` drive it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import FashionLensError, ModelError
from ..models.info import ModelInfo
from .outputs import VECTOR, normalise

# Raw features and what each one needs from the runtime. `vector` is the unit search
# vector itself (one column per dimension): with it the logistic model is a small
# rejection head on the model's embedding.
FEATURES = {"msp": "probabilities", "entropy": "probabilities", "prototype": "vector",
            "mahalanobis": "vector", "vector": "vector"}
# Methods: the raw features a method's logistic model reads.
METHODS: dict[str, tuple[str, ...]] = {
    "msp": ("msp",),
    "entropy": ("entropy",),
    "prototype": ("prototype",),
    "mahalanobis": ("mahalanobis",),
    "combined": ("msp", "entropy", "prototype"),
    "head": ("vector", "msp", "prototype"),
}
# L2 strength of each method's logistic model (scikit-learn's C, on standardised
# features): the head's hundreds of weights need it; a few scores need next to none.
STRENGTH = {"head": 0.1}
# smallest spread a feature column is scaled by (model.json keeps 8 decimals)
STD_FLOOR = 1e-6
MAHALANOBIS_RANK = 128  # principal directions kept: bounds what model.json stores
DEFAULT_MAX_FALSE_REJECTION = 0.02


class CalibrationError(FashionLensError):
    """Calibration cannot be done with the photos given."""


# --- the scorer ------------------------------------------------------------------------


@dataclass
class UnknownSpec:
    """The `unknown` entry of model.json."""

    method: str
    threshold: float
    parameters: dict
    head: str | None = None  # the classification head whose probabilities it reads
    calibration: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"method": self.method, "head": self.head, "threshold": round(self.threshold, 6),
                "parameters": self.parameters, "calibration": self.calibration}

    @classmethod
    def from_dict(cls, data: object, source: str = "model.json") -> UnknownSpec:
        where = f"{source}: field 'unknown'"
        if not isinstance(data, Mapping):
            raise ModelError(f"{where} must be a mapping, got {type(data).__name__}")
        try:
            spec = cls(method=str(data["method"]), threshold=float(data["threshold"]),
                       parameters=dict(data["parameters"]), head=data.get("head"),
                       calibration=dict(data.get("calibration") or {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{where} is malformed ({exc!r})") from exc
        if spec.method not in METHODS:
            raise ModelError(f"{where}: unknown method '{spec.method}' (known: "
                             f"{', '.join(METHODS)})")
        if not 0.0 <= spec.threshold <= 1.0 or not math.isfinite(spec.threshold):
            raise ModelError(f"{where}: threshold {spec.threshold} is not in 0-1")
        return spec


def _array(parameters: Mapping, name: str, where: str, ndim: int) -> np.ndarray:
    try:
        values = np.asarray(parameters[name], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{where}: parameter '{name}' is missing or not numbers") from exc
    if values.ndim != ndim or not np.isfinite(values).all():
        raise ModelError(f"{where}: parameter '{name}' must be a finite {ndim}-d array")
    return values


class UnknownScorer:
    """Applies an `UnknownSpec` to a batch of runtime outputs (NumPy only)."""

    def __init__(self, spec: UnknownSpec, where: str = "model.json") -> None:
        self.spec = spec
        where = f"{where}: field 'unknown'"
        params = spec.parameters
        self.features: tuple[str, ...] = tuple(params.get("features") or METHODS[spec.method])
        bad = [f for f in self.features if f not in FEATURES]
        if bad:
            raise ModelError(f"{where}: unknown feature(s) {', '.join(bad)}")
        self.mean = _array(params, "mean", where, 1)
        self.std = _array(params, "std", where, 1)
        # a scorer stored before STD_FLOOR may hold 0 for a column that never varied
        self.std = np.where(self.std > 0, self.std, 1.0)
        self.weights = _array(params, "weights", where, 1)
        self.bias = float(params.get("bias", 0.0))
        self.where = where
        if not len(self.mean) == len(self.std) == len(self.weights):
            raise ModelError(f"{where}: mean, std and weights need one value per feature")
        self.prototypes = (normalise(_array(params, "prototypes", where, 2))
                           if "prototype" in self.features else None)
        self.centres = self.projection = None
        if "mahalanobis" in self.features:
            self.projection = _array(params, "projection", where, 2)
            self.centres = _array(params, "centres", where, 2)
        self.needs_vector = any(FEATURES[f] == "vector" for f in self.features)
        self.needs_probabilities = any(FEATURES[f] == "probabilities" for f in self.features)

    @property
    def threshold(self) -> float:
        return self.spec.threshold

    @property
    def outputs(self) -> list[str]:
        """The runtime outputs it reads: a head's name and/or `vector`."""
        wanted = []
        if self.needs_probabilities:
            if not self.spec.head:
                raise ModelError("model.json: field 'unknown' names no head to read")
            wanted.append(self.spec.head)
        if self.needs_vector:
            wanted.append(VECTOR)
        return wanted

    def score_outputs(self, outputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Scores (0-1) for a batch, from named outputs (head name -> probabilities,
        `vector`), as a runtime's `run` gives them."""
        probabilities = outputs.get(self.spec.head) if self.spec.head else None
        return self.score(probabilities, outputs.get(VECTOR))

    def score(self, probabilities: np.ndarray | None, vectors: np.ndarray | None
              ) -> np.ndarray:
        raw = raw_features(self.features, probabilities, vectors, self.prototypes,
                           self.projection, self.centres)
        if raw.shape[-1] != len(self.weights):
            raise ModelError(f"{self.where}: the scorer has {len(self.weights)} weights but "
                             f"this model's outputs give {raw.shape[-1]} features (was it "
                             "calibrated for another model?)")
        z = (raw - self.mean) / self.std
        return _sigmoid(z @ self.weights + self.bias)

    def decide(self, scores: np.ndarray | float, threshold: float | None = None):
        """Whether each score is at or above the threshold (the model's unless given)."""
        return np.asarray(scores) >= (self.threshold if threshold is None else threshold)


def vector_scorer(entry: Mapping) -> bool:
    """Whether a model.json `unknown` entry reads the search vector (so a new embedding
    makes it wrong), as opposed to the class probabilities only."""
    parameters = entry.get("parameters") or {}
    names = parameters.get("features") or METHODS.get(entry.get("method"), ())
    return any(FEATURES.get(n) == "vector" for n in names)


def scorer_for(info: ModelInfo, where: str = "model.json") -> UnknownScorer | None:
    """The model's scorer, or None when it was never calibrated."""
    data = getattr(info, "unknown", None)
    if not data:
        return None
    return UnknownScorer(UnknownSpec.from_dict(data, where), where)


def answer(scorer: UnknownScorer | None, score: float | None,
           threshold: float | None = None) -> dict:
    """The public fields: `unknown_score` and `unknown` (None for an uncalibrated model)."""
    if scorer is None or score is None:
        return {"unknown_score": None, "unknown": None}
    return {"unknown_score": round(float(score), 6),
            "unknown": bool(scorer.decide(score, threshold))}


def check_threshold(value: float | None, flag: str = "--unknown-threshold") -> float | None:
    if value is not None and (not math.isfinite(value) or not 0.0 <= value <= 1.0):
        raise FashionLensError(f"{flag} {value}: must be between 0 and 1")
    return value


# --- raw features --------------------------------------------------------------------


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def raw_features(names: Sequence[str], probabilities: np.ndarray | None,
                 vectors: np.ndarray | None, prototypes: np.ndarray | None = None,
                 projection: np.ndarray | None = None, centres: np.ndarray | None = None
                 ) -> np.ndarray:
    """N x F raw features: one column per score (each higher for a less familiar photo),
    D columns for `vector`."""
    columns = []
    for name in names:
        if FEATURES[name] == "probabilities":
            if probabilities is None:
                raise ModelError(f"unknown-score feature '{name}' needs the class "
                                 "probabilities, which this runtime did not give")
            p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-12, 1.0)
            p = p / p.sum(-1, keepdims=True)
            if name == "msp":
                columns.append(1.0 - p.max(-1))
            else:
                columns.append(-(p * np.log(p)).sum(-1) / math.log(max(p.shape[-1], 2)))
            continue
        if vectors is None:
            raise ModelError(f"unknown-score feature '{name}' needs the search vector, "
                             "which this runtime did not give")
        v = normalise(vectors).astype(np.float64)
        if name == "vector":
            columns.append(v)
        elif name == "prototype":
            _same_width(name, prototypes.shape[1], v)
            columns.append(1.0 - (v @ prototypes.T).max(-1))
        else:  # mahalanobis: nearest class centre in the whitened low-rank space
            _same_width(name, projection.shape[0], v)
            w = v @ projection
            d = ((w[:, None, :] - centres[None]) ** 2).sum(-1)
            columns.append(np.sqrt(d.min(-1)))
    columns = [c if c.ndim == 2 else c[:, None] for c in columns]
    return np.hstack(columns) if columns else np.zeros((0, 0))


def _same_width(name: str, fitted: int, vectors: np.ndarray) -> None:
    """A feature fitted on vectors of another size: the model's embedding changed since."""
    if fitted != vectors.shape[1]:
        raise ModelError(f"unknown-score feature '{name}' was fitted on {fitted}-d search "
                         f"vectors, but this model gives {vectors.shape[1]}-d ones (its "
                         "embedding changed): run calibrate-unknown again")


# --- calibration -----------------------------------------------------------------------
# Training-side: scikit-learn (the `train` extra) is imported inside these functions.


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """Area under the ROC curve of telling out- (positive) from in-distribution photos
    by score: the chance a random other photo scores above a random garment."""
    from sklearn.metrics import roc_auc_score

    a, b = np.asarray(in_scores, float), np.asarray(out_scores, float)
    if not len(a) or not len(b):
        return float("nan")
    return float(roc_auc_score(np.r_[np.zeros(len(a)), np.ones(len(b))], np.r_[a, b]))


def threshold_for(in_scores: np.ndarray, max_false_rejection: float) -> float:
    """The lowest threshold at which at most `max_false_rejection` of the in-distribution
    scores are at or above it."""
    s = np.sort(np.asarray(in_scores, float))
    if not len(s):
        raise CalibrationError("no in-distribution photo to choose a threshold on")
    allowed = int(math.floor(max_false_rejection * len(s) + 1e-9))
    if allowed >= len(s):
        return 0.0
    return float(min(1.0, np.nextafter(s[len(s) - allowed - 1], np.inf)))


def threshold_for_kinds(in_scores: Mapping[str, np.ndarray], max_false_rejection: float
                        ) -> tuple[float, str]:
    """The lowest threshold at which every kind of garment photo (home photos, studio
    shots, people...) keeps its own false rejection within `max_false_rejection`, and the
    kind that decided it: a threshold read off the pooled photos would let the most
    numerous kind hide a kind it refuses far more often."""
    if not in_scores:
        raise CalibrationError("no in-distribution photo to choose a threshold on")
    empty = [k for k, s in in_scores.items() if not len(s)]
    if empty:
        raise CalibrationError(f"no garment photo of kind {', '.join(empty)} to choose the "
                               "threshold on")
    each = {k: threshold_for(s, max_false_rejection) for k, s in in_scores.items()}
    worst = max(each, key=lambda k: each[k])
    return each[worst], worst


def class_prototypes(probabilities: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """One unit mean vector per class, of the photos the model puts in that class (no
    labels needed; a class no photo falls in takes its most probable photos)."""
    v = normalise(vectors)
    predicted = probabilities.argmax(-1)
    rows = []
    for c in range(probabilities.shape[1]):
        members = v[predicted == c]
        if not len(members):
            members = v[np.argsort(-probabilities[:, c])[:5]]
        rows.append(members.mean(0))
    return normalise(np.stack(rows))


def whitening(probabilities: np.ndarray, vectors: np.ndarray, rank: int = MAHALANOBIS_RANK
              ) -> tuple[np.ndarray, np.ndarray]:
    """A projection (D x r) under which Euclidean distance is the Mahalanobis distance of
    the shared within-class covariance (Ledoit-Wolf shrunk, in the `rank` principal
    directions of the within-class spread), and the class centres in it (C x r)."""
    from sklearn.covariance import LedoitWolf

    v = normalise(vectors).astype(np.float64)
    predicted = probabilities.argmax(-1)
    means = np.stack([v[predicted == c].mean(0) if (predicted == c).any() else v.mean(0)
                      for c in range(probabilities.shape[1])])
    centred = v - means[predicted]
    _, _, vt = np.linalg.svd(centred - centred.mean(0), full_matrices=False)
    basis = vt[:min(rank, len(vt))].T
    precision = LedoitWolf().fit(centred @ basis).precision_
    projection = basis @ np.linalg.cholesky(precision)
    return projection, means @ projection


def fit_logistic(x: np.ndarray, y: np.ndarray, strength: float = 10.0
                 ) -> tuple[np.ndarray, float]:
    """Class-balanced logistic regression (weights, bias): garments and other photos count
    alike however many of each there are."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(class_weight="balanced", C=strength, max_iter=3000)
    model.fit(x, y)
    return model.coef_[0].astype(float), float(model.intercept_[0])


@dataclass
class Outputs:
    """The runtime outputs of a set of photos that calibration needs."""

    probabilities: np.ndarray  # N x C (the scored head)
    vectors: np.ndarray | None  # N x D unit vectors
    paths: list[str] = field(default_factory=list)

    def take(self, rows: np.ndarray | list[int]) -> Outputs:
        rows = np.asarray(rows, dtype=np.int64)
        return Outputs(self.probabilities[rows],
                       None if self.vectors is None else self.vectors[rows],
                       [self.paths[i] for i in rows])

    def __len__(self) -> int:
        return len(self.probabilities)


def concat(parts: Iterable[Outputs]) -> Outputs:
    parts = [p for p in parts if len(p)]
    if not parts:
        raise CalibrationError("no photo could be read")
    return Outputs(np.concatenate([p.probabilities for p in parts]),
                   None if any(p.vectors is None for p in parts)
                   else np.concatenate([p.vectors for p in parts]),
                   [path for p in parts for path in p.paths])


Garments = Outputs | Mapping[str, Outputs]  # one set, or one per kind of photo


def pooled(garments: Garments) -> Outputs:
    """Every kind's photos as one set (the set itself when there are no kinds)."""
    return concat(garments.values()) if isinstance(garments, Mapping) else garments


def build_spec(method: str, reference: Outputs, in_fit: Outputs, out_fit: Outputs,
               in_threshold: Garments, head: str, max_false_rejection: float) -> UnknownSpec:
    """Fit one method: prototypes / whitening on `reference` garments, the logistic
    weights on `in_fit` garments against `out_fit` other photos, the threshold on
    `in_threshold` garments (photos neither of the others holds; given per kind, the
    threshold keeps every kind's false rejection within the bound)."""
    features = METHODS[method]
    params: dict = {"features": list(features)}
    prototypes = projection = centres = None
    if any(FEATURES[f] == "vector" for f in features) and reference.vectors is None:
        raise CalibrationError(f"method '{method}' needs the search vector; the model "
                               "gives none")
    if "prototype" in features:
        params["prototypes"] = np.round(class_prototypes(
            reference.probabilities, reference.vectors).astype(np.float64), 5).tolist()
        prototypes = normalise(np.asarray(params["prototypes"]))
    if "mahalanobis" in features:
        projection, centres = whitening(reference.probabilities, reference.vectors)
        params["projection"] = np.round(projection.astype(np.float64), 5).tolist()
        params["centres"] = np.round(centres.astype(np.float64), 5).tolist()
        projection = np.asarray(params["projection"])
        centres = np.asarray(params["centres"])

    def raw(o: Outputs) -> np.ndarray:
        return raw_features(features, o.probabilities, o.vectors, prototypes, projection,
                            centres)

    x_in, x_out = raw(in_fit), raw(out_fit)
    x = np.vstack([x_in, x_out])
    y = np.r_[np.zeros(len(x_in)), np.ones(len(x_out))]
    # stored rounded to 8 decimals, so the floor must survive rounding: a column that
    # never varies (a search-vector dimension a model leaves at 0) would else divide by 0
    mean, std = np.round(x.mean(0), 8), np.maximum(np.round(x.std(0), 8), STD_FLOOR)
    weights, bias = fit_logistic((x - mean) / std, y, STRENGTH.get(method, 10.0))
    params.update(mean=mean.tolist(), std=std.tolist(),
                  weights=np.round(weights, 6).tolist(), bias=round(bias, 6))
    spec = UnknownSpec(method, 1.0, params, head)
    scorer = UnknownScorer(spec)
    if isinstance(in_threshold, Mapping):
        spec.threshold, _ = threshold_for_kinds(
            {k: scorer.score(o.probabilities, o.vectors) for k, o in in_threshold.items()},
            max_false_rejection)
    else:
        spec.threshold = threshold_for(scorer.score(in_threshold.probabilities,
                                                    in_threshold.vectors),
                                       max_false_rejection)
    return spec


def evaluate_spec(spec: UnknownSpec, inside: Outputs, outside: Mapping[str, Outputs],
                  threshold: float | None = None) -> dict:
    """AUROC of the score and the rejection rates at the threshold, overall and per
    out-of-distribution source."""
    scorer = UnknownScorer(spec)
    s_in = scorer.score(inside.probabilities, inside.vectors)
    t = spec.threshold if threshold is None else threshold
    per_source = {}
    outs = []
    for name, o in outside.items():
        if not len(o):
            continue
        s = scorer.score(o.probabilities, o.vectors)
        outs.append(s)
        per_source[name] = {"photos": len(o), "auroc": round(auroc(s_in, s), 4),
                            "rejected": round(float((s >= t).mean()), 4)}
    s_out = np.concatenate(outs) if outs else np.zeros(0)
    return {"auroc": round(auroc(s_in, s_out), 4) if len(s_out) else None,
            "threshold": round(t, 6),
            "false_rejection": round(float((s_in >= t).mean()), 4),
            "rejected_out_of_distribution": round(float((s_out >= t).mean()), 4)
            if len(s_out) else None,
            "garment_photos": len(inside), "other_photos": int(len(s_out)),
            "per_source": per_source}


def holdout_part(key: str, parts: int = 2, salt: str = "unknown") -> int:
    """A stable part (0 .. parts-1) of a key (a photo path, or a group such as a
    photographer's id, so that one photographer's photos stay on one side). A path whose
    file name is not UTF-8 is hashed by its bytes (surrogateescape), as the disk has it."""
    text = f"{salt}:{key}".encode("utf-8", "surrogateescape")
    return int.from_bytes(hashlib.sha256(text).digest()[:4], "big") % parts


def split_parts(outputs: Outputs, parts: int, keys: Sequence[str] | None = None
                ) -> list[Outputs]:
    """`outputs` in `parts` stable parts by a hash of each photo's key (default: path)."""
    keys = list(keys) if keys is not None else outputs.paths
    which = [holdout_part(k, parts) for k in keys]
    return [outputs.take([i for i, w in enumerate(which) if w == p]) for p in range(parts)]


def fit_scorer(reference: Outputs, in_fit: Outputs, out_fit: Mapping[str, Outputs],
               in_threshold: Garments, head: str, in_test: Garments | None = None,
               out_test: Mapping[str, Outputs] | None = None, method: str = "auto",
               max_false_rejection: float = DEFAULT_MAX_FALSE_REJECTION,
               log: Callable[[str], None] | None = None) -> tuple[UnknownSpec, dict]:
    """Fit every candidate method (or `method`), pick one and report each.

    `auto` picks the highest AUROC of `in_threshold` garments (not used to fit) against
    the `out_fit` photos, preferring the simpler method within 0.002 of the best. The
    held-out figures (`in_test` against `out_test`, when given) go into the spec's
    `calibration` with the threshold-set figures. `in_threshold` and `in_test` may be
    given per kind of garment photo ({"home": ..., "studio": ..., "people": ...}): the
    threshold then holds every kind's false rejection within the bound (the kind that
    needs the highest threshold decides it) and `calibration["kinds"]` has each kind's
    figures.
    """
    kinds = isinstance(in_threshold, Mapping)
    if kinds:
        empty = [k for k, o in in_threshold.items() if not len(o)]
        if not in_threshold or empty:
            raise CalibrationError("no garment photos to choose the threshold on"
                                   + (f" of kind {', '.join(empty)}" if empty else ""))
    threshold_pool = pooled(in_threshold)
    test_pool = pooled(in_test) if in_test is not None and len(in_test) else None
    for name, part in (("garment photos to fit on", in_fit),
                       ("garment photos to choose the threshold on", threshold_pool)):
        if not len(part):
            raise CalibrationError(f"no {name} (give more in-distribution photos)")
    out_all = concat(out_fit.values())
    candidates = list(METHODS)
    if method != "auto":
        if method not in METHODS:
            raise CalibrationError(f"--method {method}: unknown (known: auto, "
                                   f"{', '.join(METHODS)})")
        candidates = [method]
    if reference.vectors is None:
        candidates = [m for m in candidates
                      if all(FEATURES[f] != "vector" for f in METHODS[m])]
        if not candidates:
            raise CalibrationError(f"method '{method}' needs the search vector; the model "
                                   "gives none")
    comparison: dict[str, dict] = {}
    specs: dict[str, UnknownSpec] = {}
    for name in candidates:
        spec = build_spec(name, reference, in_fit, out_all, in_threshold, head,
                          max_false_rejection)
        tune = evaluate_spec(spec, threshold_pool, out_fit)
        specs[name] = spec
        comparison[name] = {"features": list(METHODS[name]), "tune_auroc": tune["auroc"],
                            "threshold": round(spec.threshold, 6)}
        if test_pool is not None:
            test = evaluate_spec(spec, test_pool, out_test or {})
            comparison[name].update(held_out_auroc=test["auroc"],
                                    held_out_false_rejection=test["false_rejection"],
                                    held_out_rejected_other=test[
                                        "rejected_out_of_distribution"])
            if kinds and isinstance(in_test, Mapping):
                comparison[name]["held_out_false_rejection_by_kind"] = {
                    k: evaluate_spec(spec, o, {})["false_rejection"]
                    for k, o in in_test.items() if len(o)}
        if log:
            log(f"{name}: " + ", ".join(f"{k} {v}" for k, v in comparison[name].items()
                                        if k != "features"))
    best = max(c["tune_auroc"] for c in comparison.values())
    chosen = next(n for n in candidates if comparison[n]["tune_auroc"] >= best - 0.002)
    spec = specs[chosen]
    calibration: dict = {
        "chosen_by": "threshold-set AUROC" if method == "auto" else "--method",
        "max_false_rejection": max_false_rejection,
        "photos": {"reference": len(reference), "garments_fit": len(in_fit),
                   "others_fit": len(out_all), "garments_threshold": len(threshold_pool)},
        "threshold_set": {k: v for k, v in evaluate_spec(spec, threshold_pool,
                                                         out_fit).items()
                          if k != "per_source"},
    }
    report = {"chosen": chosen, "methods": comparison}
    if test_pool is not None:
        held_out = evaluate_spec(spec, test_pool, out_test or {})
        calibration["held_out"] = held_out
        report["held_out"] = held_out
    if kinds:
        calibration["kinds"] = kind_figures(spec, in_threshold, out_fit,
                                            in_test if isinstance(in_test, Mapping) else None,
                                            out_test, max_false_rejection)
        calibration["threshold_decided_by"] = calibration["kinds"].pop("_decided_by")
        report["kinds"] = calibration["kinds"]
    spec.calibration = calibration
    return spec, report


def kind_figures(spec: UnknownSpec, in_threshold: Mapping[str, Outputs],
                 out_fit: Mapping[str, Outputs], in_test: Mapping[str, Outputs] | None,
                 out_test: Mapping[str, Outputs] | None, max_false_rejection: float) -> dict:
    """Per kind of garment photo: its photos, the threshold it alone would need, and its
    false rejection and AUROC (against every other photo) on the threshold set and, where
    given, the held-out set; `_decided_by` names the kind whose threshold was kept."""
    scorer = UnknownScorer(spec)
    figures: dict = {}
    needed = {}
    for kind, o in in_threshold.items():
        scores = scorer.score(o.probabilities, o.vectors)
        needed[kind] = threshold_for(scores, max_false_rejection)
        tune = evaluate_spec(spec, o, out_fit)
        figures[kind] = {"threshold_needed": round(needed[kind], 6),
                         "threshold_set": {"photos": len(o), "auroc": tune["auroc"],
                                           "false_rejection": tune["false_rejection"]}}
        if in_test is not None and kind in in_test and len(in_test[kind]):
            test = evaluate_spec(spec, in_test[kind], out_test or {})
            figures[kind]["held_out"] = {"photos": len(in_test[kind]), "auroc": test["auroc"],
                                         "false_rejection": test["false_rejection"]}
    figures["_decided_by"] = max(needed, key=lambda k: needed[k])
    return figures


def save_spec(folder: str | Path, spec: UnknownSpec | None) -> Path:
    """Write (or, with None, remove) the `unknown` entry of a model folder's model.json."""
    from ..models.info import update_info

    return update_info(folder, {"unknown": None if spec is None else spec.to_dict()})


# --- running a model over photos ---------------------------------------------------


def collect_outputs(runtime, sources: Sequence, head: str, batch_size: int = 32,
                    threads: int = 2, names: Sequence[str] | None = None,
                    progress: Callable[[int], None] | None = None
                    ) -> tuple[Outputs, list[str]]:
    """The head's probabilities and the search vector (where the runtime gives one) of
    every readable photo (paths, bytes or PIL images; `names` names them), and the names
    of those it could not read."""
    from .photos import decoded_batches, prepare_photo

    sources = list(sources)
    names = [str(s) for s in sources] if names is None else list(names)
    wanted = [head] + ([VECTOR] if VECTOR in runtime.outputs else [])
    order = list(range(len(sources)))
    probs, vecs, kept, failed = [], [], [], []

    def prepare(i: int) -> np.ndarray:
        return prepare_photo(sources[i], runtime.preprocess, names[i])

    for decoded in decoded_batches(order, prepare, batch_size, threads):
        failed += [names[decoded.sources[j]] for j in sorted(decoded.errors)]
        if decoded.groups:
            out = decoded.map(lambda batch: runtime.run(batch, wanted))
            probs.append(out[head])
            if VECTOR in out:
                vecs.append(out[VECTOR])
            kept += [names[decoded.sources[j]] for j in decoded.rows]
        if progress:
            progress(len(decoded.sources))
    if not probs:
        return Outputs(np.zeros((0, 0)), None, []), failed
    return Outputs(np.concatenate(probs), np.concatenate(vecs) if vecs else None, kept), failed


def scored_head(info: ModelInfo) -> str:
    """The first classification head: the one whose probabilities the score reads."""
    for head in info.scored_heads:
        if head.kind == "classification":
            return head.name
    raise CalibrationError(f"{info.name or 'this model'} has no classification head; "
                           "'not a garment' rejection reads one")

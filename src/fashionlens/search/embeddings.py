"""Photos as vectors: the pooled features of a backbone, L2-normalised.

Two photos of the same garment land close together (cosine similarity near 1), so a
nearest-neighbour search over these vectors finds visually similar items. The vectors
come from the model's embedding head (trained for search by `training.metric`; with the
class posterior appended when the head says so) when it has one, else from the layer
just before the classifier (`forward_head(..., pre_logits=True)`): of a saved
fashionlens model, the bundled garment model, or a bare backbone.

Decoding runs on a small thread pool and the model in the runtime (`inference.runtime`),
exactly like `Predictor.predict_paths`; an unreadable photo is reported for that photo
only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelError
from ..inference.holder import RuntimeHolder
from ..inference.loading import load_runtime
from ..inference.outputs import VECTOR, normalise
from ..inference.photos import decoded_batches, prepare_photo
from ..models.info import same_vectors, tagger_fingerprint_of, vector_names_of
from ..models.resolve import DEFAULT_BACKBONE
from .records import VectorModel

__all__ = ["DEFAULT_BACKBONE", "DUPLICATE_THRESHOLD", "Embedded", "Embedder", "VectorModel",
           "duplicate_line", "normalise"]

# Near-duplicate line (cosine similarity) for a model that has not measured its own
# (`ModelInfo.duplicate_threshold`), measured with clothing10 on the clothing
# photos (benchmarks/duplicates.py, results-duplicates.json): a lightly edited copy (4 %
# crop, 80 % size, JPEG quality 70) of 300 photos scored >= 0.93 against its original for
# 99.7 % of them (median 0.982), and against some other of the 3,409 photos for 0.7 %
# (best other: p99 0.889). Among distinct photos, the pairs >= 0.93 were the same garment
# photographed twice; between 0.90 and 0.93 they mix such pairs with look-alikes. Other
# vectors spread otherwise (fashion's put 3 % of copies at 0.93 with another photo), so
# each model may carry its own line.
DUPLICATE_THRESHOLD = 0.93


def duplicate_line(measured: float | None) -> float:
    """The near-duplicate line to use: the one measured for a model, else the default
    (imported vectors, models and catalogs made before models carried their own)."""
    return float(measured) if measured is not None else DUPLICATE_THRESHOLD


@dataclass
class Embedded:
    """One photo's outcome: a unit vector, or why the photo could not be read."""

    source: str
    vector: np.ndarray | None = None
    error: str | None = None
    # "Not a garment" score (`inference.unknown`), when asked for and the model is calibrated
    unknown_score: float | None = None
    # What the model's heads predict (`tags.Prediction`s), when asked for (`embed(tags=True)`)
    predictions: list | None = None

    @property
    def ok(self) -> bool:
        return self.vector is not None


class Embedder(RuntimeHolder):
    """Turns photos (paths, bytes or PIL images) into L2-normalised float32 vectors.

    `model` is anything `models.resolve.resolve_model` accepts, backbone names included
    (loaded with `pretrained` weights); None or 'default' is the bundled garment model,
    or when that is not installed the `efficientnet_lite0` backbone with its embedded
    ImageNet weights. `runtime` picks what runs it (`inference.loading.load_runtime`;
    `auto`: OpenVINO fp32 for a model folder on the CPU, never int8: stored vectors
    must not depend on the CPU that made them; a backbone always runs in torch).
    """

    def __init__(self, model: str | Path | None = None, *, pretrained: str = "embedded",
                 device: str = "cpu", precision: str | None = None, threads: int = 2,
                 runtime: str = "auto") -> None:
        self.runtime = load_runtime(model, runtime, backbone=True, pretrained=pretrained,
                                    device=device, precision=precision, int8=False)
        if VECTOR not in self.runtime.outputs:
            raise ModelError(f"{self.runtime.spec}: the architecture has no forward_head; "
                             "cannot take its pooled features")
        self.threads = threads
        self.dim = self.runtime.vector_dim
        # Names this model's search vectors alone (`models.info.vector_fingerprint_of`):
        # what catalogs, vector shards and text alignments record, so a refit of a scoring
        # head leaves them valid; `fingerprint` names the whole model (its tags too). Read
        # now, from the files the runtime was loaded from.
        # `tagger_fingerprint`: what a catalog records as the source of the tags it gives.
        folder, info = self.runtime.folder, getattr(self.runtime, "info", None)
        if folder is None or info is None:  # a bare backbone: its name and weights say it all
            self.vector_names: tuple[str, ...] = (self.fingerprint,)
            self.tagger_fingerprint = self.fingerprint
        else:  # the whole fingerprint as the runtime read it, not read again
            self.vector_names = vector_names_of(folder, info, self.fingerprint)
            self.tagger_fingerprint = tagger_fingerprint_of(folder, info, self.fingerprint)
        self.vector_fingerprint = self.vector_names[0]
        self.unknown = self.unknown_scorer()

    @classmethod
    def from_spec(cls, spec: str, **kwargs) -> Embedder:
        """Rebuild the embedder a catalog recorded (`Embedder.spec`)."""
        name, _, pretrained = spec.partition("@")
        if pretrained and not Path(spec).is_dir():
            return cls(name, pretrained=pretrained, **kwargs)
        return cls(spec, **kwargs)

    @property
    def duplicate_threshold(self) -> float:
        """From which cosine similarity two of this model's vectors are one photo."""
        info = getattr(self.runtime, "info", None)
        return duplicate_line(getattr(info, "duplicate_threshold", None))

    def makes_vectors_of(self, recorded: str | None) -> bool:
        """Whether vectors recorded under `recorded` are this model's (recorded before
        vectors had their own fingerprint, they carry the whole model's, or an earlier
        version's: `models.info.vector_names_of`)."""
        return same_vectors(recorded, self.vector_fingerprint, self.vector_names)

    @property
    def vector_model(self) -> VectorModel:
        return VectorModel(self.spec, self.vector_fingerprint, self.dim,
                           self.duplicate_threshold)

    def vectors(self, batch: np.ndarray) -> np.ndarray:
        """Unit vectors for a batch of pre-processed photos."""
        return self.runtime.run(batch, (VECTOR,))[VECTOR]

    @property
    def heads(self) -> list:
        """The model's scoring heads (`models.info.HeadSpec`; none for a bare backbone):
        what tags a catalog's items."""
        return [h for h in getattr(self.runtime, "heads", None) or []
                if h.name in self.runtime.outputs]

    def vectors_and_scores(self, batch: np.ndarray, unknown: bool = False
                           ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray | None]:
        """Unit vectors, every head's scores and (with `unknown`, for a calibrated model)
        the "not a garment" scores: all from one forward pass."""
        wanted = [VECTOR] + [h.name for h in self.heads]
        if unknown and self.unknown is not None:
            wanted += [o for o in self.unknown.outputs if o not in wanted]
        outputs = self.runtime.run(batch, wanted)
        scores = (self.unknown.score_outputs(outputs)
                  if unknown and self.unknown is not None else None)
        return outputs[VECTOR], {h.name: outputs[h.name] for h in self.heads}, scores

    def vectors_and_unknown(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Unit vectors and, from the same forward pass, the "not a garment" scores (None
        when the model is not calibrated)."""
        if self.unknown is None:
            return self.vectors(batch), None
        wanted = [VECTOR] + [o for o in self.unknown.outputs if o != VECTOR]
        outputs = self.runtime.run(batch, wanted)
        return outputs[VECTOR], self.unknown.score_outputs(outputs)

    def _prepare(self, source, name: str | None = None) -> np.ndarray:
        return prepare_photo(source, self.preprocess, name=name)

    def embed_one(self, source, name: str | None = None) -> np.ndarray:
        """One photo's vector; raises ImageError when the photo cannot be read."""
        return self.vectors(self._prepare(source, name)[None])[0]

    def embed(self, sources: Sequence, names: Sequence[str] | None = None,
              batch_size: int = 32, unknown: bool = False, tags: bool = False
              ) -> Iterator[Embedded]:
        """Yield one `Embedded` per source, in order; unreadable photos carry an error.

        `names` label the sources in error messages (default: the path, or `<image N>`);
        `unknown` adds each photo's "not a garment" score where the model is calibrated;
        `tags` adds what the model's heads predict (`tags.predictions_from_scores`), from
        the same forward pass.
        """
        from .tags import predictions_from_scores

        if names is None:
            names = [str(s) if isinstance(s, str | Path) else f"<image {i}>"
                     for i, s in enumerate(sources)]
        if len(names) != len(sources):
            raise ValueError("names and sources differ in length")
        labelled = list(zip(sources, names, strict=True))
        batches = decoded_batches(labelled, lambda pair: self._prepare(*pair), batch_size,
                                  self.threads)
        for decoded in batches:
            vecs, scores, heads = [], None, {}
            if decoded.groups:
                if tags:
                    vecs, heads, scores = decoded.map(
                        lambda batch: self.vectors_and_scores(batch, unknown))
                else:
                    vecs, scores = decoded.map(
                        lambda batch: self.vectors_and_unknown(batch) if unknown
                        else (self.vectors(batch), None))
            by_pos = {i: row for row, i in enumerate(decoded.rows)}
            for i, (_, name) in enumerate(decoded.sources):
                if i in by_pos:
                    row = by_pos[i]
                    yield Embedded(source=name, vector=vecs[row], unknown_score=(
                        None if scores is None else float(scores[row])), predictions=(
                        predictions_from_scores(self.heads, {n: v[row] for n, v in
                                                             heads.items()})
                        if tags else None))
                else:
                    yield Embedded(source=name, error=decoded.errors[i].reason)

    def embed_paths(self, paths: Sequence[str | Path], batch_size: int = 32
                    ) -> Iterator[Embedded]:
        return self.embed(list(paths), batch_size=batch_size)

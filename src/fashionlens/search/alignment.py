"""A model's text alignment: sentence vectors mapped into its image-vector space.

`text-alignment.safetensors` beside a model's weights holds one matrix `weight`
(384 x D): a sentence vector of the text encoder (`text_encoder`) times it, L2-normalised,
is a query vector in the model's D-d search space, searched in a catalog's existing index
as a photo's vector is (no item is re-embedded). Its metadata names the model fingerprint
it was trained for (`models.info.vector_fingerprint_of`, or before that the whole model's
`fingerprint_of`; a catalog of another model's vectors refuses it, and a refit of a
scoring head leaves it valid), the encoder, and how it was trained and measured.
`fashionlens train-text` trains one (`training.text_alignment`: a symmetric InfoNCE loss
between product photos' vectors and their names and attribute phrases).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelError
from ..models.info import read_info, same_vectors, vector_fingerprint_of, vector_names
from .text_encoder import TextSearchUnavailable

ALIGNMENT_FILE = "text-alignment.safetensors"
FORMAT = "fashionlens-text-alignment/1"


@dataclass
class TextAlignment:
    weight: np.ndarray  # (encoder dim, model dim)
    meta: dict

    @property
    def fingerprint(self) -> str:
        return str(self.meta.get("model_fingerprint", ""))

    @property
    def dim(self) -> int:
        return int(self.weight.shape[1])

    def project(self, sentences: np.ndarray) -> np.ndarray:
        """Unit query vectors in the model's space for (n, 384) sentence vectors."""
        out = np.asarray(sentences, dtype=np.float32) @ self.weight
        return out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)

    def save(self, folder: str | Path) -> Path:
        from safetensors.numpy import save

        from ..atomic import write_bytes_atomic

        path = Path(folder) / ALIGNMENT_FILE
        data = save({"weight": np.ascontiguousarray(self.weight, dtype=np.float32)},
                    metadata={"fashionlens": json.dumps({"format": FORMAT, **self.meta},
                                                        sort_keys=True)})
        write_bytes_atomic(path, data)
        return path


def read_alignment(folder: str | Path) -> TextAlignment | None:
    """The alignment stored in a model folder, or None when it has none."""
    path = Path(folder) / ALIGNMENT_FILE
    if not path.is_file():
        return None
    try:
        from safetensors import safe_open
        with safe_open(str(path), framework="numpy") as fh:
            meta = json.loads((fh.metadata() or {}).get("fashionlens", "{}"))
            weight = fh.get_tensor("weight")
    except Exception as exc:  # safetensors raises its own error types
        raise TextSearchUnavailable(f"{path}: not a readable text alignment ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise TextSearchUnavailable(f"{path}: not a text alignment of format {FORMAT}")
    if weight.ndim != 2 or not np.all(np.isfinite(weight)):
        raise TextSearchUnavailable(f"{path}: 'weight' must be a finite 2-d matrix")
    return TextAlignment(weight.astype(np.float32), meta)


def valid_alignment(folder: str | Path) -> TextAlignment | None:
    """The text alignment of a model folder if it holds for that model's vectors (one
    recorded under its whole-model fingerprint counts), re-recorded under the vectors'
    own fingerprint; None when there is none or it is stale or unreadable. Read it before
    a new model replaces the folder, then hand it to `carry_alignment`."""
    try:
        alignment = read_alignment(folder)
    except TextSearchUnavailable:
        return None
    if alignment is None:
        return None
    names = vector_names(Path(folder))
    if not same_vectors(alignment.fingerprint, names[0], names):
        return None
    return TextAlignment(alignment.weight, {**alignment.meta, "model_fingerprint": names[0]})


def carry_alignment(alignment: TextAlignment | None, model_dir: str | Path) -> bool:
    """Save `alignment` (from `valid_alignment`) into `model_dir` when that model makes
    the same vectors, as a model whose scoring heads alone were refit does: it is then
    searchable by words without `train-text`. Returns whether it was carried."""
    if alignment is None or not same_vectors(alignment.fingerprint,
                                             vector_fingerprint_of(Path(model_dir),
                                                                   read_info(model_dir))):
        return False
    alignment.save(model_dir)
    return True


def bundled_with_alignment() -> list[str]:
    """The bundled models that ship a text alignment (not every one does: the default may
    not), so a refusal can name one that searches by words."""
    from ..models.resolve import bundled_models

    return [name for name, folder in bundled_models().items()
            if (folder / ALIGNMENT_FILE).is_file()]


def _vector_names(folder: str | Path | None) -> tuple[str, ...]:
    """The names a model folder's vectors go by (none for what is not a model folder)."""
    if folder is None:
        return ()
    try:
        return vector_names(Path(folder))
    except ModelError:
        return ()


def alignment_for(folder: str | Path | None, fingerprint: str | None, dim: int | None,
                  model_name: str | None) -> TextAlignment:
    """The alignment for a catalog's model (its folder, fingerprint and vector size), or a
    clear error saying how to make one."""
    if folder is None and model_name is None:
        raise TextSearchUnavailable("search by words needs the catalog's model and its text "
                               "alignment, and this catalog records no model (imported "
                               "vectors); pass the model the vectors came from (--model)")
    name = model_name or str(folder)
    how = f"train one with `fashionlens train-text --model {name}` (needs the train extra)"
    if folder is None:
        raise TextSearchUnavailable(f"search by words needs the catalog's model folder with a "
                               f"text alignment; the catalog's model {name} is not a model "
                               f"folder: {how}")
    alignment = read_alignment(folder)
    path = Path(folder) / ALIGNMENT_FILE
    if alignment is None:
        aligned = bundled_with_alignment()
        other = (f"; or build the catalog with a bundled model that has one (--model "
                 f"{' or '.join(aligned)})" if aligned else "")
        raise TextSearchUnavailable(f"model {name} has no text alignment ({path} is missing): "
                                    f"{how}{other}")
    if fingerprint and not same_vectors(alignment.fingerprint, fingerprint,
                                        _vector_names(folder)):
        raise TextSearchUnavailable(f"{path} was trained for model "
                               f"{alignment.fingerprint}, and this catalog holds vectors of "
                               f"{fingerprint}: {how}")
    if dim is not None and alignment.dim != dim:
        raise TextSearchUnavailable(f"{path} gives {alignment.dim}-d "
                               f"vectors; this catalog holds {dim}-d ones: {how}")
    return alignment

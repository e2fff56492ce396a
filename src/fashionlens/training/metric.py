"""Metric learning: an embedding in which photos of one item land together, and photos
of one category near each other.

Positives come from an item-id column (several photos per item) or, when every item has
one photo, from simulated re-shot views of it (`data.reshoot`: new background, angle,
crop, light). The loss is a triplet loss with semi-hard or batch-hard mining, or a
supervised contrastive loss (pytorch-metric-learning), on the item ids; a second term of
the same kind on the category labels keeps "same style" close too.

Two ways to train:
- `head` (default; minutes on a CPU): the backbone stays frozen; what the head reads
  (pooled features plus the last stages' pooled outputs, `models.embedding`) for each
  photo and a handful of re-shot views is computed once, and only the embedding head (a
  linear projection, initialised by PCA, or a small MLP) trains on it.
- `full`: the backbone trains too (its first stages frozen, BatchNorm statistics kept),
  with fresh views every epoch; slower, for a GPU or a long CPU run.

The result is the base model plus `embedding_head`, saved like any fashionlens model,
so one artifact classifies and embeds.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import yaml
from pytorch_metric_learning import distances, losses, miners
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from ..config import LOSSES, MINING, MODES, MetricConfig  # noqa: F401 (re-exported)
from ..data import DataSpec, eval_transform, load_labelled
from ..data.images import load_image, resize_short_side
from ..data.preprocess import Preprocess, grouped_by_shape
from ..data.reshoot import STRONG, TRAINING, reshoot
from ..data.sources import LabelledSet
from ..data.splits import split_train_val
from ..errors import ConfigError, DataError, ImageError, ModelError
from ..evaluation.retrieval import pair_accuracy, precision_at_k
from ..inference.unknown import vector_scorer
from ..models import ModelInfo, create_model, load_model, model_preprocess, save_model
from ..models.card import carry_summary
from ..models.embedding import (
    EmbeddingSpec,
    attach_embedding_head,
    backbone_features,
    pooled_features,
    search_vectors,
    stage_taps,
)
from ..models.resolve import resolve_model
from ..precision import autocast, resolve_device, resolve_precision
from ..progress import track
from . import distributed
from .loop import freeze_batchnorm_statistics, freeze_early_stages

log = logging.getLogger(__name__)

# Chosen on the clothing validation split (pairs top-10 vs category precision@10; README).
DEFAULT_POSTERIOR_WEIGHT = 0.25


@dataclass
class MetricResult:
    run_dir: Path
    model_dir: Path
    metrics: dict
    history: list[dict] = field(default_factory=list)


def make_loss(cfg: MetricConfig) -> tuple[nn.Module, nn.Module | None]:
    """The loss and its miner (None for SupCon, which weighs every pair itself)."""
    if cfg.loss == "supcon":
        return losses.SupConLoss(temperature=cfg.temperature), None
    distance = distances.CosineSimilarity()
    loss = losses.TripletMarginLoss(margin=cfg.margin, distance=distance)
    if cfg.mining == "hard":
        return loss, miners.BatchHardMiner(distance=distance)
    return loss, miners.TripletMarginMiner(margin=cfg.margin, distance=distance,
                                           type_of_triplets=cfg.mining)


def combined_loss(embeddings: torch.Tensor, items: torch.Tensor, categories: torch.Tensor,
                  cfg: MetricConfig, loss: nn.Module, miner: nn.Module | None
                  ) -> torch.Tensor:
    def term(labels: torch.Tensor) -> torch.Tensor:
        tuples = miner(embeddings, labels) if miner is not None else None
        return loss(embeddings, labels, tuples)

    total = term(items)
    if cfg.category_weight > 0:
        total = total + cfg.category_weight * term(categories)
    return total


# --- the base model ---------------------------------------------------------------------

def load_base(base: str, pretrained: str = "embedded"
              ) -> tuple[nn.Module, ModelInfo, Path | None]:
    """A saved model (with its classes) or a bare pretrained backbone, and the saved
    model's folder (None for a backbone): its run summary travels to the new model."""
    ref = resolve_model(base, backbone=True, flag="--base")
    if ref.folder is not None:
        model, info = load_model(ref.folder)
        info.embedding = None
        if hasattr(model, "embedding_head"):
            del model.embedding_head
        return model, info, ref.folder
    model = create_model(base, num_classes=0, pretrained=pretrained)
    info = ModelInfo(architecture=base, classes=[], preprocess=model_preprocess(model),
                     task="embedding")
    return model, info, None


# --- photos and items -------------------------------------------------------------------

def _items(data: LabelledSet) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Item index and category index per photo (each photo its own item without ids)."""
    if all(s.group for s in data.samples):
        names = sorted({s.group for s in data.samples})
        lookup = {n: i for i, n in enumerate(names)}
        items = np.array([lookup[s.group] for s in data.samples])
    else:
        items = np.arange(len(data.samples))
    categories = np.array([data.classes.index(s.label) for s in data.samples])
    return items, categories, data.classes


class ViewSet(Dataset):
    """Photo i as tensors: its plain view, then re-shot views drawn from (seed, i, view),
    all at the input shape the photo itself gets (`Preprocess.shape_for`: a model with
    canvases reads a tall photo at its tall canvas, and so learns it there)."""

    def __init__(self, images: list, pre: Preprocess, views: int, seed: int,
                 strong: bool = False) -> None:
        self.images, self.pre, self.views, self.seed = images, pre, views, seed
        self.transforms = {shape: eval_transform(pre.fixed(shape)) for shape in pre.shapes}
        self.config = STRONG if strong else TRAINING
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        img = self.images[i]
        transform = self.transforms[self.pre.shape_for(*img.size)]
        out = [] if self.views < 0 else [transform(img)]
        for v in range(abs(self.views)):
            rng = np.random.default_rng([self.seed, self.epoch, i, v])
            out.append(transform(reshoot(img, rng, self.config)))
        return torch.stack(out)


def read_photos(data: LabelledSet, short_side: int, threads: int
                ) -> tuple[list, list[int], dict[str, str]]:
    """Decode every photo once at working size; unreadable ones are skipped and listed."""
    from concurrent.futures import ThreadPoolExecutor

    def read(sample):
        try:
            return resize_short_side(load_image(sample.path, draft_size=short_side),
                                     short_side)
        except ImageError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=threads) as pool:
        loaded = list(track(pool.map(read, data.samples), total=len(data.samples),
                            description="reading photos"))
    kept = [i for i, r in enumerate(loaded) if not isinstance(r, ImageError)]
    skipped = {str(data.samples[i].path): loaded[i].reason for i in range(len(loaded))
               if isinstance(loaded[i], ImageError)}
    return [loaded[i] for i in kept], kept, skipped


@torch.no_grad()
def view_features(model: nn.Module, dataset: ViewSet, device: torch.device, precision: str,
                  threads: int, description: str, search: bool = False) -> np.ndarray:
    """What the embedding head reads (or, with `search`, the search vectors) for every
    photo's views: [photos, views, dim]. Under torchrun each process computes its share
    of the photos and every process gets them all."""
    if not distributed.current().active:
        return _view_features(model, dataset, device, precision, threads, description, search)
    rows = distributed.shard(len(dataset))
    part = _view_features(model, Subset(dataset, rows), device, precision, threads,
                          description, search) if rows else None
    return np.concatenate([p for p in distributed.all_gather(part) if p is not None])


def _view_features(model: nn.Module, dataset: ViewSet | Subset, device: torch.device,
                   precision: str, threads: int, description: str, search: bool
                   ) -> np.ndarray:
    views = (dataset.dataset if isinstance(dataset, Subset) else dataset).views
    loader = DataLoader(dataset, batch_size=max(1, 64 // max(1, abs(views) + 1)),
                        num_workers=threads if threads > 1 else 0,
                        persistent_workers=False, collate_fn=list)
    model.eval()
    outs = []
    for batch in track(loader, total=len(loader), description=description):
        parts: list = [None] * len(batch)
        for group in grouped_by_shape(batch):  # one stack per canvas
            stack = torch.stack([batch[k] for k in group])
            n, v = stack.shape[:2]
            flat = stack.flatten(0, 1).to(device).contiguous(memory_format=torch.channels_last)
            with autocast(device, precision):
                feats = backbone_features(model, flat)
                if search:
                    feats = search_vectors(model, feats)
            for k, row in zip(group, feats.float().cpu().reshape(n, v, -1), strict=True):
                parts[k] = row
        outs.append(torch.stack(parts))
    return torch.cat(outs).numpy()


# --- training ---------------------------------------------------------------------------

def _pca_init(head, features: np.ndarray) -> None:
    """Start a linear head as the top principal components (a strong baseline)."""
    layer = head.project
    if not isinstance(layer, nn.Linear) or layer.out_features > min(features.shape):
        return
    with torch.no_grad():
        features = head.prepare(torch.as_tensor(features)).numpy()
    mean = features.mean(0)
    _, _, vt = np.linalg.svd(features - mean, full_matrices=False)
    components = torch.as_tensor(vt[:layer.out_features], dtype=torch.float32)
    with torch.no_grad():
        layer.weight.copy_(components)
        layer.bias.copy_(-components @ torch.as_tensor(mean, dtype=torch.float32))


def _schedule(optimizer, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = max(1, total // 20)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup,
                                 0.5 * (1 + math.cos(math.pi * min(1.0, s / total)))))


def _photos_by_item(items: np.ndarray) -> dict[int, list[int]]:
    photos_of: dict[int, list[int]] = {}
    for photo, item in enumerate(items):
        photos_of.setdefault(int(item), []).append(photo)
    return photos_of


def _batches(items: np.ndarray, batch_items: int, rng: np.random.Generator):
    """Groups of item ids, shuffled, `batch_items` at a time (the last may be smaller)."""
    unique = rng.permutation(np.unique(items))
    for start in range(0, len(unique), batch_items):
        chunk = unique[start:start + batch_items]
        if len(chunk) >= 2:
            yield chunk


def _retrieval_scores(val_plain, val_views, val_cats, gallery, gallery_cats) -> dict:
    pairs = pair_accuracy(val_plain, val_views)
    precision = precision_at_k(val_plain, val_cats, gallery, gallery_cats, k=10)
    return {"pairs_top1": pairs["top1"], "pairs_top5": pairs["top5"],
            "pairs_top10": pairs["top10"], "precision@10": precision["precision@10"]}


def train_head(features: np.ndarray, items: np.ndarray, categories: np.ndarray,
               head: nn.Module, cfg: MetricConfig, evaluate=None) -> list[dict]:
    """Train the head on cached features [photos, views, dim] (view 0 = the plain photo).

    Each step takes `batch_items` items and two of their views (two photos of the item
    when it has several, else two of its views).
    """
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    loss, miner = make_loss(cfg)
    optimizer = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(np.unique(items)) / cfg.batch_items))
    scheduler = _schedule(optimizer, cfg.epochs * steps_per_epoch)
    photos_of = _photos_by_item(items)
    feats = torch.as_tensor(features, dtype=torch.float32)
    n_views = features.shape[1]
    history = []
    for epoch in range(1, cfg.epochs + 1):
        head.train()
        total, count, started = 0.0, 0, time.perf_counter()
        for chunk in _batches(items, cfg.batch_items, rng):
            rows, views, labels, cats = [], [], [], []
            for item in chunk:
                photos = photos_of[int(item)]
                for _ in range(2):
                    photo = photos[rng.integers(len(photos))]
                    rows.append(photo)
                    views.append(rng.integers(n_views))
                    labels.append(int(item))
                    cats.append(int(categories[photo]))
            embeddings = head(feats[rows, views])
            value = combined_loss(embeddings, torch.tensor(labels), torch.tensor(cats), cfg,
                                  loss, miner)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            scheduler.step()
            total, count = total + float(value.detach()), count + 1
        record = {"epoch": epoch, "loss": total / max(1, count),
                  "seconds": time.perf_counter() - started}
        if evaluate is not None and (epoch == cfg.epochs or epoch % 10 == 0):
            record.update(evaluate())
        history.append(record)
        log.info("epoch %d: %s", epoch, {k: round(v, 4) for k, v in record.items()})
    return history


def _share(batch: list[int]) -> tuple[list[int], list[int]]:
    """This process's contiguous part of a batch of photos, and every process's count."""
    ctx = distributed.current()
    bounds = [len(batch) * r // ctx.world for r in range(ctx.world + 1)]
    return (batch[bounds[ctx.rank]:bounds[ctx.rank + 1]],
            [bounds[r + 1] - bounds[r] for r in range(ctx.world)])


def _whole_batch(local: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """The embeddings of the whole batch from every process's part, in batch order; only
    this process's part carries gradients (the loss mines pairs across all parts)."""
    ctx = distributed.current()
    if not ctx.active or ctx.world == 1:
        return local
    padded = local.new_zeros((max(counts), *local.shape[1:]))
    padded[:len(local)] = local.detach()
    parts = [torch.empty_like(padded) for _ in counts]
    torch.distributed.all_gather(parts, padded)
    return torch.cat([local if r == ctx.rank else part[:counts[r]]
                      for r, part in enumerate(parts)])


def train_full(model: nn.Module, head: nn.Module, images: list, items: np.ndarray,
               categories: np.ndarray, pre: Preprocess, cfg: MetricConfig, device: torch.device,
               precision: str, evaluate=None) -> list[dict]:
    """Train backbone and head together on fresh re-shot views each epoch.

    Under torchrun every process draws the same batches and embeds its part of each; the
    loss is computed on the whole batch on every process, scaled by the number of
    processes, so DDP's average of the gradients is the one-process gradient. Batches
    with fewer photos than processes are skipped there."""
    ctx = distributed.current()
    torch.manual_seed(cfg.seed + ctx.seed_offset)
    rng = np.random.default_rng(cfg.seed)
    freeze_early_stages(model, cfg.freeze_stages)
    # The one place the model is wrapped (DDP under torchrun). The classifier takes no
    # part in the embedding's forward pass, hence find_unused_parameters.
    forward = distributed.wrap(distributed.Forward(
        model, lambda net, flat: head(backbone_features(net, flat))),
        find_unused_parameters=True)
    loss, miner = make_loss(cfg)
    own = {id(p) for p in head.parameters()}
    backbone = [p for p in model.parameters() if p.requires_grad and id(p) not in own]
    optimizer = torch.optim.AdamW([{"params": backbone, "lr": cfg.backbone_lr},
                                   {"params": head.parameters(), "lr": cfg.lr}],
                                  weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(np.unique(items)) / cfg.batch_items))
    scheduler = _schedule(optimizer, cfg.epochs * steps_per_epoch)
    # a batch mixes photos and trains as one stack: every photo at the default shape
    dataset = ViewSet(images, pre.fixed(pre.shape), views=-2, seed=cfg.seed)  # 2 re-shot
    photos_of = _photos_by_item(items)
    history = []
    for epoch in range(1, cfg.epochs + 1):
        dataset.epoch = epoch
        model.train()
        freeze_batchnorm_statistics(model)
        order = [photos_of[int(i)][rng.integers(len(photos_of[int(i)]))]
                 for chunk in _batches(items, cfg.batch_items, rng) for i in chunk]
        batches = [order[s:s + cfg.batch_items] for s in range(0, len(order), cfg.batch_items)]
        batches = [b for b in batches if len(b) >= max(2, ctx.world)]
        shares = [_share(b) for b in batches]
        loader = DataLoader(dataset, batch_sampler=[mine for mine, _ in shares],
                            num_workers=cfg.threads if cfg.threads > 1 else 0)
        total, count, started = 0.0, 0, time.perf_counter()
        for photos, (_, counts), batch in zip(track(batches, description=f"epoch {epoch}"),
                                              shares, loader, strict=True):
            n = len(photos)
            flat = batch.flatten(0, 1).to(device).contiguous(memory_format=torch.channels_last)
            with autocast(device, precision):
                embeddings = forward(flat)
            # Two views per photo: each process's rows are 2 x its photos.
            embeddings = _whole_batch(embeddings.float(), [2 * c for c in counts])
            labels = torch.as_tensor(items[photos]).repeat_interleave(2)
            cats = torch.as_tensor(categories[photos]).repeat_interleave(2)
            value = combined_loss(embeddings, labels, cats, cfg, loss, miner)
            optimizer.zero_grad(set_to_none=True)
            (value * ctx.world).backward()
            optimizer.step()
            scheduler.step()
            total, count = total + float(value.detach()) * n, count + n
        record = {"epoch": epoch, "loss": total / max(1, count),
                  "seconds": time.perf_counter() - started}
        if evaluate is not None:
            record.update(evaluate())
        history.append(record)
        log.info("epoch %d: %s", epoch, {k: round(v, 4) for k, v in record.items()})
    return history


def train_embedding(cfg: MetricConfig, data: DataSpec, output: str | Path,
                    name: str = "embedding") -> MetricResult:
    """Train an embedding head on `data` and save run folder + model; see module doc.

    Under torchrun the processes share the backbone's passes (and, in full mode, every
    batch); the main process trains the head of head mode and writes the run folder."""
    cfg = cfg.with_defaults()
    cfg.check()
    with distributed.session(cfg.device, flag="metric.device"):
        return _train_embedding(cfg, data, output, name)


def _train_embedding(cfg: MetricConfig, data: DataSpec, output: str | Path, name: str
                     ) -> MetricResult:
    ctx = distributed.current()
    started = time.perf_counter()
    run_dir = Path(output)
    if cfg.item_column:
        data.group_column = cfg.item_column
    labelled = load_labelled(data)
    train_set, val_set = split_train_val(labelled, data, cfg.seed)
    device = ctx.device if ctx.active else resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    torch.set_num_threads(max(1, cfg.threads))
    # A seeded start (a random-init backbone, the embedding head): the run repeats, and
    # the processes of a distributed run build the same model.
    torch.manual_seed(cfg.seed)
    model, info, base_folder = load_base(cfg.base, cfg.pretrained)
    classifies = len(info.classes) >= 2
    if cfg.posterior_weight is None:  # full mode moves the backbone under the classifier
        cfg = replace(cfg, posterior_weight=DEFAULT_POSTERIOR_WEIGHT
                      if classifies and cfg.mode == "head" else 0.0)
    if cfg.posterior_weight > 0 and not classifies:
        raise ConfigError(f"metric.posterior_weight: the base '{cfg.base}' does not classify, "
                          "so it has no class posterior to append; use 0")
    try:
        taps, tap_channels = stage_taps(model, cfg.stage_taps)
    except ModelError as exc:
        raise ConfigError(f"metric.stage_taps: {exc}") from exc
    model.to(device).to(memory_format=torch.channels_last)
    # Features are taken at each photo's own canvas (`ViewSet`); the head trains on them
    # whatever their shape. Full fine-tuning batches photos together at the default shape.
    pre = info.preprocess
    short_side = int(info.preprocess.resize_size * 1.15)

    train_images, kept, skipped = read_photos(train_set, short_side, cfg.threads)
    train_set = train_set.subset([train_set.samples[i] for i in kept])
    val_images, kept, val_skipped = read_photos(val_set, short_side, cfg.threads)
    val_set = val_set.subset([val_set.samples[i] for i in kept])
    skipped.update(val_skipped)
    if len(train_images) < 4:
        raise DataError(f"{labelled.source}: metric learning needs at least 4 readable "
                        f"training photos, found {len(train_images)}")
    items, categories, _ = _items(train_set)
    val_cats = [s.label for s in val_set.samples]
    train_cats = [s.label for s in train_set.samples]

    pooled = int(pooled_features(model.eval(), torch.zeros(
        1, 3, info.preprocess.size, info.preprocess.size, device=device)).shape[1])
    spec = EmbeddingSpec(dim=cfg.dim, hidden=cfg.hidden,
                         in_features=pooled + sum(tap_channels),
                         posterior_weight=cfg.posterior_weight, classes=len(info.classes),
                         taps=taps, tap_channels=tap_channels)
    head = attach_embedding_head(model, spec).to(device)

    val_plain_set = ViewSet(val_images, pre, views=0, seed=cfg.eval_views_seed)
    val_view_set = ViewSet(val_images, pre, views=-1, seed=cfg.eval_views_seed,
                           strong=True)
    history: list[dict]
    if cfg.mode == "head":
        cached = ViewSet(train_images, pre, views=cfg.views, seed=cfg.seed)
        features = view_features(model, cached, device, precision, cfg.threads,
                                 "features of training views")
        val_plain = view_features(model, val_plain_set, device, precision, cfg.threads,
                                  "features of validation photos")[:, 0]
        val_views = view_features(model, val_view_set, device, precision, cfg.threads,
                                  "features of re-shot validation views")[:, 0]
        if not ctx.main:  # the head trains on the main process alone (a small CPU job)
            return MetricResult(run_dir, run_dir / "model", {})
        model.cpu()  # the backbone's work is done; the head and the classifier stay
        if cfg.hidden == 0:
            _pca_init(head, features[:, 0])
        baseline = _retrieval_scores(val_plain, val_views, val_cats, features[:, 0],
                                     train_cats) if len(val_images) > 1 else {}

        @torch.no_grad()
        def evaluate() -> dict:
            if len(val_images) < 2:
                return {}
            head.eval()
            emb = [search_vectors(model, torch.as_tensor(x)).numpy()
                   for x in (val_plain, val_views, features[:, 0])]
            return _retrieval_scores(emb[0], emb[1], val_cats, emb[2], train_cats)

        history = train_head(features, items, categories, head, cfg, evaluate)
        model.to(device)
    else:
        train_plain_set = ViewSet(train_images, pre, views=0, seed=cfg.seed)

        @torch.no_grad()
        def evaluate() -> dict:
            if len(val_images) < 2:
                return {}
            outs = [view_features(model, ds, device, precision, cfg.threads, "evaluating",
                                  search=True)[:, 0]
                    for ds in (val_plain_set, val_view_set, train_plain_set)]
            return _retrieval_scores(outs[0], outs[1], val_cats, outs[2], train_cats)

        baseline = {}
        history = train_full(model, head, train_images, items, categories, pre, cfg,
                             device, precision, evaluate)
        if not ctx.main:  # the main process writes the run folder
            return MetricResult(run_dir, run_dir / "model", {}, history)
    model.eval()
    final = {k: v for k, v in history[-1].items() if k not in ("epoch", "loss", "seconds")}
    metrics = {"validation": final, "before_training": baseline,
               "train_photos": len(train_images), "val_photos": len(val_images),
               "items": int(len(np.unique(items))), "epochs": cfg.epochs, "precision": precision,
               "train_minutes": (time.perf_counter() - started) / 60}
    info.embedding = spec.to_dict()
    if info.unknown and vector_scorer(info.unknown):
        # the base model's "not a garment" scorer was fitted on the old search vector
        log.warning("the 'not a garment' scorer of %s reads the search vector, which this "
                    "embedding replaces: it is left out; run calibrate-unknown on %s",
                    cfg.base, run_dir / "model")
        info.unknown = None
    # measured on the old vector too; the search layer's default line applies until
    # benchmarks/duplicates.py --save measures this one
    info.duplicate_threshold = None
    info.name = name
    info.metrics = {**info.metrics, "retrieval": metrics}
    info.config = {**info.config, "metric": asdict(cfg)}
    model.cpu()
    run_dir.mkdir(parents=True, exist_ok=True)
    model_dir = save_model(model, info, run_dir / "model")
    carry_summary(base_folder, model_dir)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(
        {"metric": asdict(cfg), "data": asdict(data)}, sort_keys=False))
    (run_dir / "metrics.json").write_text(json.dumps(
        {**metrics, "history": history, "skipped": skipped}, indent=2))
    return MetricResult(run_dir, model_dir, metrics, history)

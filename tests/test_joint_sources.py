"""A joint run: several data sources, one backbone, heads masked where a source has no label."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from fashionlens.config import FieldError, load_config
from fashionlens.data.dataset import PhotoDataset, SourceBatchSampler, SourcedDataset
from fashionlens.errors import DataError
from fashionlens.training.inputs import read_run_data, read_sources

from .helpers import COLOURS, write_photo

pytestmark = pytest.mark.timeout(240)


def _write_csv(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _home(root: Path, per_class: int = 6) -> Path:
    """'Home photos': a `label` column of garment names, split column."""
    rows = []
    names = {"blue": "Shirt", "green": "Pants", "red": "Shoes"}
    for c, (colour_name, colour) in enumerate(sorted(COLOURS.items())):
        for i in range(per_class):
            write_photo(root / "images" / f"h{c}{i}.png", colour, size=(40, 52), seed=10 * c + i)
            rows.append({"image": f"h{c}{i}", "label": names[colour_name],
                         "split": "validation" if i % 3 == 0 else "train"})
    rows.append({"image": "h00", "label": "Not sure", "split": "train"})
    return _write_csv(root / "labels.csv", rows)


def _studio(root: Path, per_class: int = 6) -> Path:
    """'Studio shots': fine article types, a colour and a category to exclude."""
    rows = []
    articles = {"blue": "Shirts", "green": "Jeans", "red": "Heels"}
    for c, (colour_name, colour) in enumerate(sorted(COLOURS.items())):
        for i in range(per_class):
            write_photo(root / "images" / f"s{c}{i}.png", colour, size=(30, 40),
                        seed=500 + 10 * c + i)
            rows.append({"id": f"s{c}{i}", "articleType": articles[colour_name],
                         "baseColour": colour_name.title(), "masterCategory": "Apparel",
                         "split": "validation" if i % 3 == 0 else "train"})
    write_photo(root / "images" / "lip.png", (200, 0, 100), size=(30, 40))
    rows.append({"id": "lip", "articleType": "Lipstick", "baseColour": "Red",
                 "masterCategory": "Personal Care", "split": "train"})
    return _write_csv(root / "styles.csv", rows)


def _config(tmp_path: Path, **changes) -> Path:
    home, studio = _home(tmp_path / "home"), _studio(tmp_path / "studio")
    (tmp_path / "types.yaml").write_text(yaml.safe_dump(
        {"Shirt": "Shirt", "Pants": "Pants", "Shoes": "Shoes", "Not sure": None,
         "Shirts": "Shirt", "Jeans": "Pants", "Heels": "Shoes"}))
    config = {
        "model": {"name": "test_efficientnet", "pretrained": "none", "fit": "letterbox",
                  "height": 48, "width": 36, "drop_rate": 0.0, "drop_path_rate": 0.0},
        "sources": [
            {"name": "home", "data": {"path": str(home), "image_column": "image",
                                      "image_dir": "images", "image_extension": ".png",
                                      "split_column": "split"},
             "columns": {"type": "label"}, "exclude": {"label": ["Not sure"]}},
            {"name": "studio", "data": {"path": str(studio), "image_column": "id",
                                        "image_dir": "images", "image_extension": ".png",
                                        "split_column": "split"},
             "columns": {"type": "articleType"},
             "exclude": {"masterCategory": ["Personal Care"]},
             "height": 32, "width": 24, "draws": 16, "augment": {"rotation": 0.0}},
        ],
        "tasks": [{"name": "type", "mapping": "types.yaml", "unmapped": "drop"},
                  {"name": "baseColour", "colour": True}],
        "train": {"epochs": 1, "batch_size": 4, "num_workers": 0, "precision": "fp32",
                  "device": "cpu", "lr": 0.003, "probe_photos": 100},
        "output": {"dir": str(tmp_path / "runs"), "name": "joint"},
    }
    for dotted, value in changes.items():
        node = config
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[leaf] = value
    path = tmp_path / "joint.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_sources_rename_columns_and_leave_out_excluded_rows(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path))
    assert config.tasks[0].mapping["Jeans"] == "Pants"  # read from the file beside it
    assert config.tasks[0].mapping["Not sure"] is None
    (home, home_set), (studio, studio_set) = read_sources(config)
    assert home.name == "home" and studio.name == "studio"
    # the home photos give `type` from their `label`; the unsure row is left out
    assert len(home_set.samples) == 18
    assert all(set(s.values) == {"type"} for s in home_set.samples)
    # the studio shots give `type` (from articleType) and baseColour; the lipstick is out
    assert len(studio_set.samples) == 18
    assert all(set(s.values) == {"type", "baseColour"} for s in studio_set.samples)
    assert "Lipstick" not in {s.values["type"] for s in studio_set.samples}
    assert len(read_run_data(config).samples) == 36


def test_a_source_naming_a_missing_column_is_refused_naming_file_and_column(
        tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, **{"sources.1.columns": {"type": "article"}}))
    with pytest.raises(DataError, match=r"styles\.csv: no column 'article'"):
        read_sources(config)
    config = load_config(_config(tmp_path, **{"sources.1.exclude": {"category": ["x"]}}))
    with pytest.raises(DataError, match=r"styles\.csv: no column 'category' \(exclude"):
        read_sources(config)


def test_a_mapping_file_that_is_missing_or_not_a_mapping_is_named(tmp_path: Path) -> None:
    path = _config(tmp_path)
    (tmp_path / "types.yaml").unlink()
    with pytest.raises(FieldError, match=r"tasks\[0\]\.mapping.*types\.yaml: mapping file "
                                         r"not found"):
        load_config(path)
    (tmp_path / "types.yaml").write_text("- a\n- b\n")
    with pytest.raises(FieldError, match=r"types\.yaml: expected a mapping"):
        load_config(path)
    with pytest.raises(FieldError, match=r"a mapping file is named in a config file"):
        load_config(values={"tasks": [{"name": "type", "mapping": "types.yaml"}]})


def test_a_source_maps_its_own_values_to_a_tasks(tmp_path: Path) -> None:
    """A source that names things its own way: the home photos' garment names as the
    `tags` task's tags (a file beside the config; ~ leaves the cell without a label)."""
    (tmp_path / "garment-tags.yaml").write_text(yaml.safe_dump(
        {"Shirt": "shirt", "Pants": "pants", "Shoes": None}))
    tasks = [{"name": "type", "mapping": "types.yaml", "unmapped": "drop"},
             {"name": "tags", "kind": "multilabel"}]
    path = _config(tmp_path, tasks=tasks,
                   **{"sources.0.columns": {"type": "label", "tags": "label"},
                      "sources.0.mappings": {"tags": "garment-tags.yaml"}})
    config = load_config(path)
    assert config.sources[0].mappings["tags"]["Shoes"] is None
    (home, home_set), (_, studio_set) = read_sources(config)
    pairs = {(s.values["type"], s.values["tags"]) for s in home_set.samples}
    assert pairs == {("Shirt", "shirt"), ("Pants", "pants"), ("Shoes", "")}
    assert all("tags" not in s.values for s in studio_set.samples)  # not this source's
    wrong = _config(tmp_path, tasks=tasks,
                    **{"sources.0.mappings": {"colour": {"Shirt": "blue"}}})
    with pytest.raises(DataError, match=r"labels\.csv: mappings\.colour of sources\[0\] "
                                        r"\(home\): the source gives no task column 'colour'"):
        read_sources(load_config(wrong))
    with pytest.raises(FieldError, match=r"sources\[0\]\.mappings\.tags"):
        load_config(values={"sources": [{"name": "home", "mappings": {"tags": ["a"]}}]})


def test_unmapped_drop_makes_unknown_values_missing(tmp_path: Path) -> None:
    from fashionlens.config import TaskConfig
    from fashionlens.data.sources import Sample
    from fashionlens.tasks.classification import ClassificationTask

    cfg = TaskConfig(name="type", mapping={"Jeans": "Pants", "Doubt": None}, unmapped="drop")
    task = ClassificationTask(cfg, ["Pants"])
    values = [task.raw(Sample(Path("x"), "", values={"type": v}))
              for v in ("Jeans", "Doubt", "Kurta")]
    assert values == ["Pants", None, None]
    kept = ClassificationTask(TaskConfig(name="type", mapping={"Jeans": "Pants"}), ["Pants"])
    assert kept.raw(Sample(Path("x"), "", values={"type": "Kurta"})) == "Kurta"


def test_batches_stay_within_one_source_and_follow_the_draws() -> None:
    sampler = SourceBatchSampler([10, 7], batch_size=4, seed=3, draws=[None, 12])
    sampler.set_epoch(1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 2 + 3
    sources = [{0 if i < 10 else 1 for i, _ in batch} for batch in batches]
    assert all(len(s) == 1 for s in sources)
    assert sum(len(b) for b, s in zip(batches, sources, strict=True) if s == {1}) == 12
    seeds = [seed for batch in batches for _, seed in batch]
    assert len(set(seeds)) == len(seeds)  # every photo its own augmentation seed
    again = SourceBatchSampler([10, 7], batch_size=4, seed=3, draws=[None, 12])
    again.set_epoch(1)
    assert list(again) == batches  # a resumed run draws the same batches
    again.set_epoch(2)
    assert list(again) != batches
    # two processes share each batch between them
    halves = [SourceBatchSampler([10, 7], 4, 3, [None, 12], rank=r, world=2) for r in (0, 1)]
    for half in halves:
        half.set_epoch(1)
    merged = [a + b for a, b in zip(*(list(h) for h in halves), strict=True)]
    assert merged == batches


def test_sourced_dataset_numbers_rows_source_after_source() -> None:
    from PIL import Image

    def transform(img: Image.Image):
        import torch
        return torch.zeros(3, *img.size[::-1])

    from fashionlens.data.sources import Sample
    parts = []
    for n in (3, 2):
        part = PhotoDataset([Sample(Path(f"{n}-{i}"), "") for i in range(n)], transform)
        part._cache = [Image.new("RGB", (4 + n, 6)) for _ in range(n)]
        parts.append(part)
    joint = SourcedDataset(parts, ["a", "b"])
    assert len(joint) == 5 and joint.starts() == [0, 3]
    image, row = joint[(4, 7)]
    assert row == 4 and tuple(image.shape) == (3, 6, 6)  # the second source's photo
    assert [s.path.name for s in joint.samples] == ["3-0", "3-1", "3-2", "2-0", "2-1"]
    assert len(joint.with_transform(transform)) == 5
    # a photo found unreadable in a batch is filed under its own source
    from fashionlens.errors import ImageError
    joint.record_skipped([ImageError(Path("2-1"), "truncated"), ImageError(Path("3-0"), "x")])
    assert parts[1].skipped == {"2-1": "truncated"} and parts[0].skipped == {"3-0": "x"}
    assert joint.skipped == {"3-0": "x", "2-1": "truncated"}


def test_joint_training_masks_heads_where_a_source_has_no_label(tmp_path: Path) -> None:
    from fashionlens.training.run import train

    config = load_config(_config(tmp_path))
    result = train(config)
    info = json.loads((result.model_dir / "model.json").read_text())
    heads = {h["name"]: h for h in info["heads"]}
    assert heads["type"]["classes"] == ["Pants", "Shirt", "Shoes"]
    assert heads["baseColour"]["classes"] == ["Blue", "Green", "Red"]
    metrics = result.metrics["tasks"]
    # type is scored on both sources' validation photos, baseColour on the studio's only
    assert metrics["type"]["num_images"] == 12 and metrics["baseColour"]["num_images"] == 6
    saved = yaml.safe_load((result.output_dir / "config.yaml").read_text())
    assert [s["name"] for s in saved["sources"]] == ["home", "studio"]
    assert all(Path(s["data"]["path"]).is_absolute() for s in saved["sources"])
    assert saved["tasks"][0]["mapping"]["Jeans"] == "Pants"  # the run keeps its taxonomy
    assert np.isfinite(result.fit.history[-1]["train_loss"])
    # what train.grad_clip is chosen from: the norms before clipping, per epoch
    last = result.fit.history[-1]
    assert 0 < last["grad_norm_median"] <= last["grad_norm_max"]
    # the model card names each source, not the unused one-source `data` section
    from fashionlens.models import read_info
    from fashionlens.models.card import write_model_card

    card = write_model_card(result.model_dir, read_info(result.model_dir), result.metrics)
    text = Path(card).read_text()
    assert "- Source `home`:" in text and "- Source `studio`:" in text
    assert "- Split:" not in text
    # evaluate --task type on studio shots labelled in their own words (Jeans, Heels):
    # mapped as in training, so every validation shot is scored, the lipstick named apart
    from fashionlens import evaluate

    scored = evaluate(result.model_dir, tmp_path / "studio" / "styles.csv", task="type",
                      image_column="id", target_column="articleType", image_dir="images",
                      image_extension=".png", split_column="split", splits=["validation"])
    assert scored.metrics["num_images"] == 6 and scored.unknown_labels == {}
    everything = evaluate(result.model_dir, tmp_path / "studio" / "styles.csv", task="type",
                          image_column="id", target_column="articleType",
                          image_dir="images", image_extension=".png")
    assert everything.metrics["num_images"] == 18
    assert everything.unknown_labels == {"Lipstick": 1}


def test_a_sources_refit_weight_must_be_a_whole_number_from_one(tmp_path: Path) -> None:
    assert load_config(_config(tmp_path)).sources[0].refit_weight == 1
    assert load_config(_config(tmp_path, **{"sources.1.refit_weight": 20})
                       ).sources[1].refit_weight == 20
    for bad in (0, 2.5, "many", True):
        with pytest.raises(FieldError, match=r"sources\[1\]\.refit_weight"):
            load_config(_config(tmp_path, **{"sources.1.refit_weight": bad}))

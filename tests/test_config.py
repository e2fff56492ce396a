"""Run configs: YAML, dotted overrides, readable errors, saving the resolved config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fashionlens.config import RunConfig, load_config, parse_override
from fashionlens.errors import ConfigError


def _yaml(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_without_a_file():
    cfg = load_config()
    assert isinstance(cfg, RunConfig)
    assert cfg.train.epochs == RunConfig().train.epochs
    assert cfg.data.path == ""


def test_yaml_file_is_loaded(tmp_path):
    path = _yaml(tmp_path / "run.yaml", {
        "data": {"path": "/abs/labels.csv", "image_column": "id", "exclude_labels": ["Skip"]},
        "model": {"name": "test_efficientnet", "image_size": 96},
        "train": {"epochs": 7, "lr": 0.0005, "linear_probe": False, "max_minutes": 2},
        "augment": {"scale": [0.5, 1.0]},
        "seed": 11,
    })
    cfg = load_config(path)
    assert cfg.data.path == "/abs/labels.csv"
    assert cfg.data.image_column == "id"
    assert cfg.data.exclude_labels == ["Skip"]
    assert cfg.model.name == "test_efficientnet" and cfg.model.image_size == 96
    assert cfg.train.epochs == 7 and cfg.train.lr == 0.0005
    assert cfg.train.linear_probe is False
    assert cfg.train.max_minutes == 2.0 and isinstance(cfg.train.max_minutes, float)
    assert cfg.augment.scale == (0.5, 1.0)
    assert cfg.seed == 11
    # untouched fields keep their defaults
    assert cfg.train.batch_size == RunConfig().train.batch_size


def test_relative_data_path_is_relative_to_the_config_file(tmp_path, monkeypatch):
    path = _yaml(tmp_path / "configs" / "run.yaml", {"data": {"path": "../data/labels.csv"}})
    monkeypatch.chdir(tmp_path / "configs")
    assert load_config(path).data.path == str((tmp_path / "data" / "labels.csv").resolve())
    monkeypatch.chdir(tmp_path)
    assert load_config(Path("configs/run.yaml")).data.path == str(
        (tmp_path / "data" / "labels.csv").resolve())


def test_dotted_overrides_win_over_file_and_values(tmp_path):
    path = _yaml(tmp_path / "run.yaml", {"train": {"epochs": 7, "batch_size": 16}})
    cfg = load_config(path, values={"train": {"epochs": 5}, "seed": 3},
                      overrides=["train.epochs=3", "train.tta=true", "model.image_size=null",
                                 "data.exclude_labels=[Skip, Not sure]", "output.name=x1",
                                 "train.lr=0.01"])
    assert cfg.train.epochs == 3
    assert cfg.train.batch_size == 16
    assert cfg.train.tta is True
    assert cfg.model.image_size is None
    assert cfg.data.exclude_labels == ["Skip", "Not sure"]
    assert cfg.output.name == "x1"
    assert cfg.seed == 3
    assert cfg.train.lr == 0.01


def test_scientific_notation_for_floats():
    # YAML 1.1 reads "1e-3" as a string; a learning rate is usually written that way.
    cfg = load_config(overrides=["train.lr=1e-3", "train.weight_decay=5e-2"])
    assert cfg.train.lr == pytest.approx(0.001)
    assert cfg.train.weight_decay == pytest.approx(0.05)


def test_scientific_notation_in_a_yaml_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  lr: 3e-4\n")
    assert load_config(path).train.lr == pytest.approx(3e-4)


def test_string_field_accepts_numbers():
    assert load_config(overrides=["output.name=2024"]).output.name == "2024"


def test_parse_override():
    assert parse_override("train.epochs=5") == {"train": {"epochs": 5}}
    assert parse_override("seed=1") == {"seed": 1}
    assert parse_override("output.name=a=b") == {"output": {"name": "a=b"}}
    assert parse_override("model.image_size=") == {"model": {"image_size": None}}
    with pytest.raises(ConfigError, match="section.field=value"):
        parse_override("train.epochs")


@pytest.mark.parametrize("override, field", [
    ("train.epoch=3", "epoch"),
    ("trian.epochs=3", "trian"),
    ("model.size=3", "size"),
])
def test_unknown_field_is_named(override, field):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    message = str(info.value)
    assert f"'{field}'" in message
    assert "known fields" in message


def test_unknown_field_in_yaml_lists_known_ones(tmp_path):
    path = _yaml(tmp_path / "run.yaml", {"train": {"epochs": 2, "learning_rate": 0.1}})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "train" in message and "'learning_rate'" in message
    assert "lr" in message and "epochs" in message


@pytest.mark.parametrize("override, where", [
    ("train.epochs=abc", "train.epochs"),
    ("train.epochs=2.5", "train.epochs"),
    ("train.linear_probe=maybe", "train.linear_probe"),
    ("train.linear_probe=1", "train.linear_probe"),
    ("train.lr=fast", "train.lr"),
    ("train.epochs=true", "train.epochs"),
    ("model.name=[a, b]", "model.name"),
    ("train=3", "train"),
])
def test_bad_type_names_the_field(override, where):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    assert where in str(info.value)


@pytest.mark.parametrize("override, where", [
    ("train.schedule=linear", "train.schedule"),
    ("train.balance=oversample", "train.balance"),
    ("train.precision=fp16", "train.precision"),
    ("train.monitor=loss", "train.monitor"),
    ("train.epochs=0", "train.epochs"),
    ("train.batch_size=-1", "train.batch_size"),
    ("train.lr=0", "train.lr"),
])
def test_invalid_values(override, where):
    with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
        load_config(overrides=[override])


def test_missing_and_invalid_config_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML") as info:
        load_config(bad)
    assert str(bad) in str(info.value)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty).to_dict() == RunConfig().to_dict()


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(overrides=["train.epochs=3", "data.path=/data/x.csv",
                                 "augment.ratio=[0.5, 2.0]", "data.exclude_labels=[Skip]"])
    path = tmp_path / "config.yaml"
    cfg.save(path)
    saved = yaml.safe_load(path.read_text())
    assert saved["train"]["epochs"] == 3
    assert saved["augment"]["ratio"] == [0.5, 2.0]  # plain YAML lists, no python tuples
    assert "!!python" not in path.read_text()
    again = load_config(path)
    assert again.to_dict() == cfg.to_dict()


def test_precision_is_auto_by_default_and_accepts_each_choice():
    assert load_config().train.precision == "auto"
    for choice in ("auto", "bf16", "fp32"):
        assert load_config(overrides=[f"train.precision={choice}"]).train.precision == choice


@pytest.mark.parametrize("override, where", [
    ("train.lr=nan", "train.lr"),
    ("train.lr=.inf", "train.lr"),  # YAML's spelling of infinity
    ("train.lr=NaN", "train.lr"),
    ("train.weight_decay=nan", "train.weight_decay"),
    ("train.max_minutes=inf", "train.max_minutes"),  # a float | None field
    ("data.val_fraction=nan", "data.val_fraction"),
    ("model.drop_rate=-inf", "model.drop_rate"),
])
def test_float_fields_must_be_finite(override, where):
    # `lr > 0`-style checks let NaN through; every float field is checked where it is read.
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    assert str(info.value).startswith(f"{where}: must be a finite number")


@pytest.mark.parametrize("value", ["0", "-1"])
def test_grad_clip_must_be_positive(value):
    assert load_config(overrides=["train.grad_clip=2.5"]).train.grad_clip == 2.5
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[f"train.grad_clip={value}"])
    assert str(info.value).startswith("train.grad_clip: must be positive")


def test_finite_check_covers_values_from_the_cli():
    with pytest.raises(ConfigError, match=r"train\.lr: must be a finite number"):
        load_config(values={"train": {"lr": float("nan")}})


@pytest.mark.parametrize("text", ["- data\n- train\n", "just words\n", "42\n"])
def test_a_yaml_config_that_is_not_a_mapping_names_the_file(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: expected a mapping of sections")


def test_a_bad_field_in_a_yaml_file_names_the_file(tmp_path):
    path = _yaml(tmp_path / "run.yaml", {"train": {"lr": "fast"}})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "train.lr" in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize("name", ["a/b", "..", "x\\y"])
def test_run_name_is_a_plain_folder_name(name):
    with pytest.raises(ConfigError, match=r"output\.name"):
        load_config(values={"output": {"name": name}})


def test_exist_ok_defaults_to_false():
    assert load_config().output.exist_ok is False
    assert load_config(overrides=["output.exist_ok=true"]).output.exist_ok is True


def test_metric_section_is_part_of_the_run_config(tmp_path):
    path = _yaml(tmp_path / "emb.yaml", {"metric": {"loss": "supcon", "margin": 0.4,
                                                    "mode": "full"}})
    cfg = load_config(path, overrides=["metric.margin=0.3", "metric.dim=64"])
    assert (cfg.metric.loss, cfg.metric.margin, cfg.metric.dim) == ("supcon", 0.3, 64)
    assert cfg.metric.epochs is None and cfg.metric.with_defaults().epochs == 5  # full mode
    cfg.save(tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml").metric == cfg.metric


@pytest.mark.parametrize("override, message", [
    ("metric.margn=0.2", "metric: unknown field 'margn'"),
    ("metric.margin=nan", "metric.margin: must be a finite number"),
    ("metric.loss=arcface", "metric.loss: 'arcface' is not one of triplet, supcon"),
    ("metric.epochs=0", "metric.epochs: must be at least 1"),
])
def test_metric_section_is_checked(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


def test_a_bad_value_set_only_by_the_file_names_the_file(tmp_path):
    path = _yaml(tmp_path / "run.yaml", {"train": {"lr": -1}})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"train.lr: must be positive, got -1.0 (in {path})"
    with pytest.raises(ConfigError) as info:  # an override's bad value is not the file's
        load_config(path, overrides=["train.lr=-2"])
    assert str(info.value) == "train.lr: must be positive, got -2.0"


@pytest.mark.parametrize("path", sorted(Path(__file__).parent.parent.glob("configs/*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_configs_load(path):
    load_config(path)


def test_a_config_extends_another_and_names_only_what_differs(tmp_path):
    (tmp_path / "base" / "labels.csv").parent.mkdir()
    (tmp_path / "base" / "labels.csv").write_text("image,label\n")
    (tmp_path / "base" / "types.yaml").write_text("Jeans: Pants\n")
    (tmp_path / "stage" / "more.csv").parent.mkdir()
    (tmp_path / "stage" / "more.csv").write_text("image,label\n")
    _yaml(tmp_path / "base" / "run.yaml", {
        "sources": [
            {"name": "home", "data": {"path": "labels.csv"}, "draws": 100},
            {"name": "studio", "data": {"path": "labels.csv"},
             "exclude": {"masterCategory": ["Home"]}, "height": 96}],
        "tasks": [{"name": "type", "mapping": "types.yaml"}, {"name": "colour"}],
        "train": {"epochs": 6, "lr": 0.001, "batch_size": 16},
        "output": {"name": "stage1"}})
    # the base lies in another folder: its relative paths stay its own
    stage = _yaml(tmp_path / "stage" / "run.yaml", {
        "extends": "../base/run.yaml",
        "sources": [{"name": "studio", "exclude": None, "draws": 50},
                    {"name": "people", "data": {"path": "more.csv"}}],
        "tasks": [{"name": "colour", "weight": 2.0}],
        "train": {"lr": 0.0003},
        "output": {"name": "stage2"}})
    cfg = load_config(stage)
    home, studio, people = cfg.sources
    assert [s.name for s in cfg.sources] == ["home", "studio", "people"]
    assert home.data.path == str((tmp_path / "base" / "labels.csv").resolve())
    assert home.draws == 100
    assert studio.exclude == {} and studio.draws == 50 and studio.height == 96
    assert people.data.path == str((tmp_path / "stage" / "more.csv").resolve())
    assert cfg.tasks[0].mapping == {"Jeans": "Pants"} and cfg.tasks[1].weight == 2.0
    assert (cfg.train.epochs, cfg.train.lr, cfg.train.batch_size) == (6, 0.0003, 16)
    assert cfg.output.name == "stage2"
    # the base itself is read as it was
    assert load_config(tmp_path / "base" / "run.yaml").sources[1].exclude == {
        "masterCategory": ["Home"]}
    # starting weights beside the base are the base's; a mapping file the base names
    # wrongly is reported with both files
    (tmp_path / "base" / "w.safetensors").write_bytes(b"")
    _yaml(tmp_path / "base" / "weights.yaml", {"model": {"pretrained": "w.safetensors"},
                                               "tasks": [{"name": "type", "mapping": "no.yaml"}]})
    child = _yaml(tmp_path / "stage" / "child.yaml", {"extends": "../base/weights.yaml",
                                                      "tasks": [{"name": "type", "mapping": None}]})
    assert load_config(child).model.pretrained == str((tmp_path / "base" / "w.safetensors")
                                                      .resolve())
    broken = _yaml(tmp_path / "stage" / "broken.yaml", {"extends": "../base/weights.yaml"})
    with pytest.raises(ConfigError, match=r"no\.yaml: mapping file not found.*broken\.yaml or "
                                          r"the configs it extends: .*weights\.yaml"):
        load_config(broken)


def test_extends_refuses_loops_missing_files_and_non_paths(tmp_path):
    _yaml(tmp_path / "a.yaml", {"extends": "b.yaml"})
    _yaml(tmp_path / "b.yaml", {"extends": "a.yaml"})
    with pytest.raises(ConfigError, match="extend each other in a loop"):
        load_config(tmp_path / "a.yaml")
    gone = _yaml(tmp_path / "c.yaml", {"extends": "gone.yaml"})
    with pytest.raises(ConfigError, match=r"c\.yaml: extends .*gone\.yaml, which is not a file"):
        load_config(gone)
    _yaml(tmp_path / "bad.yaml", {"train": {"lr": -1}, "model": {"colour": 3}})
    child = _yaml(tmp_path / "child.yaml", {"extends": "bad.yaml", "model": {"colour": None}})
    with pytest.raises(ConfigError, match=r"train\.lr: must be positive.*child\.yaml or the "
                                          r"configs it extends: .*bad\.yaml"):
        load_config(child)
    odd = _yaml(tmp_path / "d.yaml", {"extends": ["a.yaml"]})
    with pytest.raises(ConfigError, match=r"extends: expected the path .*d\.yaml"):
        load_config(odd)


def test_each_fashion_stage_differs_from_the_one_before_only_where_its_file_says():
    """The stage configs extend each other; the values their files set are the whole
    difference (what the runs recorded, checked when they became `extends` files)."""
    folder = Path(__file__).parent.parent / "configs"
    stage3 = load_config(folder / "fashion-stage3.yaml").to_dict()
    stage4 = load_config(folder / "fashion-stage4.yaml").to_dict()
    changed = {(section, key) for section in stage3 if isinstance(stage3[section], dict)
               for key in stage3[section] if stage3[section][key] != stage4[section][key]}
    assert changed == {("model", "pretrained"), ("train", "epochs"), ("train", "lr"),
                       ("train", "max_minutes"), ("output", "name")}
    assert stage3["sources"] == stage4["sources"] and stage3["tasks"] == stage4["tasks"]
    assert stage4["sources"][0]["draws"] == 6000 and stage4["train"]["keep"] == "last"


def test_overrides_reach_a_named_source_or_task_and_merge_mappings(tmp_path):
    """`-o sources.studio.draws=50` changes the source named studio, as `extends` merges
    sources and tasks by name; a mapping field changes key by key, the rest kept."""
    (tmp_path / "labels.csv").write_text("image,label\n")
    run = _yaml(tmp_path / "run.yaml", {
        "sources": [
            {"name": "home", "data": {"path": "labels.csv"}, "draws": 100},
            {"name": "studio", "data": {"path": "labels.csv"}, "draws": 200,
             "augment": {"scale": [0.5, 1.0], "backdrop": 0.5},
             "exclude": {"masterCategory": ["Home"]}}],
        "tasks": [{"name": "type", "weight": 2.0}, {"name": "colour"}]})
    cfg = load_config(run, overrides=["sources.studio.draws=50",
                                      "sources.studio.augment.backdrop=0",
                                      "sources.studio.exclude.usage=[NA]",
                                      "tasks.colour.weight=3"])
    home, studio = cfg.sources
    assert (home.name, home.draws, studio.draws) == ("home", 100, 50)
    assert studio.augment == {"scale": [0.5, 1.0], "backdrop": 0}
    assert studio.exclude == {"masterCategory": ["Home"], "usage": ["NA"]}
    assert [(t.name, t.weight) for t in cfg.tasks] == [("type", 2.0), ("colour", 3.0)]
    with pytest.raises(ConfigError, match=r"sources\.people: no item named 'people' here; "
                                          r"named: home, studio"):
        load_config(run, overrides=["sources.people.draws=5"])
    with pytest.raises(ConfigError, match=r"tasks\.type: unknown field 'nope'"):
        load_config(run, overrides=["tasks.type.nope=1"])

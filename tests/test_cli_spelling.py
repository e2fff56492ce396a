"""One CLI spelling (tracker issue 10): `--model/-m NAME_OR_PATH` and `--data` on every command
that takes them, and metric learning's settings as the run config's `metric:` section with
`-o/--set` overrides, like `train`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer.main
import yaml
from typer.testing import CliRunner

from fashionlens.cli import embed
from fashionlens.cli.main import app
from fashionlens.config import load_config
from fashionlens.errors import ConfigError, DataError, ModelError
from fashionlens.inference import DEFAULT_MODEL, SAMPLE_PHOTOS
from fashionlens.models.resolve import DEFAULT_NAME

runner = CliRunner()
needs_default_model = pytest.mark.skipif(
    not (DEFAULT_MODEL / "model.json").is_file() or not any(SAMPLE_PHOTOS.rglob("*.jpg")),
    reason="the bundled default model or the sample photos are not there")


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _ok(result):
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def _option(command: list[str], name: str):
    group = typer.main.get_command(app)
    for part in command:
        group = group.commands[part]
    return next(p for p in group.params if p.name == name)


def test_model_and_data_have_one_spelling_and_one_help_text():
    model = [_option(c, "model") for c in (["predict"], ["evaluate"])]
    assert all(o.opts == ["--model", "-m"] for o in model)
    assert len({o.help for o in model}) == 1 and "'default'" in model[0].help
    for command in (["train-embedding"], ["evaluate-search"], ["search"], ["catalog", "build"],
                    ["serve"]):
        option = _option(command, "model")
        assert option.opts == ["--model", "-m"], command
        assert option.help.startswith(model[0].help.rstrip(".")), command
    data = [_option([c], "data") for c in ("train", "evaluate", "train-embedding",
                                           "evaluate-search")]
    assert all(o.opts == ["--data"] for o in data) and len({o.help for o in data}) == 1
    overrides = [_option([c], "override") for c in ("train", "train-embedding")]
    assert all(o.opts == ["--set", "-o"] for o in overrides)
    # catalog's --set is item metadata, and says so
    assert "not a config override" in _option(["catalog", "update"], "fields").help


def _predictions(*args) -> list[dict]:
    result = _ok(_invoke("predict", SAMPLE_PHOTOS / "Dress", "--top-k", "2", "--json", *args))
    return [json.loads(line) for line in result.stdout.splitlines()]


@needs_default_model
def test_predict_takes_every_spelling_of_the_bundled_model():
    expected = _predictions()
    for args in (["--model", "default"], ["-m", DEFAULT_NAME], ["-m", DEFAULT_MODEL]):
        assert _predictions(*args) == expected, args


def test_predict_and_evaluate_take_a_run_folder_or_its_model(trained_run, tiny_folder):
    run, model = trained_run.output_dir, trained_run.model_dir
    assert _predictions("-m", run) == _predictions("--model", model)

    def report(*args) -> dict:
        result = json.loads(_ok(_invoke("evaluate", *args, "--json")).stdout)
        return {key: result[key] for key in ("num_images", "accuracy", "per_class")}

    expected = report(model, tiny_folder)  # the older positional MODEL DATA
    assert report("--model", run, "--data", tiny_folder) == expected
    assert report("-m", model, tiny_folder) == expected
    assert report("--data", tiny_folder, run) == expected


@needs_default_model
def test_evaluate_defaults_to_the_bundled_model():
    """The default answers several tasks and a folder of photos per class labels one: it
    says which task to name, and --task scores that one as a one-task model is scored."""
    from fashionlens.inference import Predictor

    refused = _invoke("evaluate", "--data", SAMPLE_PHOTOS)
    assert isinstance(refused.exception, DataError), refused.output
    assert str(refused.exception).endswith("--task type")
    by_default = json.loads(_ok(_invoke("evaluate", "--data", SAMPLE_PHOTOS, "--task", "type",
                                        "--json")).stdout)
    by_name = json.loads(_ok(_invoke("evaluate", "-m", DEFAULT_NAME, SAMPLE_PHOTOS,
                                     "--task", "type", "--json")).stdout)
    assert by_default["per_class"] == by_name["per_class"] and by_default["num_images"] == 40
    photos = sorted(SAMPLE_PHOTOS.rglob("*.jpg"))
    right = sum(p.tasks["type"]["label"] == path.parent.name
                for p, path in zip(Predictor().predict_paths(photos), photos, strict=True))
    assert by_default["accuracy"] == pytest.approx(right / len(photos))
    wrong = _invoke("evaluate", "--data", SAMPLE_PHOTOS, "--task", "tags")
    assert isinstance(wrong.exception, DataError)
    assert "--task tags: not a classification task" in str(wrong.exception)


def test_evaluate_argument_errors_name_what_was_typed(tmp_path, tiny_folder):
    one = _invoke("evaluate", tiny_folder)
    assert isinstance(one.exception, ConfigError) and "missing DATA" in str(one.exception)
    extra = _invoke("evaluate", "--model", "default", "--data", tiny_folder, "more")
    assert "unexpected argument(s) more" in str(extra.exception)
    missing = tmp_path / "no-model"
    by_flag = _invoke("evaluate", "--model", missing, "--data", tiny_folder)
    assert isinstance(by_flag.exception, ModelError)
    assert str(by_flag.exception).startswith(f"--model {missing}: no such model folder")
    by_argument = _invoke("evaluate", missing, tiny_folder)
    assert str(by_argument.exception).startswith(f"MODEL {missing}: no such model folder")


@pytest.fixture
def captured(monkeypatch):
    """train-embedding up to the training itself: what it would train with."""
    calls: list[dict] = []

    def fake(cfg, spec, output, name="embedding"):
        calls.append({"cfg": cfg, "spec": spec, "output": Path(output), "name": name})
        raise SystemExit(0)

    monkeypatch.setattr(embed, "train_embedding", fake)
    return calls


@pytest.mark.parametrize("flag", ["--model", "-m", "--base"])
def test_train_embedding_takes_every_spelling_of_a_model(flag, captured, trained_run,
                                                         tiny_folder):
    for spelling in ("default", DEFAULT_NAME, trained_run.output_dir, "efficientnet_lite0"):
        _ok(_invoke("train-embedding", "--data", tiny_folder, flag, spelling))
        assert captured[-1]["cfg"].base == str(spelling)
    bad = _invoke("train-embedding", tiny_folder, flag, "no/such/model")
    typed = "--model" if flag == "-m" else flag  # -m is short for --model
    assert str(bad.exception) == f"{typed} no/such/model: no such model folder"
    both = _invoke("train-embedding", tiny_folder, "--model", "default", "--base", "default")
    assert isinstance(both.exception, ConfigError) and "--base" in str(both.exception)


def _yaml(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def test_train_embedding_reads_the_metric_section_then_flags_then_overrides(
        tmp_path, captured, tiny_folder):
    config = _yaml(tmp_path / "conf" / "emb.yaml", {
        "metric": {"loss": "supcon", "margin": 0.5, "dim": 32, "views": 2},
        "data": {"path": f"../{tiny_folder.name}"},
        "output": {"dir": str(tmp_path / "runs"), "name": "shop"},
    })
    (tmp_path / tiny_folder.name).symlink_to(tiny_folder)
    _ok(_invoke("train-embedding", config, "-o", "metric.margin=0.3", "--dim", "16",
                "--set", "metric.views=3", "--views", "1"))
    call = captured[-1]
    cfg = call["cfg"]
    assert (cfg.loss, cfg.margin, cfg.dim, cfg.views) == ("supcon", 0.3, 16, 3)
    assert Path(call["spec"].path) == (tmp_path / tiny_folder.name).resolve()
    assert call["output"] == tmp_path / "runs" / "shop" and call["name"] == "shop"
    # the older spelling still works, with the flags' defaults
    _ok(_invoke("train-embedding", tiny_folder, "--margin", "0.25"))
    cfg = captured[-1]["cfg"]
    assert (cfg.margin, cfg.loss, cfg.dim) == (0.25, "triplet", 256)
    assert captured[-1]["output"] == Path("runs") / "embedding"


def test_train_embedding_config_errors_name_the_file_flag_or_field(tmp_path, tiny_folder,
                                                                    captured):
    typo = _yaml(tmp_path / "typo.yaml", {"metric": {"margn": 0.2}})
    result = _invoke("train-embedding", typo, tiny_folder)
    assert isinstance(result.exception, ConfigError)
    assert "metric: unknown field 'margn'" in str(result.exception)
    assert str(typo) in str(result.exception) and "margin" in str(result.exception)

    negative = _yaml(tmp_path / "negative.yaml", {"metric": {"margin": -1}})
    message = str(_invoke("train-embedding", negative, tiny_folder).exception)
    assert message == f"metric.margin: must be positive, got -1.0 (in {negative})"
    # the same value from -o or a flag is not the file's fault
    message = str(_invoke("train-embedding", negative, tiny_folder,
                          "-o", "metric.margin=-2").exception)
    assert message == "metric.margin: must be positive, got -2.0"
    assert str(_invoke("train-embedding", negative, tiny_folder, "--margin", "-3").exception) \
        == "--margin: must be positive, got -3.0"

    nan = _yaml(tmp_path / "nan.yaml", {"metric": {"category_weight": float("nan")}})
    message = str(_invoke("train-embedding", nan, tiny_folder).exception)
    assert message.startswith("metric.category_weight: must be a finite number")
    assert str(nan) in message
    message = str(_invoke("train-embedding", tiny_folder, "-o", "metric.margin=nan").exception)
    assert message.startswith("metric.margin: must be a finite number")

    bad_base = _yaml(tmp_path / "base.yaml", {"metric": {"base": "no/such/model"}})
    message = str(_invoke("train-embedding", bad_base, tiny_folder).exception)
    assert message == f"{bad_base}: metric.base no/such/model: no such model folder"
    assert captured == []


def test_train_embedding_and_evaluate_search_argument_errors(tmp_path, tiny_folder):
    for command in ("train-embedding", "evaluate-search"):
        none = _invoke(command)
        assert isinstance(none.exception, ConfigError) and "--data" in str(none.exception)
        twice = _invoke(command, tiny_folder, "--data", tiny_folder)
        assert "one data set at most" in str(twice.exception)


def test_train_embedding_saves_the_resolved_config(tmp_path, tiny_folder, model_dir,
                                                   monkeypatch):
    config = _yaml(tmp_path / "emb.yaml", {
        "metric": {"dim": 8, "views": 1, "epochs": 1, "device": "cpu", "posterior_weight": 0.2,
                   "batch_items": 8, "threads": 1},
        "output": {"dir": str(tmp_path / "runs"), "name": "emb"},
    })
    monkeypatch.chdir(tiny_folder.parent)  # --data relative to here, saved absolute
    _ok(_invoke("train-embedding", config, "--data", tiny_folder.name, "--model", model_dir,
                "-o", "metric.margin=0.35"))
    saved = tmp_path / "runs" / "emb" / "config.yaml"
    again = load_config(saved)  # the run can be repeated from its own folder
    assert again.metric.margin == 0.35 and again.metric.dim == 8
    assert again.metric.base == str(model_dir)
    assert Path(again.data.path) == Path(tiny_folder).resolve()

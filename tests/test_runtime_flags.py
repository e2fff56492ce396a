"""`--runtime` on `catalog` and `search`, and `runtime` of the service: ONNX Runtime gives
the answers torch gives, and a catalog embedded by one is searched by the other (every
backend has the same fingerprint)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from fashionlens.cli.main import app
from fashionlens.errors import ConfigError
from fashionlens.search.catalog import Catalog
from fashionlens.service import Engine, ServiceSettings, create_app

from .test_catalog import write_shop
from .test_service import KEY, post_image

pytest.importorskip("onnxruntime")

runner = CliRunner()
# torch picks bf16 on CPUs that have it (ONNX Runtime runs fp32): vectors then differ by
# about 2e-3, the rankings of these well-separated photos not at all.
ATOL = 1e-2
CSV_FLAGS = ["--id-column", "sku", "--image-column", "photo", "--image-dir", "photos",
             "--image-ext", ".png"]


def _ok(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def _search(catalog, photo, runtime: str) -> list[dict]:
    result = _ok("search", photo, "--catalog", catalog, "-k", "5", "--json",
                 "--runtime", runtime)
    return json.loads(result.stdout)["results"]


@pytest.fixture(scope="module")
def embed_model(tmp_path_factory, embedding_model_dir):
    """A writable copy of the catalog tests' model: its exports are written inside."""
    return shutil.copytree(embedding_model_dir, tmp_path_factory.mktemp("rt") / "model")


@pytest.fixture(scope="module")
def catalogs(tmp_path_factory, embed_model):
    """The same 8-item shop built on torch and on ONNX Runtime, and a 9th photo added to
    both with `catalog add` on the other runtime."""
    root = tmp_path_factory.mktemp("catalogs")
    shop = write_shop(root / "shop", n=8)
    extra = write_shop(root / "extra", n=1, start=8).parent / "photos" / "item08.png"
    built = {}
    for runtime, other in (("torch", "onnxruntime"), ("onnxruntime", "torch")):
        folder = root / runtime
        _ok("catalog", "build", shop, "--catalog", folder, "--model", embed_model,
            "--runtime", runtime, *CSV_FLAGS)
        _ok("catalog", "add", extra, "--catalog", folder, "--id", "extra",
            "--runtime", other)
        built[runtime] = folder
    return built, shop.parent / "photos"


def _vectors(folder) -> dict[str, np.ndarray]:
    with Catalog(folder) as cat:
        return {item.id: cat._stored_vector(item.id)[1] for item in cat.items()}


def test_catalogs_built_on_either_runtime_hold_the_same_vectors(catalogs, embed_model):
    built, _ = catalogs
    infos = [json.loads(_ok("catalog", "info", "--catalog", f, "--json").stdout)
             for f in built.values()]
    assert infos[0]["model"] == infos[1]["model"] == str(embed_model.resolve())
    assert infos[0]["items"] == infos[1]["items"] == 9
    torch_vectors, onnx_vectors = (_vectors(f) for f in built.values())
    assert torch_vectors.keys() == onnx_vectors.keys()
    for key, vector in torch_vectors.items():
        np.testing.assert_allclose(onnx_vectors[key], vector, atol=ATOL, err_msg=key)


def test_search_on_onnxruntime_finds_what_torch_finds(catalogs):
    built, photos = catalogs
    for photo in ("item02.png", "item05.png"):
        expected = _search(built["torch"], photos / photo, "torch")
        assert expected[0]["id"] == photo.removesuffix(".png")
        for folder in built.values():
            for runtime in ("torch", "onnxruntime"):
                found = _search(folder, photos / photo, runtime)
                assert [m["id"] for m in found] == [m["id"] for m in expected]
                np.testing.assert_allclose([m["similarity"] for m in found],
                                           [m["similarity"] for m in expected], atol=ATOL)


def test_reembed_on_onnxruntime_keeps_the_catalog_valid(catalogs, embed_model, tmp_path):
    built, photos = catalogs
    folder = shutil.copytree(built["torch"], tmp_path / "catalog")
    before = _search(folder, photos / "item03.png", "torch")
    _ok("catalog", "reembed", "--catalog", folder, "--model", embed_model,
        "--runtime", "onnxruntime")
    after = _search(folder, photos / "item03.png", "torch")
    assert [m["id"] for m in after] == [m["id"] for m in before]


@pytest.mark.parametrize("args", [
    ["search", "x.png", "--catalog", "nowhere"],
    ["catalog", "add", "x.png", "--catalog", "nowhere"],
    ["serve"],
])
def test_an_unknown_runtime_is_a_usage_error(args):
    result = runner.invoke(app, [*args, "--runtime", "tensorflow"])
    assert result.exit_code == 2
    said = " ".join(result.output.replace("│", " ").split())  # unwrap Rich's error box
    assert "'tensorflow' is not one of auto, torch, onnxruntime, openvino" in said
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_service_settings_check_the_runtime(tmp_path):
    with pytest.raises(ConfigError, match="runtime must be one of"):
        ServiceSettings(runtime="tensorflow").check()
    config = tmp_path / "service.yaml"
    config.write_text("runtime: onnxruntime\n")
    assert ServiceSettings.from_yaml(config).check().runtime == "onnxruntime"


def _classify_and_similar(settings: ServiceSettings, photo: bytes) -> tuple[dict, list, Engine]:
    engine = Engine(settings)
    try:
        with TestClient(create_app(settings, engine=engine)) as client:
            classify = post_image(client, "/api/v1/classify", photo)
            similar = post_image(client, "/api/v1/similar", photo, k=4)
            assert classify.status_code == similar.status_code == 200, (classify.text,
                                                                        similar.text)
            return classify.json(), similar.json()["matches"], engine
    finally:
        engine.close()


def test_the_service_on_onnxruntime_answers_as_on_torch(catalogs, model_dir, tmp_path,
                                                        tiny_folder):
    built, _ = catalogs
    classifier = shutil.copytree(model_dir, tmp_path / "classifier")
    photo = sorted(tiny_folder.rglob("*.jpg"))[0].read_bytes()
    answers = {}
    for runtime in ("torch", "onnxruntime"):
        settings = ServiceSettings(models=[str(classifier)], catalog=str(built["torch"]),
                                   api_key=KEY, cache_entries=0, runtime=runtime)
        classify, similar, engine = _classify_and_similar(settings, photo)
        served = next(iter(engine.models.values()))
        assert served.runtime.backend == runtime
        assert engine.query.embedder.runtime.backend == runtime
        answers[runtime] = classify, similar
    (torch_classes, torch_similar), (onnx_classes, onnx_similar) = answers.values()
    torch_task, onnx_task = torch_classes["tasks"][0], onnx_classes["tasks"][0]
    assert onnx_task["label"] == torch_task["label"]
    assert [c["label"] for c in onnx_task["classes"]] == \
        [c["label"] for c in torch_task["classes"]]
    np.testing.assert_allclose([c["probability"] for c in onnx_task["classes"]],
                               [c["probability"] for c in torch_task["classes"]], atol=ATOL)
    assert [m["id"] for m in onnx_similar] == [m["id"] for m in torch_similar]


@pytest.mark.parametrize(("flags", "expected"), [([], "onnxruntime"),
                                                 (["--runtime", "torch"], "torch")])
def test_serve_takes_the_runtime_from_its_config_unless_typed(flags, expected, monkeypatch,
                                                              tmp_path, model_dir):
    """The config file's runtime holds unless --runtime is typed (even as the default)."""
    import fashionlens.service.server as server

    served: list = []
    monkeypatch.setattr(server, "serve", lambda app, settings, **kw: served.append(app))
    # serve binds its port before loading anything: a free port, not whatever 8000 holds.
    bind = server.bind_socket
    monkeypatch.setattr(server, "bind_socket", lambda host, port: bind(host, 0))
    monkeypatch.setenv("FASHIONLENS_CACHE", str(tmp_path / "cache"))
    classifier = shutil.copytree(model_dir, tmp_path / "classifier")
    config = tmp_path / "service.yaml"
    config.write_text("runtime: onnxruntime\n")
    result = runner.invoke(app, ["serve", "--config", str(config), "--model", str(classifier),
                                 *flags])
    assert result.exit_code == 0, (result.output, result.exception)
    (served_app,) = served
    engine = served_app.state.engine
    try:
        assert served_app.state.settings.runtime == expected
        assert next(iter(engine.models.values())).runtime.backend == expected
    finally:
        engine.close()

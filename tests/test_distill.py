"""A teacher model for one task of a run (`teacher:`): knowledge distillation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from fashionlens.config import FieldError, load_config
from fashionlens.training.distill import Teacher, taught_rows

from .test_joint_sources import _config

pytestmark = pytest.mark.timeout(240)

# the tiny colour classifier (conftest's model_dir) answers blue / green / red; the joint
# config's home photos are blue shirts, green pants and red shoes
COLOUR_TYPES = {"blue": "Shirt", "green": "Pants", "red": "Shoes"}


def _teacher_config(tmp_path: Path, model_dir: Path, **teacher) -> Path:
    (tmp_path / "colour-types.yaml").write_text(yaml.safe_dump(COLOUR_TYPES))
    return _config(tmp_path, teacher={"model": str(model_dir), "task": "type",
                                      "mapping": "colour-types.yaml", "sources": ["home"],
                                      **teacher})


def test_teacher_fields_are_read_and_checked(tmp_path, model_dir):
    config = load_config(_teacher_config(tmp_path, model_dir))
    assert config.teacher.mapping == COLOUR_TYPES  # the file beside the config, read
    assert config.teacher.sources == ["home"] and config.teacher.temperature == 2.0
    for field, value, message in [
            ("sources", ["street"], r"teacher\.sources\[0\].*'street' is not a source"),
            ("task", "colour", r"teacher\.task.*'colour' is not a task"),
            ("temperature", 0, r"teacher\.temperature.*must be positive"),
            ("weight", -1, r"teacher\.weight.*at least 0")]:
        with pytest.raises(FieldError, match=message):
            load_config(_teacher_config(tmp_path, model_dir, **{field: value}))
    assert not load_config(_config(tmp_path)).teacher.model  # no teacher unless named
    # a model folder beside the config is found from anywhere; a bundled name stays a name
    (tmp_path / "specialist").mkdir()
    relative = load_config(_teacher_config(tmp_path, Path("specialist")))
    assert relative.teacher.model == str((tmp_path / "specialist").resolve())
    assert load_config(_teacher_config(tmp_path, Path("clothing10"))).teacher.model == \
        "clothing10"


def _prepared(tmp_path, model_dir, **teacher):
    from fashionlens.training.run import prepare_sources, run_preprocess

    config = load_config(_teacher_config(tmp_path, model_dir, **teacher))
    config.train.cache_images = False
    preprocess = run_preprocess(config)
    prepared = prepare_sources(config, preprocess, config.seed)
    return config, preprocess, prepared


def test_the_teacher_teaches_its_sources_rows_through_its_mapped_classes(tmp_path, model_dir):
    config, preprocess, prepared = _prepared(tmp_path, model_dir)
    rows = taught_rows(prepared.train_ds, config.teacher.sources)
    home = len(prepared.train_ds.parts[0])
    assert rows[:home].all() and not rows[home:].any()
    teacher = Teacher(config.teacher, prepared.tasks, preprocess, rows)
    task = {t.name: t for t in prepared.tasks}["type"]
    assert [task.classes[i] for i in teacher.taught] == ["Pants", "Shirt", "Shoes"]

    images = torch.stack([prepared.train_ds[i][0] for i in range(3)])
    indices = torch.arange(3)
    view = teacher.view(images)
    assert tuple(view.shape[-2:]) == tuple(teacher.runtime.preprocess.shape)
    with torch.no_grad():
        answers = teacher.runtime.forward(view, [teacher.head.name])[teacher.head.name]
    # a student that answers what the teacher answers has nothing to learn from it ...
    agreeing = torch.full((3, len(task.classes)), -30.0)
    for t, name in enumerate(teacher.head.classes):
        agreeing[:, task.classes.index(COLOUR_TYPES[name])] = answers[:, t].log()
    assert teacher.loss({"type": agreeing}, images, indices).item() == pytest.approx(0, abs=1e-4)
    # ... one that answers otherwise has
    sure = torch.zeros_like(agreeing)
    sure[:, 0] = 10.0
    assert teacher.loss({"type": sure}, images, indices).item() > 0.1
    # a batch of studio rows is not taught
    assert teacher.loss({"type": agreeing}, images, torch.arange(home, home + 3)) is None


def test_a_teacher_whose_classes_the_task_lacks_is_refused_by_name(tmp_path, model_dir):
    config, preprocess, prepared = _prepared(tmp_path, model_dir, mapping={"blue": "Hat"})
    rows = np.ones(len(prepared.train_ds), bool)
    with pytest.raises(FieldError, match=r"teacher\.mapping.*no class of the teacher's head"):
        Teacher(config.teacher, prepared.tasks, preprocess, rows)
    config.teacher.head = "colour"
    with pytest.raises(FieldError, match=r"teacher\.head.*'colour' is not a head"):
        Teacher(config.teacher, prepared.tasks, preprocess, rows)


def test_a_run_with_a_teacher_records_its_loss(tmp_path, model_dir):
    from fashionlens.training.run import train

    result = train(load_config(_teacher_config(tmp_path, model_dir)))
    last = result.fit.history[-1]
    assert last["train_teacher_loss"] > 0 and np.isfinite(last["train_loss"])
    saved = yaml.safe_load((result.output_dir / "config.yaml").read_text())
    assert saved["teacher"]["mapping"] == COLOUR_TYPES  # the run keeps what taught it
    from fashionlens.models.card import CARD_FILE

    card = (result.model_dir / CARD_FILE).read_text()
    assert f"- Teacher: `{model_dir}` taught `type` on the photos of home" in card

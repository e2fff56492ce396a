"""A teacher model for one task of a run (`teacher:` in a run config): knowledge
distillation on the photos the student trains on, augmented as the student sees them.

The teacher reads each batch the student reads, re-shaped to its own input (a teacher
that crops a square reads the centre of the student's whole-photo input, cut as its own
`crop_pct` cuts, and resized to its size; its own normalisation), so the two answer for
the same view of the same photo. Its probabilities over the classes it shares with the
task, softened by the temperature, are a second target for the task's head on the rows
of the sources it teaches (Hinton et al., 2015: the loss is scaled by the temperature
squared so that its gradients keep their size as the temperature changes).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..config import FieldError, TeacherConfig
from ..data.dataset import source_of
from ..data.transforms import Preprocess
from ..inference.runtime import TorchRuntime
from ..tasks import Task

log = logging.getLogger(__name__)


class Teacher:
    """A frozen model whose answers one task also learns from."""

    def __init__(self, config: TeacherConfig, tasks: Sequence[Task], student: Preprocess,
                 rows: np.ndarray, device: torch.device | str = "cpu",
                 precision: str | None = None) -> None:
        self.config = config
        self.runtime = TorchRuntime.load(config.model, device=device, precision=precision,
                                         flag="teacher.model")
        for parameter in self.runtime.model.parameters():
            parameter.requires_grad_(False)
        heads = {h.name: h for h in self.runtime.heads}
        if not heads:
            raise FieldError("teacher.model", f"'{config.model}' has no scored head to teach "
                                              "with")
        head = heads.get(config.head) if config.head else next(iter(heads.values()))
        if head is None:
            raise FieldError("teacher.head", f"'{config.head}' is not a head of "
                                             f"'{config.model}' ({', '.join(heads)})")
        by_name = {t.name: t for t in tasks}
        task = by_name.get(config.task) if config.task else tasks[0]
        if task is None:
            raise FieldError("teacher.task", f"'{config.task}' is not a task of this run "
                                             f"({', '.join(by_name)})")
        if head.kind != "classification" or task.kind != "classification":
            raise FieldError("teacher", f"the teacher's head '{head.name}' ({head.kind}) and "
                             f"the task '{task.name}' ({task.kind}) must both name one class "
                             "a photo")
        self.head, self.task = head, task
        # teacher class -> task class; several teacher classes may share one
        pairs = []
        for position, name in enumerate(head.classes):
            target = config.mapping.get(name, name) if config.mapping else name
            if target is not None and str(target) in task.classes:
                pairs.append((position, task.classes.index(str(target))))
        if not pairs:
            raise FieldError("teacher.mapping", f"no class of the teacher's head '{head.name}' "
                             f"({', '.join(head.classes[:5])}...) is a class of task "
                             f"'{task.name}' ({', '.join(task.classes[:5])}...)")
        self.taught = sorted({s for _, s in pairs})  # the task's classes it has answers for
        grouping = torch.zeros(len(head.classes), len(self.taught))
        for t, s in pairs:
            grouping[t, self.taught.index(s)] = 1.0
        self.grouping = grouping.to(self.runtime.device)
        self.rows = torch.as_tensor(rows, dtype=torch.bool)  # dataset row -> taught?
        self.student = student
        log.info("teacher %s (head %s) teaches task %s on %d training photos: %d of its "
                 "classes answer for %d of the task's", config.model, head.name, task.name,
                 int(self.rows.sum()), len(pairs), len(self.taught))

    def view(self, images: torch.Tensor) -> torch.Tensor:
        """The student's input batch as the teacher reads that photo."""
        teacher = self.runtime.preprocess
        raw = images.float() * _column(self.student.std, images) + _column(self.student.mean,
                                                                           images)
        height, width = raw.shape[-2:]
        if teacher.fit == "crop":
            side = max(1, round(min(height, width) * teacher.crop_pct))
            top, left = (height - side) // 2, (width - side) // 2
            raw = raw[..., top:top + side, left:left + side]
        size = teacher.shape
        if tuple(raw.shape[-2:]) != tuple(size):
            raw = F.interpolate(raw, size=size, mode="bilinear", align_corners=False,
                                antialias=True)
        return (raw - _column(teacher.mean, raw)) / _column(teacher.std, raw)

    def loss(self, logits: dict[str, torch.Tensor], images: torch.Tensor,
             indices: torch.Tensor) -> torch.Tensor | None:
        """The distillation loss of a batch (already weighted), or None when none of its
        rows is taught."""
        taught = self.rows[indices.cpu()]
        if not bool(taught.any()):
            return None
        where = taught.to(images.device)
        with torch.no_grad():
            probabilities = self.runtime.forward(
                self.view(images[where]).contiguous(memory_format=torch.channels_last),
                [self.head.name])[self.head.name].float()
            temperature = self.config.temperature
            softened = probabilities.clamp_min(1e-12) ** (1.0 / temperature)
            target = softened @ self.grouping
            target = target / target.sum(1, keepdim=True).clamp_min(1e-12)
        student = logits[self.task.name][where].float()[:, self.taught] / temperature
        divergence = F.kl_div(F.log_softmax(student, -1), target, reduction="batchmean")
        return self.config.weight * temperature ** 2 * divergence


def taught_rows(dataset, source_names: Sequence[str]) -> np.ndarray:
    """Which dataset rows the teacher teaches: those of the named sources (every row
    when none is named)."""
    if not source_names:
        return np.ones(len(dataset), dtype=bool)
    sources = source_of(dataset, np.arange(len(dataset)))
    return np.isin(np.asarray(dataset.names)[sources], list(source_names))


def _column(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(values, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)

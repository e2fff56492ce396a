"""Training by task: each head kind brings its targets, loss, metrics, monitor and probe.

`TASK_KINDS[kind]` is the Task class for a head kind (`models.heads`); the training loop
and evaluation only call the `Task` interface, never ask which kind they hold.
"""

from .base import TASK_KINDS, Task, TaskConfig, build_tasks, register_task, tasks_from_heads
from .classification import ClassificationTask
from .multilabel import MultilabelTask

__all__ = ["TASK_KINDS", "ClassificationTask", "MultilabelTask", "Task", "TaskConfig",
           "build_tasks", "register_task", "tasks_from_heads"]

"""Tasks: seeded data generators with their loss, metrics and default optimizer.

Every task is a :class:`tasks.base.Task`; ``conf/task/<name>.yaml`` names its class with ``_target_``.
"""
from tasks.base import Task, Batch, available_tasks, build_task

__all__ = ["Task", "Batch", "available_tasks", "build_task"]

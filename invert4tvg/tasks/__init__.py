"""The four tasks of Invert4TVG: grounding (TVG) and its inversions VC, AR and VD; prompts, masking, sampling."""

from invert4tvg.tasks.instances import (
    REWARD_COLUMNS,
    TaskInstance,
    build_messages,
    build_task_instance,
    reward_columns,
)
from invert4tvg.tasks.masking import MASK, MaskedQuery, NoVerbError, TaskUnavailable, mask_query
from invert4tvg.tasks.prompts import INVERSION_TASKS, TASKS, PromptTemplates, template_corpus
from invert4tvg.tasks.sampler import TaskSampler

__all__ = [
    "INVERSION_TASKS",
    "MASK",
    "REWARD_COLUMNS",
    "TASKS",
    "MaskedQuery",
    "NoVerbError",
    "PromptTemplates",
    "TaskInstance",
    "TaskSampler",
    "TaskUnavailable",
    "build_messages",
    "build_task_instance",
    "mask_query",
    "reward_columns",
    "template_corpus",
]

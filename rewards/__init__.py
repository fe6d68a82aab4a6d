"""Verifiable rewards for temporal video grounding and the Invert4TVG inversion tasks, as plugins.

Every reward has TRL's signature, ``fn(completions, **columns) -> list[float | None]``, so a reward written for
TRL's ``GRPOTrainer`` plugs in unchanged, and these plug into TRL. Built-ins: ``format``, ``iou``, ``vc``, ``ar``,
``vd``, ``cosine`` and the task-dispatching ``invert4tvg``. Third-party rewards register with ``@register`` or the
``invert4tvg.rewards`` entry-point group. See docs/rewards.md.
"""

from rewards import nlp
from rewards.base import Columns, GuardedReward, Reward
from rewards.completions import answer_text, completion_text, has_valid_format
from rewards.errors import (
    ColumnLengthError,
    ColumnValueError,
    MissingColumnError,
    RewardError,
    RewardOutputError,
    RewardSampleError,
)
from rewards.registry import (
    ENTRY_POINT_GROUP,
    available,
    build,
    get,
    register,
    reload_entry_points,
    unregister,
)

# Built-ins register themselves on import; keep these after the registry import.
from rewards.grounding import FormatReward, IoUReward, parse_span, temporal_iou  # isort: skip
from rewards.grounding import SPAN_PARSERS, parse_span_time_r1  # isort: skip
from rewards.verbs import ActionRecognitionReward, VerbCompletionReward, VideoDescriptionReward  # isort: skip
from rewards.cosine import CosineReward, EmbeddingsUnavailable  # isort: skip
from rewards.composite import Invert4TVGReward, RewardBreakdown  # isort: skip
from rewards.frame_f1 import FrameF1Reward, window_labels  # isort: skip

__all__ = [
    "ENTRY_POINT_GROUP",
    "SPAN_PARSERS",
    "ActionRecognitionReward",
    "ColumnLengthError",
    "ColumnValueError",
    "Columns",
    "CosineReward",
    "EmbeddingsUnavailable",
    "FormatReward",
    "FrameF1Reward",
    "GuardedReward",
    "Invert4TVGReward",
    "IoUReward",
    "MissingColumnError",
    "Reward",
    "RewardBreakdown",
    "RewardError",
    "RewardOutputError",
    "RewardSampleError",
    "VerbCompletionReward",
    "VideoDescriptionReward",
    "answer_text",
    "available",
    "build",
    "completion_text",
    "get",
    "has_valid_format",
    "nlp",
    "parse_span",
    "parse_span_time_r1",
    "register",
    "reload_entry_points",
    "temporal_iou",
    "unregister",
    "window_labels",
]

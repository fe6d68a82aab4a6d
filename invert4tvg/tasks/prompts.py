"""Prompt templates of the four tasks, in one place, overridable from config.

The three inversion prompts open with the seed paper's wording (sec. 2.2); the grounding prompt is ours. The
inversion prompts ask for ``<think>...</think>`` then ``<answer>...</answer>``, the layout the ``format`` reward
checks; the grounding prompt's answer instruction belongs to the policy's head (``Policy.answer_instruction``, e.g.
"seconds with two decimals" for text timestamps, "frame indices 00-99" for VTimeLLM) and fills ``{answer_format}``.
Templates are ``str.format`` strings with the fields ``{query}``, ``{masked_query}``, ``{duration}`` (seconds,
"%.2f") and ``{answer_format}``. Keep them short: every prompt token is paid for in every rollout.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from rewards.base import INVERSION_TASKS

TASKS = ("tvg", *INVERSION_TASKS)
FIELDS = frozenset({"query", "masked_query", "duration", "answer_format"})

THINK_THEN = "Think inside <think></think>, then"
# The default head's answer instruction (text timestamps, ``TextTimestampPolicy.answer_instruction``): the tiny
# model's tokenizer is trained on the default prompts, so they must be complete without a policy.
TEXT_TIMESTAMPS_ANSWER = (
    f"{THINK_THEN} give its start and end time in seconds with two decimals inside <answer></answer>, "
    "like <answer>4.20 to 9.85</answer>."
)
TVG_PROMPT = "The video is {duration} seconds long. When does this event happen: '{query}'? {answer_format}"
VC_PROMPT = (
    "Add a verb for the event '{masked_query}' based on the video. "
    f"{THINK_THEN} write the completed sentence inside <answer></answer>."
)
AR_PROMPT = f"Use a verb to describe the event based on the video. {THINK_THEN} give the verb inside <answer></answer>."
VD_PROMPT = (
    "Describe what people have done based on the video. "
    f"{THINK_THEN} give the description inside <answer></answer>."
)


@dataclass(frozen=True)
class PromptTemplates:
    """One template per task, plus an optional system message and the head's answer instruction (``None``: the
    default head's, text timestamps)."""

    tvg: str = TVG_PROMPT
    vc: str = VC_PROMPT
    ar: str = AR_PROMPT
    vd: str = VD_PROMPT
    system: str | None = None
    answer_format: str | None = None

    def __post_init__(self) -> None:
        for task in TASKS:
            _check_template(task, getattr(self, task))
        if self.system is not None and not isinstance(self.system, str):
            raise TypeError("prompts.system must be a string or None")

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> PromptTemplates:
        """Defaults overridden by the keys of ``config`` (tvg, vc, ar, vd, system); unknown keys raise."""
        config = dict(config or {})
        known = {f.name for f in fields(cls)} - {"answer_format"}  # the head's, not the prompt file's
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown prompt template(s) {unknown}; known: {sorted(known)}")
        return cls(**config)

    def render(self, task: str, *, query: str, masked_query: str = "", duration: float = 0.0) -> str:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; known: {TASKS}")
        return getattr(self, task).format(
            query=query,
            masked_query=masked_query,
            duration=f"{duration:.2f}",
            answer_format=TEXT_TIMESTAMPS_ANSWER if self.answer_format is None else self.answer_format,
        )


def _check_template(task: str, template: Any) -> None:
    if not isinstance(template, str) or not template.strip():
        raise ValueError(f"prompt template {task!r} must be a non-empty string")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        raise ValueError(f"prompt template {task!r} is not a valid format string: {err}") from None
    for _, field, _, _ in parsed:
        if field is None:
            continue
        if field not in FIELDS:
            raise ValueError(f"prompt template {task!r} uses {{{field}}}; available fields: {sorted(FIELDS)}")


def template_corpus() -> list[str]:
    """The literal text of every default template (fields removed), e.g. to train a tokenizer on."""
    texts = []
    for template in (TVG_PROMPT, VC_PROMPT, AR_PROMPT, VD_PROMPT):
        template = template.replace("{answer_format}", TEXT_TIMESTAMPS_ANSWER)
        texts.append("".join(literal for literal, *_ in string.Formatter().parse(template)))
    return texts

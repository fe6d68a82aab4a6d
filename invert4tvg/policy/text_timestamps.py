"""The default head (Time-R1 / Invert4TVG): the model writes ``<think>...</think> <answer>S to E</answer>``
in seconds, and the span is read from the text with the parser the ``iou`` reward falls back to."""

from __future__ import annotations

from typing import Any

from invert4tvg.policy.base import CompletionPolicy, Decoded
from invert4tvg.rollout.base import Completion
from invert4tvg.tasks.prompts import TEXT_TIMESTAMPS_ANSWER
from rewards import parse_span

# Short on purpose: every think token is generated G times per prompt in GRPO. Fields: query, start, end, duration.
DEFAULT_THINK = "I look for when the event happens."


class TextTimestampPolicy(CompletionPolicy):
    """Text timestamps: no extra tokens or modules; SFT targets are ``<think>..</think> <answer>S to E</answer>``."""

    name = "text_timestamps"
    answer_instruction = TEXT_TIMESTAMPS_ANSWER
    answers_in_seconds = True

    def __init__(self, model, processor, think_template: str = DEFAULT_THINK) -> None:
        super().__init__(model, processor)
        self.think_template = think_template

    @classmethod
    def from_options(cls, model, processor, options: dict[str, Any]) -> TextTimestampPolicy:
        return cls(model, processor, think_template=options.get("think_template") or DEFAULT_THINK)

    def decode(self, completion: Completion | str, duration: float) -> Decoded | None:
        span = self.read_span(completion if isinstance(completion, str) else completion.text, duration)
        return None if span is None else Decoded(span)

    def tvg_target(self, query: str, start: float, end: float, duration: float) -> str:
        return self.answer_target(
            self.write_span(start, end, duration), self.think(query, start, end, duration)
        )

    # A text head differs from this one only in how a span is written and read back.
    def write_span(self, start: float, end: float, duration: float) -> str:
        return f"{start:.2f} to {end:.2f}"

    def read_span(self, text: str, duration: float) -> tuple[float, float] | None:
        return parse_span(text)

    def think(self, query: str, start: float, end: float, duration: float) -> str:
        return self.think_template.format(query=query.strip(), start=start, end=end, duration=duration)

"""The default head (Time-R1 / Invert4TVG): the model writes ``<think>...</think> <answer>S to E</answer>``
in seconds, and the segment is read from the text with the same parser the ``iou`` reward uses."""

from __future__ import annotations

from invert4tvg.policy.base import Policy

# Short on purpose: every think token is generated G times per prompt in GRPO. Fields: query, start, end, duration.
DEFAULT_THINK = "I look for when the event happens."


class TextTimestampPolicy(Policy):
    """Text timestamps: no extra tokens or modules; SFT targets are ``<think>..</think> <answer>S to E</answer>``."""

    def __init__(self, model, processor, think_template: str = DEFAULT_THINK) -> None:
        super().__init__(model, processor)
        self.think_template = think_template

    def decode_segment(self, completion: str, duration: float) -> tuple[float, float] | None:
        from rewards import parse_span

        return parse_span(completion)

    def tvg_target(self, query: str, start: float, end: float, duration: float) -> str:
        think = self.think_template.format(query=query.strip(), start=start, end=end, duration=duration)
        return f"<think>{think}</think> <answer>{start:.2f} to {end:.2f}</answer>"

    def answer_target(self, answer: str, think: str) -> str:
        """An inversion-task target (Invert-SFT): the think text, then ``answer`` in the answer block."""
        return f"<think>{think}</think> <answer>{answer}</answer>"

"""Turning completions into text and finding the answer in them.

Completions arrive either as plain strings or, from a conversational TRL dataset, as message lists
(``[{"role": "assistant", "content": "..."}]``, content possibly a list of typed parts).
"""

from __future__ import annotations

import re
from typing import Any

# Same pattern as the public Time-R1 / Invert4TVG format reward; matched in full against the stripped text.
FORMAT_PATTERN = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
ANSWER_PATTERN = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def completion_text(completion: Any) -> str:
    """The text of one completion: a string, or the concatenated text of a message list's assistant turns."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        parts: list[str] = []
        for message in completion:
            if not isinstance(message, dict):
                raise TypeError(f"a message must be a dict, got {type(message).__name__}")
            if message.get("role", "assistant") != "assistant":
                continue  # a completion list may repeat the prompt's turns; only the model's text is scored
            parts.append(_content_text(message.get("content")))
        return "".join(parts)
    raise TypeError(f"a completion must be a str or a list of messages, got {type(completion).__name__}")


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and part.get("type", "text") == "text":
                texts.append(str(part.get("text") or ""))
        return "".join(texts)
    raise TypeError(f"message content must be a str or a list of parts, got {type(content).__name__}")


def has_answer_only_format(text: str) -> bool:
    """Same result as ``re.fullmatch(r"<answer>.*?</answer>", text.strip(), re.DOTALL)``, in linear time.

    The format the public Invert4TVG code scores its inversion tasks with (no think block required).
    """
    text = text.strip()
    return (
        len(text) >= len("<answer></answer>") and text.startswith("<answer>") and text.endswith("</answer>")
    )


def answer_text(text: str) -> str | None:
    """The content of the last ``<answer>...</answer>`` block (as ``ANSWER_PATTERN.findall(text)[-1]``), or None.

    Scanned with ``str.find`` in linear time: the pattern itself is quadratic, because every ``<answer>`` with no
    ``</answer>`` after it rescans the rest of the text (``"</answer>" + "<answer>" * k`` took 11 s at 150 KB).
    """
    return _last_block(text, "<answer>", "</answer>")


def first_answer_text(text: str) -> str | None:
    """The content of the first ``<answer>...</answer>`` block (``ANSWER_PATTERN.search``), or None.

    What the public Invert4TVG code reads for verb completion; the rewards here read the last block.
    """
    start = text.find("<answer>")
    if start < 0:
        return None
    end = text.find("</answer>", start + len("<answer>"))
    return None if end < 0 else text[start + len("<answer>") : end]


def _last_block(text: str, open_tag: str, close_tag: str) -> str | None:
    """The last of the non-overlapping, leftmost ``open_tag ... close_tag`` blocks that ``re.findall`` finds."""
    last, pos = None, 0
    while True:
        start = text.find(open_tag, pos)
        if start < 0:
            return last
        end = text.find(close_tag, start + len(open_tag))
        if end < 0:  # no block closes after this opening tag, so none after any later one either
            return last
        last = text[start + len(open_tag) : end]
        pos = end + len(close_tag)


def has_valid_format(text: str) -> bool:
    """Same result as ``FORMAT_PATTERN.fullmatch(text.strip())``, in linear time.

    The pattern backtracks over every ``</think>`` x ``</answer>`` pair, which is quadratic on repetitive text.
    Equivalent direct check: the text starts with ``<think>`` and ends with ``</answer>``, and the first ``</think>``
    followed (after optional whitespace) by ``<answer>`` leaves room for the final ``</answer>`` after that tag.
    """
    text = text.strip()
    if not (text.startswith("<think>") and text.endswith("</answer>")):
        return False
    last_close = len(text) - len("</answer>")
    pos = text.find("</think>", len("<think>"))
    while pos >= 0:
        answer = pos + len("</think>")
        while answer < len(text) and text[answer].isspace():
            answer += 1
        if text.startswith("<answer>", answer):
            return answer + len("<answer>") <= last_close
        pos = text.find("</think>", pos + 1)
    return False

"""The sequences every log-prob pass scores: prompt + completion rows with the exact video tensors the rollout used
(the repeated layout; :mod:`invert4tvg.modeling.shared_prefix` packs each group into one row instead)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import BatchFeature

from invert4tvg.modeling.logprobs import TokenConstraint
from invert4tvg.modeling.processing import select_inputs


@dataclass
class SequenceBatch:
    """Prompt + completion sequences with the exact video tensors the rollout used.

    ``inputs`` holds ``input_ids`` (left-padded prompt, then right-padded completion), ``attention_mask`` and the
    processor's video tensors; ``completion_mask`` is 1 on completion tokens up to and including EOS.
    """

    inputs: BatchFeature
    completion_ids: torch.Tensor  # (B, T)
    completion_mask: torch.Tensor  # (B, T)
    constraints: list[TokenConstraint | None] | None = None  # per row: what the rollout engine was held to

    def __len__(self) -> int:
        return self.completion_ids.shape[0]

    def logit_positions(self) -> torch.Tensor:
        """Positions whose next-token logits score the completion: the last prompt token, then all but the last
        completion token (the same in every row: prompts are left-padded)."""
        length, width = self.inputs["input_ids"].shape[1], self.completion_ids.shape[1]
        return torch.arange(length - width - 1, length - 1)

    def select(self, rows: Sequence[int]) -> SequenceBatch:
        index = list(rows)
        return SequenceBatch(
            inputs=select_inputs(self.inputs, index),
            completion_ids=self.completion_ids[index],
            completion_mask=self.completion_mask[index],
            constraints=None if self.constraints is None else [self.constraints[i] for i in index],
        )

    def to(self, device: torch.device | str) -> SequenceBatch:
        return SequenceBatch(
            self.inputs.to(device),
            self.completion_ids.to(device),
            self.completion_mask.to(device),
            self.constraints,
        )

"""The object one GRPO update reads: built once per step (TRL's inputs dict from ``_generate_and_score_completions``,
torchtune's ``GRPOTrajectory``), then read, never changed, by every micro-batch of every iteration."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from invert4tvg.grpo.sampling_correction import SamplingCorrection
from invert4tvg.modeling.sequences import SequenceBatch
from invert4tvg.modeling.shared_prefix import SharedPrefixBatch


@dataclass(frozen=True)
class StepBatch:
    """One process's share of a step, on the training device. Rows are completions (``B``), columns completion
    tokens (``T``)."""

    #: Prompt + completion sequences with the rollout's video tensors: repeated rows, or one row per group.
    sequences: SequenceBatch | SharedPrefixBatch
    #: (B, T) float: the completion tokens the loss counts (truncated completions left out when masked).
    mask: torch.Tensor
    #: (B,) group-relative advantages.
    advantages: torch.Tensor
    #: (B, T) log-probs of the policy that sampled (no grad), or None when ``num_iterations == 1``: the update
    #: then runs on exactly the weights that generated, so the current pass's detached log-probs are the old ones
    #: (TRL's shortcut; it stops holding as soon as a second iteration reuses the rollouts).
    old_logps: torch.Tensor | None
    #: (B, T) log-probs of the reference model, or None when ``beta == 0`` (no KL term).
    ref_logps: torch.Tensor | None
    #: What the summed per-token loss of the whole batch is divided by (``grpo.loss.loss_normalizer``).
    normalizer: torch.Tensor | float
    #: The engine's log-probs against the trainer's: the importance weights (and the gap logged every step).
    correction: SamplingCorrection
    #: Per row the ground truth ``(start, end, duration)`` of a grounding completion (None for the others), or None
    #: when the head's auxiliary loss is off.
    spans: list[tuple[float, float, float] | None] | None
    #: Row indices of each micro-batch (whole groups in the shared-prefix layout).
    micro_batches: list[list[int]]

    def __len__(self) -> int:
        return len(self.advantages)

"""Per-token log-probabilities of chosen tokens without full-vocabulary logits for the whole micro-batch.

A log-prob is ``logit[chosen] - logsumexp(logits)``. Materialising ``logits`` for every completion position at once
costs ``B x T x V`` floats (8 x 1025 x 151,936 fp32 is about 5 GB for Qwen2.5-VL); here the model stops at its last
hidden states, and the LM head is applied to ``chunk_size`` positions at a time, keeping only the chosen logit and
the logsumexp of each. In a gradient pass each chunk is checkpointed, so backward recomputes a chunk's logits instead
of keeping every chunk's alive until then.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

# Positions per LM-head call: 512 x 151,936 fp32 logits are about 0.3 GB at Qwen2.5-VL's vocabulary.
DEFAULT_CHUNK_SIZE = 512


@dataclass(frozen=True)
class TokenConstraint:
    """Exactly ``length`` tokens, each one of ``allowed``, then one of ``end`` (the end-of-sequence ids)."""

    allowed: tuple[int, ...]
    length: int
    end: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.length < 1 or not self.allowed or not self.end:
            raise ValueError(f"a TokenConstraint needs length >= 1, allowed and end ids; got {self}")

    def allowed_mask(self, width: int, vocab_size: int) -> torch.Tensor:
        """(width, vocab) bool: which tokens each completion position may hold (every token after the end)."""
        mask = torch.ones(width, vocab_size, dtype=torch.bool)
        mask[: self.length] = False
        mask[: self.length, list(self.allowed)] = True
        if self.length < width:
            mask[self.length] = False
            mask[self.length, list(self.end)] = True
        return mask


def output_head(model: torch.nn.Module) -> torch.nn.Module:
    """The LM head (output embeddings) of a model, through DDP / PEFT wrappers."""
    inner = getattr(model, "module", model)  # DDP
    return inner.get_output_embeddings()


@contextmanager
def _capture_head_input(head: torch.nn.Module, store: list[torch.Tensor]):
    """While active, the head's input (the positions ``logits_to_keep`` selected) is kept in ``store`` and the head
    itself is handed an empty slice, so the model's forward computes no logits."""

    def hook(module, args):
        store.append(args[0])
        return (args[0][..., :0, :], *args[1:])

    handle = head.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def hidden_states_at(
    model: torch.nn.Module, inputs: dict, positions: torch.Tensor
) -> tuple[torch.Tensor, torch.nn.Module]:
    """The last hidden states (after the final norm) at ``positions`` of every row, shape (B, len(positions), H), and
    the head that turns them into logits. The forward goes through ``model`` itself (DDP, PEFT, autocast)."""
    head = output_head(model)
    store: list[torch.Tensor] = []
    with _capture_head_input(head, store):
        model(**inputs, logits_to_keep=positions, use_cache=False)
    if len(store) != 1:
        raise RuntimeError(f"expected the LM head to run once per forward, it ran {len(store)} times")
    return store[0], head


def _chunk_logprobs(
    head: torch.nn.Module,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    suppress_ids: torch.Tensor,
) -> torch.Tensor:
    logits = head(hidden).float()
    if temperature not in (0.0, 1.0):
        logits = logits / temperature
    if len(suppress_ids):
        logits[..., suppress_ids] = float("-inf")
    chosen = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return chosen - torch.logsumexp(logits, dim=-1)


def token_logprobs(
    head: torch.nn.Module,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    suppress_ids: torch.Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> torch.Tensor:
    """``log softmax(head(hidden) / temperature)[targets]`` for hidden (B, T, H) and targets (B, T), computed
    ``chunk_size`` positions at a time; ``suppress_ids`` (vision tokens) get probability 0, as in sampling."""
    shape = targets.shape
    flat_hidden = hidden.reshape(-1, hidden.shape[-1])
    flat_targets = targets.reshape(-1)
    if suppress_ids is None:
        suppress_ids = torch.empty(0, dtype=torch.long)
    suppress = suppress_ids.to(hidden.device)
    grad = torch.is_grad_enabled() and (
        hidden.requires_grad or any(p.requires_grad for p in head.parameters())
    )
    pieces = []
    for start in range(0, flat_targets.numel(), chunk_size):
        args = (head, flat_hidden[start : start + chunk_size], flat_targets[start : start + chunk_size])
        if grad:
            pieces.append(checkpoint(_chunk_logprobs, *args, temperature, suppress, use_reentrant=False))
        else:
            pieces.append(_chunk_logprobs(*args, temperature, suppress))
    if not pieces:
        return torch.zeros(shape, device=hidden.device)
    return torch.cat(pieces).view(shape)


def constrained_logprobs(
    head: torch.nn.Module,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    constraint,
    temperature: float = 1.0,
    suppress_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Log-probs of one row (hidden (T, H), targets (T,)) under a decoding constraint
    (:class:`~invert4tvg.rollout.base.TokenConstraint`): tokens it forbids at a position get probability 0, as
    they had when the row was sampled. The row's full logits are held, so this is for short constrained answers."""
    logits = head(hidden).float()
    if temperature not in (0.0, 1.0):
        logits = logits / temperature
    if suppress_ids is not None and len(suppress_ids):
        logits[..., suppress_ids.to(logits.device)] = float("-inf")
    allowed = constraint.allowed_mask(targets.shape[0], logits.shape[-1]).to(logits.device)
    logits = logits.masked_fill(~allowed, float("-inf"))
    chosen = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return chosen - torch.logsumexp(logits, dim=-1)

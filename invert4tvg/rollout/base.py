"""The RolloutEngine contract: every generation backend (in-process transformers, vLLM, Ray pools of either)
takes the same requests and returns the same completions, so the trainer and evaluation never care which runs.

The contract, checked by ``tests/test_rollout_contract.py`` for every engine that can run:
- ``generate(requests, sampling)`` returns, for each request in order, ``request.num_samples`` completions.
- Each completion carries its token ids (without prompt, without padding, EOS kept when generated), the decoded text
  (special tokens removed), the log-probability of each sampled token under the sampling distribution (the trainer
  logs its gap to its own each step and corrects for it: ``grpo/sampling_correction.py``), why it finished
  (``"stop"`` at EOS or ``"length"`` at ``max_tokens``), and the policy version that produced it.
- Vision placeholder tokens are never generated (they would break the next forward pass's token/feature count).
- ``update_weights(weights, version)`` makes the engine serve ``version``; an engine never serves a stale version
  silently (``policy_version`` says what it serves).
- With ``temperature == 0`` generation is greedy and deterministic.
- A request with a ``constraint`` (:class:`TokenConstraint`, e.g. the frame-segmentation head's f characters of
  '0'/'1') gets exactly ``constraint.length`` tokens from ``constraint.allowed`` then an end token, and its recorded
  log-probs are those of the constrained distribution (the one the trainer scores, ``Policy.completion_logprobs``).
- A request with a ``readout`` (:class:`HiddenReadout`, heads that read hidden states) may get each completion's
  :class:`HiddenStates`; an engine that cannot return them (vLLM) leaves ``hidden`` None and the policy computes
  them from the finished sequences.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

from invert4tvg.data.frames import DecodedVideo


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


def check_room(constraints: Sequence[TokenConstraint | None], max_tokens: int) -> None:
    """A constrained answer must fit in ``max_tokens`` with its end token (else it could never be complete)."""
    longest = max((c.length + 1 for c in constraints if c is not None), default=0)
    if longest > max_tokens:
        raise ValueError(
            f"the head's answer takes {longest} tokens (with the end token) but generation stops after {max_tokens}: "
            f"raise max_completion_length (or --max-new-tokens) to at least {longest}"
        )


@dataclass(frozen=True)
class HiddenReadout:
    """What a head reads from hidden states: the frame features (the last layer's video-token states, mean-pooled
    per temporal patch) and the states at ``token_ids`` in the completion from ``token_layer`` (numbered as
    ``output_hidden_states``: -1 the last, after the final norm)."""

    token_ids: tuple[int, ...]
    token_layer: int = -1


@dataclass
class HiddenStates:
    """One completion's readout: (F, H) frame features, (K, H) states at its head tokens and which tokens they are
    (in order; a token generated last, never fed back to the model, has no state and is left out)."""

    frames: torch.Tensor
    tokens: torch.Tensor
    token_ids: list[int]


@dataclass
class RolloutRequest:
    """One prompt to complete ``num_samples`` times. ``prompt`` is chat-templated text with one video placeholder."""

    prompt: str
    video: DecodedVideo | None
    num_samples: int = 1
    request_id: str = ""
    constraint: TokenConstraint | None = None
    readout: HiddenReadout | None = None


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int = 256
    seed: int | None = None  # per-call seed (engines that own their RNG); None: engine's current state


@dataclass
class Completion:
    token_ids: list[int]
    text: str
    logprobs: list[float]
    finish_reason: str  # "stop" | "length"
    policy_version: int
    request_id: str = ""
    hidden: HiddenStates | None = None  # with a request's ``readout``, from engines that can return it


class RolloutEngine(ABC):
    """Generates completions for rollouts and evaluation. See the module docstring for the contract."""

    policy_version: int = 0

    @abstractmethod
    def generate(
        self, requests: Sequence[RolloutRequest], sampling: SamplingParams
    ) -> list[list[Completion]]:
        """Complete each request ``num_samples`` times; results in request order."""

    @abstractmethod
    def update_weights(
        self, weights: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]] | None, version: int
    ) -> None:
        """Serve ``weights``: parameter name -> tensor, as a mapping or an iterator of pairs consumed once (``None``
        when the engine shares the trainer's model)."""

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release workers and memory."""

    def __enter__(self) -> RolloutEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StaleWeightsError(RuntimeError):
    """An engine was asked to serve a policy version older than the one it has."""

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
from invert4tvg.modeling.logprobs import TokenConstraint
from invert4tvg.modeling.readout import HiddenReadout, HiddenStates


def check_room(constraints: Sequence[TokenConstraint | None], max_tokens: int) -> None:
    """A constrained answer must fit in ``max_tokens`` with its end token (else it could never be complete)."""
    longest = max((c.length + 1 for c in constraints if c is not None), default=0)
    if longest > max_tokens:
        raise ValueError(
            f"the head's answer takes {longest} tokens (with the end token) but generation stops after {max_tokens}: "
            f"raise max_completion_length (or --max-new-tokens) to at least {longest}"
        )


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

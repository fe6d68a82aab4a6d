"""The policy interface: what the GRPO loop, SFT and evaluation need from a model + its grounding head.

A policy turns task instances into prompts, turns (prompt, completions) into one batch of model inputs that is
reused, tensor for tensor, by the old-policy, reference and current passes, computes per-token log-probabilities of
completions, decodes a completion into a segment, and builds supervised examples.

A *head* (docs/heads.md) is a subclass that fills in the hooks at the bottom: the grounding prompt's answer
instruction, its SFT targets, ``decode`` (completion -> span, + per-frame saliency where it has one), its supervised
loss, a decoding constraint, and extra tokens or modules. Everything downstream goes through these hooks: rollouts
put the decoded span in the ``pred_span`` reward column, which the ``iou`` reward, the step metrics and evaluation
read, so no other module parses answers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from transformers import BatchFeature

from invert4tvg.data.frames import DecodedVideo
from invert4tvg.modeling.logprobs import (
    TokenConstraint,
    constrained_logprobs,
    hidden_states_at,
    token_logprobs,
)
from invert4tvg.modeling.processing import processor_inputs, render_prompt, select_inputs, vision_token_ids
from invert4tvg.modeling.readout import HiddenReadout
from invert4tvg.modeling.sequences import SequenceBatch
from invert4tvg.rollout.base import Completion, RolloutRequest

# The think text of inversion-task targets (Invert-SFT), whatever the head: those answers are text for every head.
INVERT_THINK = "The clip shows what happens in this event."


@dataclass
class Decoded:
    """What a head read from a completion: the span in seconds and, for heads that score frames (equal windows of
    the video), each frame's foreground probability and its 0/1 decision."""

    span: tuple[float, float]
    saliency: list[float] | None = None
    mask: list[int] | None = None


@dataclass
class SupervisedExample:
    """One SFT example: a prompt (chat messages) with its video and the target completion text; grounding examples
    also carry their span and the video's duration (seconds), which heads with their own losses are trained on."""

    messages: list[dict[str, Any]]
    video: DecodedVideo | None
    target: str
    span: tuple[float, float] | None = None
    duration: float | None = None


class Policy(ABC):
    """A model, its processor and a grounding head. Subclasses implement the head-specific hooks."""

    #: The name ``head:`` selects it by (``policy.loading.HEADS``); recorded with every saved model.
    name: ClassVar[str] = ""
    #: The grounding prompt's answer instruction (the ``{answer_format}`` field of the ``tvg`` template).
    answer_instruction: ClassVar[str] = ""
    #: Extra special tokens the head adds to the tokenizer (their embedding rows must be trainable).
    extra_special_tokens: tuple[str, ...] = ()
    #: The head has a supervised loss of its own that GRPO can keep as an auxiliary term (:meth:`rl_logprobs`).
    has_aux_loss: ClassVar[bool] = False
    #: The answer is text ``S to E`` in seconds, which other evaluations' parsers (Time-R1's) can read too.
    answers_in_seconds: ClassVar[bool] = False

    def __init__(self, model: torch.nn.Module, processor) -> None:
        self.model = model
        self.processor = processor
        self.suppress_ids = torch.tensor(vision_token_ids(processor.tokenizer), dtype=torch.long)

    @classmethod
    def from_options(cls, model: torch.nn.Module, processor, options: dict[str, Any]) -> Policy:
        """Build the head from its options (``head_config`` of a saved model, overridden by the configuration; a
        head ignores options it does not have, such as ``think_template`` for heads that write no think text)."""
        return cls(model, processor)

    def head_config(self) -> dict[str, Any]:
        """What ``load_policy`` needs to rebuild this head; saved as ``invert4tvg_head.json`` with the model."""
        return {"head": self.name}

    # -- prompts and rollouts -------------------------------------------------------------------------------
    def render(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> str:
        return render_prompt(self.processor, messages, add_generation_prompt)

    def rollout_request(
        self,
        messages: list[dict[str, Any]],
        video: DecodedVideo | None,
        num_samples: int,
        request_id: str = "",
        task: str = "tvg",
    ) -> RolloutRequest:
        return RolloutRequest(
            self.render(messages), video, num_samples, request_id, self.constraint(task), self.readout(task)
        )

    def sequence_batch(
        self, requests: Sequence[RolloutRequest], completions: Sequence[Sequence[Completion]]
    ) -> SequenceBatch:
        """Stack every (request, completion) pair into one batch; the video is processed once per request."""
        videos = [r.video for r in requests if r.video is not None]
        prompts = processor_inputs(self.processor, [r.prompt for r in requests], videos or None)
        index = [i for i, group in enumerate(completions) for _ in group]
        prompts = select_inputs(prompts, index)
        flat = [c for group in completions for c in group]
        width = max((len(c.token_ids) for c in flat), default=0) or 1
        pad = self.processor.tokenizer.pad_token_id
        completion_ids = torch.full((len(flat), width), pad, dtype=torch.long)
        completion_mask = torch.zeros((len(flat), width), dtype=torch.long)
        for row, completion in enumerate(flat):
            n = len(completion.token_ids)
            completion_ids[row, :n] = torch.tensor(completion.token_ids, dtype=torch.long)
            completion_mask[row, :n] = 1
        inputs = dict(prompts)
        inputs["input_ids"] = torch.cat([prompts["input_ids"], completion_ids], dim=1)
        inputs["attention_mask"] = torch.cat([prompts["attention_mask"], completion_mask], dim=1)
        if "mm_token_type_ids" in prompts:  # completions are text (type 0)
            inputs["mm_token_type_ids"] = torch.cat(
                [prompts["mm_token_type_ids"], torch.zeros_like(completion_ids)], dim=1
            )
        constraints = [r.constraint for r, group in zip(requests, completions) for _ in group]
        if not any(constraints):
            constraints = None
        return SequenceBatch(BatchFeature(inputs), completion_ids, completion_mask, constraints)

    def completion_logprobs(
        self, model: torch.nn.Module, batch: SequenceBatch, temperature: float = 1.0
    ) -> torch.Tensor:
        """Per-token log-probabilities (B, T) of the completion tokens under ``model`` (the policy, its old copy or
        the reference): one forward pass over prompt + completion with the batch's own video tensors.

        Logits are divided by ``temperature``, vision tokens are excluded and rows generated under a
        :class:`TokenConstraint` are held to it, matching the distribution rollouts sample from: the policy GRPO
        trains is the constrained one. ``batch`` may also be a
        :class:`~invert4tvg.modeling.shared_prefix.SharedPrefixBatch` (each prompt once, then its G completions);
        full-vocabulary logits are never held for the whole micro-batch (:mod:`invert4tvg.modeling.logprobs`).
        """
        positions = batch.logit_positions().to(batch.completion_ids.device)
        hidden, head = hidden_states_at(model, batch.inputs, positions)
        hidden = hidden.reshape(*batch.completion_ids.shape, hidden.shape[-1])
        ids = batch.completion_ids
        if not any(batch.constraints or ()):
            return token_logprobs(head, hidden, ids, temperature, self.suppress_ids)
        # Constrained rows (short fixed-format answers) take their mask over the vocabulary; the rest are chunked.
        rows: list[torch.Tensor | None] = [None] * len(ids)
        free = [i for i, c in enumerate(batch.constraints) if c is None]
        if free:
            for i, row in zip(
                free, token_logprobs(head, hidden[free], ids[free], temperature, self.suppress_ids)
            ):
                rows[i] = row
        for i, constraint in enumerate(batch.constraints):
            if constraint is not None:
                rows[i] = constrained_logprobs(
                    head, hidden[i], ids[i], constraint, temperature, self.suppress_ids
                )
        return torch.stack(rows)

    def rl_logprobs(
        self,
        model: torch.nn.Module,
        batch: SequenceBatch,
        temperature: float = 1.0,
        spans: Sequence[tuple[float, float, float] | None] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The GRPO policy pass: :meth:`completion_logprobs` and, when ``spans`` are given (per completion row the
        ground truth ``(start, end, duration)`` of a grounding completion, else None) and the head has a loss of
        its own (:attr:`has_aux_loss`), that loss from the same forward (None otherwise)."""
        return self.completion_logprobs(model, batch, temperature), None

    def prepare_rl(self, aux_loss_weight: float) -> float:
        """Set the head up for GRPO; returns the weight its auxiliary loss gets (0: none, as for every head without
        :attr:`has_aux_loss`)."""
        return 0.0

    # -- head-specific hooks --------------------------------------------------------------------------------
    @abstractmethod
    def decode_completions(
        self,
        requests: Sequence[RolloutRequest],
        completions: Sequence[Sequence[Completion]],
        durations: Sequence[float],
    ) -> list[list[Decoded | None]]:
        """The span ``[start, end]`` in seconds each grounding completion of each request answers (+ saliency where
        the head has one), None where it does not parse (``durations[i]``: request ``i``'s video). Heads that read
        each completion on its own derive from :class:`CompletionPolicy`; heads that read hidden states
        (:class:`~invert4tvg.policy.hidden.HiddenStatePolicy`) run one forward over the finished sequences."""

    @abstractmethod
    def tvg_target(self, query: str, start: float, end: float, duration: float) -> str:
        """The supervised completion for a grounding sample (SFT warm start)."""

    def answer_target(self, answer: str, think: str = INVERT_THINK) -> str:
        """An inversion-task target (Invert-SFT): the inversion prompts ask every head for text in the
        think + answer template."""
        return f"<think>{think}</think> <answer>{answer}</answer>"

    def constraint(self, task: str) -> TokenConstraint | None:
        """What a rollout engine must hold generation to for ``task`` (None: free text)."""
        return None

    def readout(self, task: str) -> HiddenReadout | None:
        """The hidden states a rollout engine should return for ``task`` (None: the head reads text)."""
        return None

    def supervised_batch(self, examples: Sequence[SupervisedExample]) -> tuple[BatchFeature, torch.Tensor]:
        """Model inputs and labels for SFT: loss on the target tokens (and the closing EOS) only."""
        prompts = [self.render(e.messages) for e in examples]
        eos = self.processor.tokenizer.eos_token or ""
        texts = [p + e.target + eos for p, e in zip(prompts, examples)]
        videos = [e.video for e in examples if e.video is not None]
        inputs = processor_inputs(self.processor, texts, videos or None, padding_side="right")
        # Prompt length = its text tokens + the video placeholder expanded to one token per merged patch.
        merge = self.processor.video_processor.merge_size**2
        video_tokens = iter((inputs["video_grid_thw"].prod(-1) // merge).tolist() if videos else [])
        labels = inputs["input_ids"].clone()
        for row, (prompt, example) in enumerate(zip(prompts, examples)):
            n = len(self.processor.tokenizer(prompt, add_special_tokens=False)["input_ids"])
            if example.video is not None:
                n += next(video_tokens) - 1
            labels[row, :n] = -100
        labels[inputs["attention_mask"] == 0] = -100
        return inputs, labels

    def supervised_loss(
        self,
        model: torch.nn.Module,
        inputs: BatchFeature,
        labels: torch.Tensor,
        epoch: float = 0.0,
        examples: Sequence[SupervisedExample] = (),
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The SFT loss and its parts for logging: token-level cross-entropy on the labelled positions. Heads with
        their own losses (which may be scheduled by ``epoch``, the data passes done so far, or read the
        ``examples`` the batch was built from) override it."""
        loss = model(**inputs, labels=labels, use_cache=False).loss
        return loss, {}

    def weights_for_sync(self) -> dict[str, torch.Tensor]:
        """What a rollout engine holding its own copy needs after an update: the trainable parameters only (the
        adapters with LoRA, the language model when the vision tower is frozen), detached, on CPU."""
        return {n: p.cpu() for n, p in self.named_weights_for_sync()}

    def named_weights_for_sync(self) -> Iterator[tuple[str, torch.Tensor]]:
        """The same tensors one at a time, detached, where they live (no copy; a sharded parameter gathered whole,
        a collective every process runs): what an engine streams from."""
        return ((n, _whole(p.detach())) for n, p in self.model.named_parameters() if p.requires_grad)


class CompletionPolicy(Policy):
    """A head that reads each completion on its own: its text, or the log-probs it was sampled with."""

    @abstractmethod
    def decode(self, completion: Completion | str, duration: float) -> Decoded | None:
        """The span a grounding completion answers (+ saliency where the head has one), or None when it does not
        parse. ``completion`` is a rollout engine's :class:`Completion` (its log-probs give the saliency of heads
        that score frames) or, for text-only heads, its text."""

    def decode_completions(
        self,
        requests: Sequence[RolloutRequest],
        completions: Sequence[Sequence[Completion]],
        durations: Sequence[float],
    ) -> list[list[Decoded | None]]:
        return [[self.decode(c, d) for c in group] for group, d in zip(completions, durations)]


def _whole(tensor: torch.Tensor) -> torch.Tensor:
    """A parameter's whole tensor: an FSDP2-sharded one (a DTensor) is all-gathered, one parameter at a time, so
    every process must call it in the same order (each process syncs its own engine)."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor

"""Heads that read hidden states (VideoExpert's ``<LOC>``, MeCo's structural tokens): the shared machinery.

Such a head's answer is text with special tokens in it; the span comes from a module of the head applied to two
things a forward pass over prompt + answer yields:

- **frame features**: the last layer's hidden states at the video's tokens, mean-pooled per temporal patch (Qwen2.5-VL
  has no per-frame CLS token; a temporal patch is two sampled frames, ``video_grid_thw[0]`` of them per video). Frame
  ``t`` of ``F`` stands for the window ``[t / F, (t + 1) / F]`` of the video, as the sampled frames cover it evenly.
- **token states**: the hidden states at the head's special tokens in the answer, from the layer the head reads
  (``token_layer``: -1 the last, after the final norm; -2 the one before, as ``output_hidden_states`` numbers them).

Only those layers are kept (forward hooks), never every layer's states. In SFT they come from the loss's own forward
(gradients reach the model through them). After generation the span needs them for the finished sequences:
:meth:`HiddenStatePolicy.decode_completions` runs one no-grad forward over each batch of them (prompt, video and
answer), the same for every engine, since vLLM cannot return hidden states.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import torch
from transformers import BatchFeature

from invert4tvg.modeling.readout import HiddenReadout, HiddenStates, capture_layers, frame_features
from invert4tvg.modeling.sequences import SequenceBatch
from invert4tvg.modeling.shared_prefix import MASKABLE_ATTENTION, SharedPrefixBatch, pack_groups
from invert4tvg.policy import head_modules
from invert4tvg.policy.base import Decoded, Policy, SupervisedExample
from invert4tvg.rollout.base import Completion, RolloutRequest
from rewards import window_labels

# Sequences per no-grad decoding forward (prompt + video + answer each).
DECODE_BATCH = 8
DEFAULT_WIDTH = 256  # the module's channels [default: neither paper gives a size that fits every model]


def frame_centres(frames: int) -> torch.Tensor:
    """Each frame's window centre as a fraction of the video."""
    return (torch.arange(frames, dtype=torch.float32) + 0.5) / frames


def frame_labels(frames: int, start: float, end: float, duration: float) -> torch.Tensor:
    """(F,) bool: the windows the span covers, as the ``frame_f1`` reward and the frame-segmentation head count them
    (:func:`rewards.window_labels`)."""
    return torch.tensor(window_labels(start, end, duration, frames), dtype=torch.bool)


class HiddenStatePolicy(Policy):
    """A head whose span is read from hidden states by a module of its own (attached to the model)."""

    has_aux_loss = True
    #: The layer the head reads at its special tokens (frames always use the last).
    token_layer: ClassVar[int] = -1
    #: Names of the head's loss parts (logged as ``loss/<name>``) and their default SFT weights (LM has weight 1).
    loss_parts: ClassVar[tuple[str, ...]] = ()
    default_loss_weights: ClassVar[tuple[float, ...]] = ()

    def __init__(
        self,
        model: torch.nn.Module,
        processor,
        width: int = DEFAULT_WIDTH,
        loss_weights: Sequence[float] = (),
    ) -> None:
        super().__init__(model, processor)
        self.width = width
        head_modules.attach(model, self.build_module(model.config.text_config.hidden_size, width))
        tokenizer = processor.tokenizer
        self.token_ids = [tokenizer.convert_tokens_to_ids(t) for t in self.extra_special_tokens]
        self.video_token_id = tokenizer.convert_tokens_to_ids("<|video_pad|>")
        self.merge = processor.video_processor.merge_size
        self.loss_weights = tuple(loss_weights) or self.default_loss_weights
        if len(self.loss_weights) != len(self.loss_parts):
            raise ValueError(
                f"head_loss_weights: the {self.name} head has {len(self.loss_parts)} weighted parts "
                f"({', '.join(self.loss_parts)}), got {list(self.loss_weights)}"
            )

    @classmethod
    def from_options(cls, model, processor, options: dict[str, Any]) -> HiddenStatePolicy:
        return cls(
            model,
            processor,
            width=int(options.get("width") or DEFAULT_WIDTH),
            loss_weights=options.get("loss_weights") or (),
        )

    def head_config(self) -> dict[str, Any]:
        return {"head": self.name, "width": self.width, "loss_weights": list(self.loss_weights)}

    @property
    def module(self) -> torch.nn.Module:
        return head_modules.get(self.model)

    @property
    def hidden_layers(self) -> tuple[int, int]:
        """The layers the head reads: the last (frames) and its token layer."""
        return (-1, self.token_layer)

    def named_weights_for_sync(self) -> Iterator[tuple[str, torch.Tensor]]:
        """As every head's, without the module: rollout engines return states, the trainer's module decodes."""
        return ((k, v) for k, v in super().named_weights_for_sync() if head_modules.ATTRIBUTE not in k)

    # -- what subclasses implement --------------------------------------------------------------------------
    def build_module(self, hidden_size: int, width: int) -> torch.nn.Module:
        """The head's own module for a language model of ``hidden_size``, ``width`` channels wide."""
        raise NotImplementedError

    def head_losses(
        self, frames: torch.Tensor, tokens: torch.Tensor, token_ids: list[int], span: tuple[float, float],
        duration: float,
    ) -> dict[str, torch.Tensor] | None:  # fmt: skip
        """The head's loss parts for one grounding example (None when its answer lacks the head's tokens)."""
        raise NotImplementedError

    def read_span(
        self, frames: torch.Tensor, tokens: torch.Tensor, token_ids: list[int], duration: float
    ) -> Decoded | None:
        """The span (+ per-frame saliency and 0/1 decision) from one answer's frame features and token states
        (``tokens`` (K, H) at its special tokens, ``token_ids`` which they are); None when the answer has none."""
        raise NotImplementedError

    # -- reading hidden states ------------------------------------------------------------------------------
    def _states(
        self, store: dict[int, torch.Tensor], inputs: BatchFeature, rows: Sequence[int], answer: torch.Tensor
    ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, list[int]]]:
        """Per row: frame features, states at the head's tokens inside ``answer`` (B, S bool), their ids."""
        frames = frame_features(
            store[-1], inputs["input_ids"], inputs["video_grid_thw"], self.video_token_id, self.merge
        )
        ids = inputs["input_ids"]
        is_head_token = torch.isin(ids, torch.tensor(self.token_ids, device=ids.device)) & answer
        for row in rows:
            positions = is_head_token[row].nonzero()[:, 0]
            yield row, frames[row], store[self.token_layer][row, positions], ids[row, positions].tolist()

    def readout(self, task: str) -> HiddenReadout | None:
        return HiddenReadout(tuple(self.token_ids), self.token_layer) if task == "tvg" else None

    def decode_completions(
        self,
        requests: Sequence[RolloutRequest],
        completions: Sequence[Sequence[Completion]],
        durations: Sequence[float],
    ) -> list[list[Decoded | None]]:
        """The span of each completion from its hidden states: those the engine returned
        (:class:`~invert4tvg.rollout.hf.HFEngine` does), else computed from the finished sequences."""
        missing = [(i, c) for i, group in enumerate(completions) for c in group if c.hidden is None]
        computed = dict(zip(map(id, (c for _, c in missing)), self.hidden_states(requests, missing)))
        out = []
        for group, duration in zip(completions, durations):
            row = []
            for c in group:
                states = c.hidden if c.hidden is not None else computed[id(c)]
                row.append(
                    self.read_span(states.frames.float(), states.tokens.float(), states.token_ids, duration)
                )
            out.append(row)
        return out

    @torch.no_grad()
    def hidden_states(
        self, requests: Sequence[RolloutRequest], completions: Sequence[tuple[int, Completion]]
    ) -> list[HiddenStates]:
        """The readout of finished sequences (``(request index, completion)`` pairs) for engines that return none
        (vLLM): no-grad forwards keeping only the two layers the head reads. With SDPA or eager attention a
        request's completions go in one shared-prefix row (the prompt and its video once, as generation's
        prefill: ``modeling/shared_prefix.py``); otherwise ``DECODE_BATCH`` repeated-layout sequences at a time."""
        if not completions:
            return []
        device = next(self.model.parameters()).device
        attention = getattr(self.model.config, "_attn_implementation", "sdpa") or "sdpa"
        was_training = self.model.training
        self.model.eval()
        try:
            if attention in MASKABLE_ATTENTION:
                by_request: dict[int, list[Completion]] = {}
                for i, c in completions:
                    by_request.setdefault(i, []).append(c)
                found = {}
                for i, group in by_request.items():
                    for c, states in zip(group, self._group_states(requests[i], group, device)):
                        found[id(c)] = states
                return [found[id(c)] for _, c in completions]
            out: list[HiddenStates] = []
            for start in range(0, len(completions), DECODE_BATCH):
                chunk = completions[start : start + DECODE_BATCH]
                batch = self.sequence_batch([requests[i] for i, _ in chunk], [[c] for _, c in chunk])
                inputs = batch.to(device).inputs
                answer = torch.zeros_like(inputs["input_ids"], dtype=torch.bool)
                answer[:, -batch.completion_ids.shape[1] :] = batch.completion_mask.bool().to(device)
                with capture_layers(self.model, (-1, self.token_layer)) as store:
                    self.model(**inputs, logits_to_keep=1, use_cache=False)
                for _, frames, tokens, ids in self._states(store, inputs, range(len(chunk)), answer):
                    out.append(HiddenStates(frames.cpu(), tokens.cpu(), ids))
            return out
        finally:
            self.model.train(was_training)

    def _group_states(
        self, request: RolloutRequest, group: Sequence[Completion], device: torch.device
    ) -> list[HiddenStates]:
        """One request's completions in one shared-prefix row: ``[prompt][completion 1]..[completion G]``."""
        batch = self.sequence_batch([request], [list(group)]).to(device)
        layout = pack_groups(batch, len(group), self.model)
        inputs = layout.inputs
        with capture_layers(self.model, (-1, self.token_layer)) as store:
            self.model(**inputs, logits_to_keep=1, use_cache=False)
        frames = frame_features(
            store[-1], inputs["input_ids"], inputs["video_grid_thw"], self.video_token_id, self.merge
        )[0].cpu()
        prompt, width = layout.prompt_length, batch.completion_ids.shape[1]
        ids = batch.completion_ids
        wanted = (
            torch.isin(ids, torch.tensor(self.token_ids, device=ids.device)) & batch.completion_mask.bool()
        )
        out = []
        for g in range(len(group)):
            positions = wanted[g].nonzero()[:, 0]
            tokens = store[self.token_layer][0, prompt + g * width + positions].cpu()
            out.append(HiddenStates(frames, tokens, ids[g, positions].tolist()))
        return out

    # -- supervised warm start ------------------------------------------------------------------------------
    def supervised_loss(
        self,
        model: torch.nn.Module,
        inputs: BatchFeature,
        labels: torch.Tensor,
        epoch: float = 0.0,
        examples: Sequence[SupervisedExample] = (),
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """LM loss on the answer + the head's weighted parts, averaged over the batch's grounding examples (those
        with a ``span``), from the same forward pass."""
        with capture_layers(model, (-1, self.token_layer)) as store:
            outputs = model(**inputs, labels=labels, use_cache=False)
        grounding = [row for row, e in enumerate(examples) if e.span is not None]
        parts: dict[str, list[torch.Tensor]] = {name: [] for name in self.loss_parts}
        if grounding:
            for row, frames, tokens, ids in self._states(store, inputs, grounding, labels != -100):
                example = examples[row]
                found = self.head_losses(frames.float(), tokens.float(), ids, example.span, example.duration)
                for name, value in (found or {}).items():
                    parts[name].append(value)
        loss = outputs.loss
        logged = {"loss/lm": outputs.loss.item()}
        for weight, (name, values) in zip(self.loss_weights, parts.items()):
            if values:
                part = torch.stack(values).mean()
                loss = loss + weight * part
                logged[f"loss/{name}"] = part.item()
        # Every head parameter takes part in every step's graph (DDP waits for a gradient of each), also in steps
        # with no grounding example.
        loss = loss + 0.0 * sum(p.sum() for p in self.module.parameters() if p.requires_grad)
        return loss, logged

    def prepare_rl(self, aux_loss_weight: float) -> float:
        """The module reads the span, but the policy gradient reaches only the text tokens: it keeps its warm-start
        weights in RL unless its supervised loss is kept as an auxiliary term (``aux_loss_weight`` > 0)."""
        self.module.requires_grad_(bool(aux_loss_weight))
        return aux_loss_weight

    def rl_logprobs(
        self,
        model: torch.nn.Module,
        batch: SequenceBatch | SharedPrefixBatch,
        temperature: float = 1.0,
        spans: Sequence[tuple[float, float, float] | None] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if spans is None:
            return self.completion_logprobs(model, batch, temperature), None
        with capture_layers(model, self.hidden_layers) as states:  # the same forward gives the head's states
            logps = self.completion_logprobs(model, batch, temperature)
        return logps, self.rl_head_loss(states, batch, spans)

    def rl_head_loss(
        self,
        store: dict[int, torch.Tensor],
        batch: SequenceBatch | SharedPrefixBatch,
        spans: Sequence[tuple[float, float, float] | None],
    ) -> torch.Tensor:
        """The head's weighted supervised loss on a GRPO micro-batch, from the states of the policy pass
        (``store``: :func:`capture_layers` of ``hidden_layers`` around it), averaged over the completions with a
        ground truth (``spans``: per completion row ``(start, end, duration)`` or None) whose answer holds the
        head's tokens. Either layout: repeated rows, or one shared-prefix row per group."""
        ids = batch.completion_ids
        width = ids.shape[1]
        if isinstance(batch, SharedPrefixBatch):
            prompt_ids, grid = batch.prompt_inputs["input_ids"], batch.prompt_inputs["video_grid_thw"]
            group = batch.num_generations

            def where(row: int) -> tuple[int, int]:  # (row of the states, position of completion token 0)
                return row // group, batch.prompt_length + (row % group) * width
        else:
            prompt_ids, grid = batch.inputs["input_ids"], batch.inputs["video_grid_thw"]

            def where(row: int) -> tuple[int, int]:
                return row, prompt_ids.shape[1] - width

        frames = frame_features(store[-1], prompt_ids, grid, self.video_token_id, self.merge)
        wanted = (
            torch.isin(ids, torch.tensor(self.token_ids, device=ids.device)) & batch.completion_mask.bool()
        )
        losses = []
        for row, span in enumerate(spans):
            if span is None:
                continue
            state_row, start = where(row)
            positions = wanted[row].nonzero()[:, 0]
            tokens = store[self.token_layer][state_row, start + positions].float()
            parts = self.head_losses(
                frames[state_row].float(), tokens, ids[row, positions].tolist(), span[:2], span[2]
            )
            if parts:
                losses.append(sum(w * parts[name] for w, name in zip(self.loss_weights, self.loss_parts)))
        # Every module parameter is in the graph of every micro-batch (DDP), also one without such completions.
        zero = 0.0 * sum(p.sum() for p in self.module.parameters() if p.requires_grad)
        return (torch.stack(losses).mean() if losses else store[-1].new_zeros(())) + zero

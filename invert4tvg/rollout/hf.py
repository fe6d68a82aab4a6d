"""In-process rollouts with transformers ``generate``: batched, left-padded, vision placeholders suppressed.

Used where there is no vLLM (CPU machines, tests, the demo) and inside Ray actors (``backend: ray-hf``). The video of
a request is processed once, and a video prompt is prefilled once for all of its samples (``modeling/prefill.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import nullcontext

import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from invert4tvg.modeling.logprobs import TokenConstraint
from invert4tvg.modeling.prefill import prefill_once
from invert4tvg.modeling.processing import eos_token_ids, processor_inputs, repeat_inputs, vision_token_ids
from invert4tvg.modeling.readout import capture_layers, generation_readouts
from invert4tvg.rollout.base import (
    Completion,
    RolloutEngine,
    RolloutRequest,
    SamplingParams,
    StaleWeightsError,
    check_room,
)


class _SampledTokenLogprobs(LogitsProcessor):
    """Records log-probabilities of the sampled tokens without keeping every step's scores.

    It runs after the temperature warper and before top-k/top-p, so the recorded values are log-probs under the
    temperature-scaled model distribution, which is what the trainer's log-prob pass computes. At step ``t`` it sees
    the token sampled at ``t - 1`` (the last input id) and reads its log-prob from the distribution kept from ``t - 1``.
    """

    def __init__(self) -> None:
        self.previous: torch.Tensor | None = None
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.previous is not None:
            self.steps.append(self.previous.gather(1, input_ids[:, -1:]).squeeze(1))
        self.previous = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, last_tokens: torch.Tensor) -> torch.Tensor:
        if self.previous is not None:
            self.steps.append(self.previous.gather(1, last_tokens[:, None]).squeeze(1))
        return torch.stack(self.steps, dim=1) if self.steps else torch.zeros(len(last_tokens), 0)


class _Constrained(LogitsProcessor):
    """Holds each row to its request's :class:`TokenConstraint` (rows without one are left free)."""

    def __init__(self, constraints: Sequence[TokenConstraint | None], prompt_width: int) -> None:
        self.constraints = list(constraints)
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - self.prompt_width
        for row, constraint in enumerate(self.constraints):
            if constraint is None or step > constraint.length:
                continue
            keep = constraint.allowed if step < constraint.length else constraint.end
            masked = torch.full_like(scores[row], float("-inf"))
            masked[list(keep)] = scores[row, list(keep)]
            scores[row] = masked
        return scores


class HFEngine(RolloutEngine):
    """Generates with a transformers model.

    ``shares_model=True`` (the in-process default) means the engine generates with the trainer's own module, so a
    weight sync only advances the version. Otherwise ``update_weights`` loads the given tensors into its own copy.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        processor,
        max_batch_sequences: int = 64,
        shares_model: bool = True,
        prefill_once: bool = True,
    ) -> None:
        self.model = model
        self.prefill_once = prefill_once  # False: prompts repeated per sample (kept to compare against)
        self.processor = processor
        self.max_batch_sequences = max_batch_sequences
        self.shares_model = shares_model
        self.policy_version = 0
        tokenizer = processor.tokenizer
        self.pad_id = tokenizer.pad_token_id
        self.eos_ids = eos_token_ids(model, tokenizer)
        self.suppress_ids = vision_token_ids(tokenizer)
        self.video_token_id = tokenizer.convert_tokens_to_ids("<|video_pad|>")
        self.merge = processor.video_processor.merge_size

    def update_weights(
        self, weights: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]] | None, version: int
    ) -> None:
        if version < self.policy_version:
            raise StaleWeightsError(
                f"asked to serve policy version {version}, already at {self.policy_version}"
            )
        if weights is not None and not self.shares_model:
            weights = weights if isinstance(weights, Mapping) else dict(weights)
            known = dict(self.model.named_parameters())
            missing = [name for name in weights if name not in known]
            if missing:
                raise KeyError(f"update_weights: unknown parameters {missing[:5]} (of {len(missing)})")
            self.model.load_state_dict(dict(weights), strict=False)
        self.policy_version = version

    @torch.no_grad()
    def generate(
        self, requests: Sequence[RolloutRequest], sampling: SamplingParams
    ) -> list[list[Completion]]:
        results: list[list[Completion]] = []
        for chunk in _chunks(requests, self.max_batch_sequences):
            results.extend(self._generate_chunk(chunk, sampling))
        return results

    def _generate_chunk(
        self, requests: Sequence[RolloutRequest], sampling: SamplingParams
    ) -> list[list[Completion]]:
        videos = [r.video for r in requests if r.video is not None]
        if videos and len(videos) != len(requests):
            raise ValueError("a generate call mixes requests with and without video; split them")
        inputs = processor_inputs(self.processor, [r.prompt for r in requests], videos or None)
        counts = [r.num_samples for r in requests]
        device = next(self.model.parameters()).device
        inputs = inputs.to(device)
        recorder = _SampledTokenLogprobs()
        greedy = sampling.temperature == 0
        processors = LogitsProcessorList()
        constraints = [r.constraint for r in requests for _ in range(r.num_samples)]
        check_room(constraints, sampling.max_tokens)
        if any(constraints):  # before the recorder: log-probs are those of the constrained distribution
            processors.append(_Constrained(constraints, inputs["input_ids"].shape[1]))
        if not greedy and sampling.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(sampling.temperature))
        processors.append(recorder)
        if not greedy and sampling.top_k > 0:
            processors.append(TopKLogitsWarper(sampling.top_k))
        if not greedy and sampling.top_p < 1.0:
            processors.append(TopPLogitsWarper(sampling.top_p))
        generator_state = None
        if sampling.seed is not None:
            generator_state = torch.random.get_rng_state()
            torch.manual_seed(sampling.seed)
        was_training = self.model.training
        self.model.eval()
        try:
            # Every sampling knob is explicit: released Qwen2.5-VL generation configs carry top_k=1, top_p=0.001 and
            # repetition_penalty=1.05, which would otherwise leak into rollouts that the trainer scores without them.
            knobs = {"temperature": 1.0, "top_p": 1.0, "top_k": 0} if not greedy else {}
            readout = next((r.readout for r in requests if r.readout is not None), None)
            if readout is not None and not videos:
                readout = None  # frame features need the video
            capture = nullcontext({})
            if readout is not None:
                capture = capture_layers(self.model, (-1, readout.token_layer), every_call=True)
            with capture as calls:
                start = prefill_once(self.model, inputs, counts) if self.prefill_once else None
                output = self.model.generate(
                    **(start or repeat_inputs(inputs, counts)),
                    do_sample=not greedy,
                    **knobs,
                    repetition_penalty=1.0,
                    max_new_tokens=sampling.max_tokens,
                    logits_processor=processors,
                    suppress_tokens=self.suppress_ids,
                    eos_token_id=self.eos_ids,
                    pad_token_id=self.pad_id,
                    use_cache=True,
                    # transformers would keep FSDP processes generating in lockstep (an all-reduce per token); a
                    # sharded model is gathered for the whole call instead (training/fsdp.py: gathered).
                    synced_gpus=False,
                )
        finally:
            self.model.train(was_training)
            if generator_state is not None:
                torch.random.set_rng_state(generator_state)
        new_tokens = output[:, inputs["input_ids"].shape[1] :].cpu()
        logprobs = recorder.finish(new_tokens[:, -1].to(device)).cpu() if new_tokens.shape[1] else None
        completions = [self._completion(new_tokens[i], logprobs, i) for i in range(new_tokens.shape[0])]
        if readout is not None:
            hidden = generation_readouts(
                readout, calls, inputs, counts, start is not None, new_tokens.to(device), self.video_token_id,
                self.merge,
            )  # fmt: skip
            for completion, states, request in zip(
                completions, hidden, (r for r in requests for _ in range(r.num_samples))
            ):
                if request.readout is not None:
                    completion.hidden = states
        grouped, start = [], 0
        for request in requests:
            group = completions[start : start + request.num_samples]
            for c in group:
                c.request_id = request.request_id
            grouped.append(group)
            start += request.num_samples
        return grouped

    def _completion(self, tokens: torch.Tensor, logprobs: torch.Tensor | None, row: int) -> Completion:
        ids = tokens.tolist()
        length, finish = len(ids), "length"
        for pos, token in enumerate(ids):
            if token in self.eos_ids:
                length, finish = pos + 1, "stop"
                break
        ids = ids[:length]
        lps = logprobs[row, :length].tolist() if logprobs is not None else []
        text = self.processor.tokenizer.decode(ids, skip_special_tokens=True)
        return Completion(
            token_ids=ids, text=text, logprobs=lps, finish_reason=finish, policy_version=self.policy_version
        )


def _chunks(requests: Sequence[RolloutRequest], max_sequences: int) -> list[Sequence[RolloutRequest]]:
    """Split requests into generate calls of at most ``max_sequences`` sequences (a request is never split)."""
    chunks, current, size = [], [], 0
    for request in requests:
        if current and size + request.num_samples > max_sequences:
            chunks.append(current)
            current, size = [], 0
        current.append(request)
        size += request.num_samples
    if current:
        chunks.append(current)
    return chunks

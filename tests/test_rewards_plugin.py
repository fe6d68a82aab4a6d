"""The registry: in-process registration, the error policy for plugin callables, and an installed plugin package."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import rewards

ROOT = Path(__file__).resolve().parents[1]
GOOD = "<think>t</think><answer>1 to 2</answer>"


def test_builtins_are_available():
    assert {"format", "iou", "vc", "ar", "vd", "cosine", "invert4tvg"} <= set(rewards.available())
    assert rewards.get("iou").__name__ == "iou"  # TRL logs rewards by __name__
    assert rewards.get("iou") is rewards.get("iou")


def test_register_function_and_class():
    @rewards.register("test_const")
    def const(completions, **columns):
        return [0.5] * len(completions)

    @rewards.register("test_scaled")
    class Scaled:
        def __init__(self, scale: float = 1.0, on_error: str = "raise"):
            self.scale = scale

        def __call__(self, completions, **columns):
            return [self.scale] * len(completions)

    try:
        assert rewards.get("test_const") is const
        assert rewards.get("test_scaled")(["a"]) == [1.0]
        assert rewards.build("test_scaled", scale=0.25)(["a", "b"]) == [0.25, 0.25]
        assert {"test_const", "test_scaled"} <= set(rewards.available())
        with pytest.raises(ValueError, match="already registered"):
            rewards.register("test_const", lambda completions, **kw: [])
        with pytest.raises(TypeError, match="takes no options"):
            rewards.build("test_const", weight=2)
        assert isinstance(rewards.build("test_const", on_error="zero"), rewards.GuardedReward)
    finally:
        rewards.unregister("test_const")
        rewards.unregister("test_scaled")


def test_unknown_reward_lists_what_exists():
    with pytest.raises(KeyError, match=r"unknown reward 'nope'; available: .*iou"):
        rewards.get("nope")


def flaky(completions, query, **columns):
    """Fails on one sample only: the guard has to find which."""
    return [1.0 / len(q) for q in query]


def test_guard_finds_the_failing_sample():
    completions = [GOOD] * 3
    with pytest.raises(rewards.RewardSampleError, match=r"'flaky': sample 1: ZeroDivisionError"):
        rewards.GuardedReward(flaky)(completions, query=["ab", "", "abcd"])
    guarded = rewards.GuardedReward(flaky, on_error="zero")
    assert guarded(completions, query=["ab", "", "abcd"]) == [0.5, 0.0, 0.25]
    assert guarded.errors == 1


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ([1.0], "list of 2 floats"),
        ([1.0, float("nan")], "sample 1: returned nan; a reward must be a finite number"),
        ([float("inf"), 1.0], "sample 0: returned inf; a reward must be a finite number"),
        ([1.0, float("-inf")], "sample 1: returned -inf"),
        ([1.0, "x"], "not a number"),
    ],
)
def test_guard_checks_outputs(output, message):
    with pytest.raises(rewards.RewardOutputError, match=message):
        rewards.GuardedReward(lambda completions, **kw: output, "bad")([GOOD, GOOD])


def test_installed_plugin_is_found_by_name(tmp_path):
    """pip-install the example package into a scratch directory and look its reward up from a fresh process."""
    source, target = tmp_path / "src", tmp_path / "site"
    shutil.copytree(ROOT / "examples" / "reward_plugin", source)  # building writes build/ next to the sources
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target),
         str(source)],
        check=True, capture_output=True, timeout=240,
    )  # fmt: skip
    script = """
import json, rewards
fn = rewards.get("span_in_video")
completions = ["<think>t</think><answer>2 to 8</answer>", "<answer>5 to 50</answer>", "no answer"]
print(json.dumps({
    "listed": "span_in_video" in rewards.available(),
    "module": fn.__module__,
    "scores": fn(completions, duration=[30.0, 30.0, 30.0]),
    "guarded": rewards.build("span_in_video", on_error="zero")(completions[:1], duration=["?"]),
    "origin": rewards.registry.origin("span_in_video"),  # what a run's first lines say about it
}))
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), str(ROOT)]))
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {
        "listed": True,
        "module": "invert4tvg_reward_example",
        "scores": [1.0, 0.0, 0.0],
        "guarded": [0.0],
        "origin": "entry point invert4tvg_reward_example:span_in_video, package invert4tvg-reward-example",
    }


def test_trl_calling_convention():
    """Rewards are named and called the way TRL's GRPOTrainer does it (names from TRL's own helper)."""
    import invert4tvg  # noqa: F401  (applies the torchvision fix that importing trl needs on CPU)

    trl_utils = pytest.importorskip("trl.trainer.utils", reason="trl is not installed")
    metrics: list = []
    kwargs = {
        "prompts": ["p"] * 2,
        "completions": [[{"role": "assistant", "content": GOOD}]] * 2,
        "completion_ids": [[1, 2], [3]],
        "task": ["tvg", "ar"],
        "query": ["a person walks"] * 2,
        "start": [1.0, 0.0],
        "end": [2.0, 1.0],
        "trainer_state": object(),
        "log_extra": lambda *a, **k: None,
        "log_metric": lambda *a: metrics.append(a),
    }
    for name in ("format", "iou", "ar", "invert4tvg"):
        reward = rewards.build(name, on_error="zero")
        assert trl_utils.get_callable_name(reward) == name
        assert not trl_utils.is_async_callable(reward)
        assert len(reward(**kwargs)) == 2
    assert rewards.get("iou")(**kwargs) == [1.0, None]


def test_rewards_named_by_path_are_imported(tmp_path, monkeypatch):
    """TRL's CLI accepts module.path.function in reward_funcs; so do we, plus module:function and file.py:function."""
    (tmp_path / "my_rewards_mod.py").write_text(
        "def longer_than_two(completions, **columns):\n    return [float(len(c) > 2) for c in completions]\n"
    )
    monkeypatch.chdir(tmp_path)  # found in the working directory, as TRL finds a module next to the config
    for name in (
        "my_rewards_mod:longer_than_two",
        "my_rewards_mod.longer_than_two",
        "my_rewards_mod.py:longer_than_two",
    ):
        try:
            assert rewards.get(name)(["abc", "a"]) == [1.0, 0.0]
            assert (
                rewards.registry.display_name(name) == "longer_than_two"
            )  # logged as rewards/longer_than_two/*
        finally:
            rewards.unregister(name)
    example = f"{ROOT}/examples/span_reward.py:span_inside_video"
    scores = rewards.get(example)(
        [GOOD, GOOD, "no span"], task=["tvg", "vc", "tvg"], duration=[1.5, 1.5, 1.5]
    )
    assert scores == [0.0, None, 0.0]  # ends at 2 s > 1.5 s; inversion tasks unscored; unparseable scores 0
    rewards.unregister(example)


def test_a_reward_path_that_does_not_resolve_fails_at_parse_time(tmp_path, monkeypatch):
    from invert4tvg.config import GRPOArguments
    from invert4tvg.config_checks import ConfigError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="cannot import module 'no_such_module'"):
        GRPOArguments(reward_funcs=["invert4tvg", "no_such_module:fn"])
    with pytest.raises(ConfigError, match="has no callable 'missing'"):
        GRPOArguments(reward_funcs=[f"{ROOT}/examples/span_reward.py:missing"])
    with pytest.raises(ConfigError, match="not found"):
        GRPOArguments(reward_funcs=["nope/span_reward.py:span_inside_video"])

"""Options that reproduce the public code's numbers (issue 18, item 4): Time-R1's evaluation parser, the answer-only
format of the official inversion reward, and reports that say which parser produced a number."""

from __future__ import annotations

import json
import random
import re

import pytest

import rewards
from invert4tvg.builders import load_split
from invert4tvg.config import DataArguments, GRPOArguments, ModelArguments
from invert4tvg.eval.metrics import mean_iou, score_output
from invert4tvg.eval.report import build_report
from invert4tvg.eval.runner import evaluate
from rewards.grounding import TIME_R1_SPAN_PATTERN

# Time-R1's evaluate.py pattern as published; ours must find the same matches (it is only rewritten to be linear).
PUBLISHED_TIME_R1 = re.compile(r"(\d+\.?\d*) (to|and) (\d+\.?\d*)")


def test_time_r1_parser_reads_what_the_answer_parser_does_not():
    gt = (2.0, 6.0)
    cases = {
        # output: (answer parser, time-r1 parser)
        "<think>t</think><answer>2.0 to 6.0</answer>": ((2.0, 6.0), (2.0, 6.0)),
        "The event happens from 2.0 to 6.0 seconds.": (None, (2.0, 6.0)),  # untagged
        "<think>t</think><answer>2.0 to 6.0": (None, (2.0, 6.0)),  # unclosed
        "<ANSWER>2.0 to 6.0</ANSWER>": (None, (2.0, 6.0)),  # tags in another case
        "<think>maybe 1 to 3</think><answer>soon</answer>": (None, (1.0, 3.0)),  # only in the think block
        "<answer>2.0 to 6.0</answer> then 0 to 1": ((2.0, 6.0), (0.0, 1.0)),  # the last anywhere wins
        "<answer>2.0  to 6.0</answer>": ((2.0, 6.0), None),  # two spaces: Time-R1 needs exactly one
        "<answer>2.0 TO 6.0</answer>": ((2.0, 6.0), None),  # Time-R1's "to" is case-sensitive
        "<answer>-1.5 to 6.0</answer>": (None, (1.5, 6.0)),  # a sign is ignored by Time-R1
    }
    for output, (ours, theirs) in cases.items():
        assert rewards.parse_span(output) == ours, output
        assert rewards.parse_span_time_r1(output) == theirs, output
        assert score_output(output, gt, "time-r1")[0] == theirs, output
    with pytest.raises(ValueError, match="unknown parser 'regex'"):
        score_output("x", gt, "regex")


def test_time_r1_pattern_finds_the_published_patterns_matches():
    rng = random.Random(0)
    pieces = ["1", "2", "0", ".", " ", "to", "and", " to ", " and ", "x", "٣", "TO", "<answer>", "-", "\n"]
    for _ in range(20000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 14)))
        expected = [m.groups() for m in PUBLISHED_TIME_R1.finditer(text)]
        assert [m.groups() for m in TIME_R1_SPAN_PATTERN.finditer(text)] == expected, text


def test_the_two_parsers_give_different_numbers_on_the_same_outputs():
    gt = (2.0, 6.0)
    outputs = ["<answer>2 to 6</answer>", "from 2 to 6", "<answer>2 to 6", "<think>2 to 5</think>"]
    ours = [score_output(o, gt)[1] for o in outputs]
    theirs = [score_output(o, gt, "time-r1")[1] for o in outputs]
    assert mean_iou(ours) == pytest.approx(25.0) and mean_iou(theirs) == pytest.approx(100 * 3.75 / 4)


def test_answer_only_format_for_inversion_tasks():
    think = "<think>I saw it.</think> <answer>close</answer>"
    bare = "<answer>close</answer>"
    cols = {"task": ["vc", "vc", "tvg", "tvg"], "masked_verbs": [["close"]] * 4, "start": [1.0] * 4}
    cols["end"] = [2.0] * 4
    texts = [think, bare, "<think>t</think><answer>1 to 2</answer>", "<answer>1 to 2</answer>"]
    paper = rewards.build("invert4tvg").score(texts, **cols)
    assert paper.components["format"] == [1.0, 0.0, 1.0, 0.0]
    official = rewards.build("invert4tvg", inversion_format="answer_only").score(texts, **cols)
    # Inversion samples: <answer> alone, as the official code; grounding samples keep the think + answer format.
    assert official.components["format"] == [0.0, 1.0, 1.0, 0.0]
    assert official.total == [1.0, 2.0, 2.0, 1.0]
    assert rewards.build("answer_format")(["  <answer>a</answer>\n", "<answer></answer>", "<answer>a"]) == [
        1.0,
        1.0,
        0.0,
    ]
    with pytest.raises(ValueError, match="inversion_format must be one of"):
        rewards.build("invert4tvg", inversion_format="json")


def test_inversion_format_reaches_the_reward_from_config():
    from invert4tvg.builders import build_rewards

    assert GRPOArguments().invert_format == "think_answer"  # the paper's by default
    reward_set = build_rewards(GRPOArguments(invert_format="answer_only"))
    assert reward_set.funcs[0].inversion_format == "answer_only"


def test_evaluate_scores_overshooting_spans_with_the_chosen_parser_and_says_so(
    tiny_bench, tiny_model_dir, tiny_sampling, tmp_path
):
    from invert4tvg.policy.loading import load_policy
    from invert4tvg.rollout.hf import HFEngine

    test = json.loads((tiny_bench / "test.json").read_text())
    vid = next(iter(test))
    test[vid]["timestamps"][0] = [test[vid]["timestamps"][0][0], test[vid]["duration"] + 3.0]  # past the end
    ann = tmp_path / "test.json"
    ann.write_text(json.dumps(test))
    data = DataArguments(test_annotations=str(ann), video_dir=str(tiny_bench / "videos"))
    records = load_split(data, "test")  # on_bad_record "raise": the overshoot must not be rejected
    assert len(records) == sum(len(v["timestamps"]) for v in test.values())
    policy = load_policy(ModelArguments(model_name_or_path=str(tiny_model_dir)), for_training=False)
    engine = HFEngine(policy.model, policy.processor)
    runs = {}
    for parser in ("answer", "time-r1"):
        out = tmp_path / f"eval-{parser}"
        metrics = evaluate(
            policy,
            engine,
            records,
            out,
            video_sampling=tiny_sampling,
            action_tasks=[],
            max_tokens=4,
            parser=parser,
            progress=False,
            metadata={"setting": "time_r1", "model": "tiny", "split": "test", "dataset": str(ann)},
        )
        assert metrics["parser"] == parser
        assert metrics["counts"]["samples"] == len(records) and metrics["counts"]["gt_past_video_end"] == 1
        assert json.loads((out / "metrics.json").read_text())["parser"] == parser
        runs[parser] = out
    report = build_report(list(runs.values()), tmp_path / "report", vis_runs=0)
    md = report.markdown.read_text()
    assert "parser=answer" in md and "parser=time-r1" in md  # never averaged together as seeds
    assert "time-r1: the last 'A to B' anywhere in the output" in md
    with pytest.raises(ValueError, match="unknown parser"):
        evaluate(policy, engine, records[:1], None, parser="last-two-numbers", progress=False)


def test_eval_command_takes_the_parser_and_reports_it(tiny_bench, tiny_model_dir, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "eval"
    args = [
        "eval",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(tiny_bench),
        "--split",
        "test",
        "--out",
        str(out),
    ]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "invert4tvg.cli",
            *args,
            "--tasks",
            "",
            "--max-new-tokens",
            "4",
            "--parser",
            "time-r1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((out / "metrics.json").read_text())["parser"] == "time-r1"
    # The summary names the parser and, since 4 new tokens cannot hold an answer, how many answers did not parse
    # (counts that are zero, such as spans past the video's end, are left out of the line).
    assert "(parser time-r1," in result.stdout and "answers did not parse (IoU 0)" in result.stdout

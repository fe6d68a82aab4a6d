"""A reward of your own, used by path: ``--reward_funcs invert4tvg examples/span_reward.py:span_inside_video``.

TRL's signature: the completions plus every reward column as a keyword, one entry per completion. It returns None
where it does not apply (the inversion tasks), so it neither rewards nor penalises those completions, and it is
logged as ``rewards/span_inside_video/mean``.
"""

import rewards


def span_inside_video(completions, task, duration, **columns):
    """Grounding answers: 1 when the predicted span ends inside the video, 0 when it does not or does not parse."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    spans = [rewards.parse_span(text) for text in texts]
    return [
        None if t != "tvg" else float(s is not None and s[1] <= d) for s, t, d in zip(spans, task, duration)
    ]

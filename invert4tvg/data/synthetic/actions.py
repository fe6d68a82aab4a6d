"""Visual definitions of the benchmark's actions: when an object can perform one, and how it looks over time.

An object's look is an :class:`ObjectState` (pixels and degrees). Each action plans its parameters from the state
it starts in (or declines when impossible there: a circle cannot visibly spin, an object at the left edge cannot
move further left), gives the state at any moment of its span, and the state it leaves behind.

Pairs (grow/shrink, appear/disappear, enter/leave, move_left/move_right, rise/fall, open/close) look alike in any
single frame and differ only in the direction of change. Periodic actions use periods that never alias at Qwen's
2 fps sampling (0.5 s steps), so two consecutive sampled frames always differ while they run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

# Rotational symmetry of each shape (degrees): spinning must not step by a multiple of it per sample.
SYMMETRY = {"circle": 0.0, "square": 90.0, "triangle": 120.0, "star": 72.0, "cross": 90.0}
MIN_SIZE_FRAC = 0.12  # smallest object, as a fraction of min(width, height)
MAX_SIZE_FRAC = 0.6
BOUNCE_PERIOD, SHAKE_PERIOD, BLINK_PERIOD, PULSE_PERIOD = 1.5, 0.6, 1.2, 1.5


@dataclass(frozen=True)
class ObjectState:
    x: float  # centre, pixels
    y: float
    size: float  # bounding diameter, pixels
    alpha: float = 1.0  # 0 = not visible
    angle: float = 0.0  # rotation, degrees (also where an open mouth points)
    mouth: float = 0.0  # opening cut out of the shape, degrees

    @property
    def present(self) -> bool:
        return self.alpha > 0.5


@dataclass(frozen=True)
class Frame:
    width: int
    height: int

    @property
    def side(self) -> int:
        return min(self.width, self.height)


Params = dict[str, Any]


@dataclass(frozen=True)
class Action:
    name: str
    lemma: str
    opposite: str | None
    plan: Callable[[ObjectState, str, np.random.Generator, Frame], Params | None]
    at: Callable[[ObjectState, Params, float, float], ObjectState]  # (start state, params, elapsed, length)
    final: Callable[[ObjectState, Params], ObjectState]


def _lerp(a: float, b: float, u: float) -> float:
    return a + (b - a) * min(max(u, 0.0), 1.0)


def _fits(x: float, y: float, size: float, frame: Frame) -> bool:
    r = size / 2
    return r <= x <= frame.width - r and r <= y <= frame.height - r


def _transition(**targets: str) -> tuple[Callable, Callable]:
    """``at``/``final`` for actions that move fields linearly from the start state to ``params[field]``."""

    def at(s: ObjectState, p: Params, elapsed: float, length: float) -> ObjectState:
        u = elapsed / length
        start = p.get("from", {})
        return replace(s, **{f: _lerp(start.get(f, getattr(s, f)), p[f], u) for f in targets})

    def final(s: ObjectState, p: Params) -> ObjectState:
        return replace(s, **{f: p[f] for f in targets})

    return at, final


def _random_inside(size: float, rng: np.random.Generator, frame: Frame) -> tuple[float, float]:
    r = size / 2 + 1
    return float(rng.uniform(r, frame.width - r)), float(rng.uniform(r, frame.height - r))


# -- planners: parameters for an action starting in state s, or None when it cannot happen there ---------------
def _plan_grow(s: ObjectState, shape: str, rng: np.random.Generator, f: Frame) -> Params | None:
    size = s.size * float(rng.uniform(1.6, 2.0))
    if not s.present or size > MAX_SIZE_FRAC * f.side or not _fits(s.x, s.y, size, f):
        return None
    return {"size": size}


def _plan_shrink(s: ObjectState, shape: str, rng: np.random.Generator, f: Frame) -> Params | None:
    size = s.size / float(rng.uniform(1.6, 2.0))
    return {"size": size} if s.present and size >= MIN_SIZE_FRAC * f.side else None


def _plan_appear(s: ObjectState, shape: str, rng: np.random.Generator, f: Frame) -> Params | None:
    if s.present:
        return None
    x, y = _random_inside(s.size, rng, f)
    return {"alpha": 1.0, "from": {"alpha": 0.0}, "x": x, "y": y}


def _plan_disappear(s: ObjectState, shape: str, rng: np.random.Generator, f: Frame) -> Params | None:
    return {"alpha": 0.0} if s.present else None


def _offscreen(x: float, y: float, size: float, side: str, f: Frame) -> tuple[float, float]:
    r = size / 2 + 2
    return {"left": (-r, y), "right": (f.width + r, y), "top": (x, -r), "bottom": (x, f.height + r)}[side]


def _plan_enter(s: ObjectState, shape: str, rng: np.random.Generator, f: Frame) -> Params | None:
    if s.present:
        return None
    x, y = _random_inside(s.size, rng, f)
    side = str(rng.choice(["left", "right", "top", "bottom"]))
    x0, y0 = _offscreen(x, y, s.size, side, f)
    return {"x": x, "y": y, "alpha": 1.0, "side": side, "from": {"x": x0, "y": y0, "alpha": 1.0}}


def _plan_leave(s: ObjectState, shape: str, rng: np.random.Generator, f: Frame) -> Params | None:
    if not s.present:
        return None
    # Leave through the nearest side, so the exit path stays short and clearly visible.
    gaps = {"left": s.x, "right": f.width - s.x, "top": s.y, "bottom": f.height - s.y}
    side = min(gaps, key=gaps.__getitem__)
    x1, y1 = _offscreen(s.x, s.y, s.size, side, f)
    return {"x": x1, "y": y1, "side": side}


def _leave_final(s: ObjectState, p: Params) -> ObjectState:
    return replace(s, x=p["x"], y=p["y"], alpha=0.0)


def _plan_shift(axis: str, sign: int) -> Callable:
    def plan(s: ObjectState, shape: str, rng: np.random.Generator, f: Frame) -> Params | None:
        if not s.present:
            return None
        extent = f.width if axis == "x" else f.height
        dist = float(rng.uniform(0.25, 0.45)) * extent
        target = getattr(s, axis) + sign * dist
        half = s.size / 2
        return {axis: target} if half <= target <= extent - half else None

    return plan


def _plan_open(s: ObjectState, shape: str, rng: np.random.Generator, f: Frame) -> Params | None:
    return {"mouth": float(rng.uniform(80.0, 110.0))} if s.present and s.mouth == 0 else None


def _plan_close(s: ObjectState, shape: str, rng: np.random.Generator, f: Frame) -> Params | None:
    return {"mouth": 0.0} if s.present and s.mouth > 0 else None


def _plan_spin(s: ObjectState, shape: str, rng: np.random.Generator, f: Frame) -> Params | None:
    if not s.present or (SYMMETRY[shape] == 0 and s.mouth == 0):
        return None  # a plain circle looks the same at every angle
    while True:  # a speed whose half-second step is not a symmetry of the shape (else sampled frames match)
        speed = float(rng.uniform(100.0, 150.0)) * float(rng.choice([-1.0, 1.0]))
        sym = SYMMETRY[shape] if s.mouth == 0 else 360.0
        step = abs(speed * 0.5) % sym
        if min(step, sym - step) > 20.0:
            return {"speed": speed}


def _spin_at(s: ObjectState, p: Params, elapsed: float, length: float) -> ObjectState:
    return replace(s, angle=s.angle + p["speed"] * elapsed)


def _spin_final(s: ObjectState, p: Params) -> ObjectState:
    return replace(s, angle=(s.angle + p["speed"] * p["length"]) % 360.0)


def _plan_bounce(s: ObjectState, shape: str, rng: np.random.Generator, f: Frame) -> Params | None:
    height = 0.18 * f.height
    return {"height": height} if s.present and s.y - s.size / 2 - height >= 0 else None


def _bounce_at(s: ObjectState, p: Params, elapsed: float, length: float) -> ObjectState:
    return replace(s, y=s.y - p["height"] * abs(math.sin(math.pi * elapsed / BOUNCE_PERIOD)))


def _plan_shake(s: ObjectState, shape: str, rng: np.random.Generator, f: Frame) -> Params | None:
    return {"amplitude": 0.07 * f.width} if s.present else None


def _shake_at(s: ObjectState, p: Params, elapsed: float, length: float) -> ObjectState:
    return replace(s, x=s.x + p["amplitude"] * math.sin(2 * math.pi * elapsed / SHAKE_PERIOD))


def _plan_blink(s: ObjectState, shape: str, rng: np.random.Generator, f: Frame) -> Params | None:
    return {} if s.present else None


def _blink_at(s: ObjectState, p: Params, elapsed: float, length: float) -> ObjectState:
    return replace(s, alpha=s.alpha if (elapsed % BLINK_PERIOD) < BLINK_PERIOD / 2 else 0.0)


def _plan_pulse(s: ObjectState, shape: str, rng: np.random.Generator, f: Frame) -> Params | None:
    peak = s.size * 1.4
    return {"peak": peak} if s.present and _fits(s.x, s.y, peak, f) else None


def _pulse_at(s: ObjectState, p: Params, elapsed: float, length: float) -> ObjectState:
    return replace(s, size=_lerp(s.size, p["peak"], math.sin(math.pi * elapsed / PULSE_PERIOD) ** 2))


def _unchanged(s: ObjectState, p: Params) -> ObjectState:
    return s


def _build() -> dict[str, Action]:
    size_at, size_final = _transition(size="size")
    alpha_at, alpha_final = _transition(alpha="alpha")
    appear_at, appear_final = _transition(alpha="alpha", x="x", y="y")
    enter_at, enter_final = _transition(x="x", y="y", alpha="alpha")
    leave_at, _ = _transition(x="x", y="y")
    x_at, x_final = _transition(x="x")
    y_at, y_final = _transition(y="y")
    mouth_at, mouth_final = _transition(mouth="mouth")

    def appear_at_fixed(s: ObjectState, p: Params, elapsed: float, length: float) -> ObjectState:
        return appear_at(replace(s, x=p["x"], y=p["y"]), p, elapsed, length)

    actions = [
        Action("grow", "grow", "shrink", _plan_grow, size_at, size_final),
        Action("shrink", "shrink", "grow", _plan_shrink, size_at, size_final),
        Action("appear", "appear", "disappear", _plan_appear, appear_at_fixed, appear_final),
        Action("disappear", "disappear", "appear", _plan_disappear, alpha_at, alpha_final),
        Action("enter", "enter", "leave", _plan_enter, enter_at, enter_final),
        Action("leave", "leave", "enter", _plan_leave, leave_at, _leave_final),
        Action("move_left", "move", "move_right", _plan_shift("x", -1), x_at, x_final),
        Action("move_right", "move", "move_left", _plan_shift("x", +1), x_at, x_final),
        Action("rise", "rise", "fall", _plan_shift("y", -1), y_at, y_final),
        Action("fall", "fall", "rise", _plan_shift("y", +1), y_at, y_final),
        Action("open", "open", "close", _plan_open, mouth_at, mouth_final),
        Action("close", "close", "open", _plan_close, mouth_at, mouth_final),
        Action("spin", "spin", None, _plan_spin, _spin_at, _spin_final),
        Action("bounce", "bounce", None, _plan_bounce, _bounce_at, _unchanged),
        Action("shake", "shake", None, _plan_shake, _shake_at, _unchanged),
        Action("blink", "blink", None, _plan_blink, _blink_at, _unchanged),
        Action("pulse", "pulse", None, _plan_pulse, _pulse_at, _unchanged),
    ]
    return {a.name: a for a in actions}


ACTIONS: dict[str, Action] = _build()
PAIRS: tuple[tuple[str, str], ...] = tuple(
    (a.name, a.opposite) for a in ACTIONS.values() if a.opposite and a.name < a.opposite
)

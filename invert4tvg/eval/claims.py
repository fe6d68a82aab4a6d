"""The paper's three claims, read off the paired-bootstrap differences of a comparison (``differences.json``).

Invert4TVG (Figure 1 right, Tables 1-2): (a) GRPO on the IoU reward alone (Time-R1) erodes action understanding
(VC / AR / VD) relative to the model it starts from; (b) adding the inversion tasks keeps it; (c) and grounds better
than Time-R1. Each claim is a set of differences "setting minus reference" with their 95% CIs over the test queries
pooled over seeds. A claim is judged on its first setting (Time-R1 in (a), Invert4TVG in (b) and (c); the Only-X rows
of (c) are reported beside it): *supported* when every interval lies on the claimed side of 0, *contradicted* when
one lies on the other side, *not resolved* otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ACTION_KEYS = ("VC", "AR", "VD")
GROUNDING = ("R1@0.7", "mIoU")


@dataclass(frozen=True)
class Claim:
    name: str
    statement: str
    reference: str
    settings: tuple[str, ...]
    keys: tuple[str, ...]
    sign: int  # +1: the settings are claimed higher than the reference, -1: lower, 0: no change


CLAIMS = (
    Claim("a", "IoU-only GRPO (Time-R1) lowers VC / AR / VD", "warm_start", ("time_r1",), ACTION_KEYS, -1),
    Claim("b", "Invert4TVG keeps VC / AR / VD", "warm_start", ("invert4tvg",), ACTION_KEYS, 0),
    Claim(
        "c",
        "Invert4TVG (and each Only-X) grounds better than Time-R1",
        "time_r1",
        ("invert4tvg", "only_vc", "only_ar", "only_vd"),
        GROUNDING,
        +1,
    ),
)


def _verdict(claim: Claim, rows: list[dict[str, Any]]) -> str:
    rows = [r for r in rows if r["setting"] == claim.settings[0]]  # the others are reported, not judged
    if not rows:
        return "not measured"
    if claim.sign == 0:  # kept: no interval entirely below 0
        return "contradicted" if any(r["high"] < 0 for r in rows) else "supported"
    if all((r["low"] > 0) if claim.sign > 0 else (r["high"] < 0) for r in rows):
        return "supported"
    if any((r["high"] < 0) if claim.sign > 0 else (r["low"] > 0) for r in rows):
        return "contradicted"
    return "not resolved"


def paper_claims(differences: dict[str, dict[str, dict[str, dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Each claim with its rows (setting, metric, mean difference and CI in points, queries) and a verdict."""
    out = []
    for claim in CLAIMS:
        by_setting = differences.get(claim.reference, {})
        rows = [
            {"setting": s, "metric": k, **{f: by_setting[s][k][f] for f in ("mean", "low", "high", "n")}}
            for s in claim.settings
            for k in claim.keys
            if k in by_setting.get(s, {})
        ]
        out.append(
            {
                "claim": claim.name,
                "statement": claim.statement,
                "reference": claim.reference,
                "rows": rows,
                "verdict": _verdict(claim, rows),
            }
        )
    return out


def claims_section(claims: list[dict[str, Any]]) -> list[str]:
    """Markdown: one table per claim (difference in points, 95% paired-bootstrap CI, test queries)."""
    lines = ["## The paper's three claims", ""]
    lines += [
        "Differences in percentage points, setting minus reference, over the test queries pooled over seeds, with "
        "95% paired-bootstrap CIs (`*`: the interval excludes 0).",
        "",
    ]
    for claim in claims:
        lines += [
            f"**({claim['claim']}) {claim['statement']}** (vs `{claim['reference']}`): {claim['verdict']}.",
            "",
        ]
        lines += ["| setting | metric | difference | 95% CI | queries |", "|---|---|---:|---|---:|"]
        for r in claim["rows"]:
            mark = " *" if r["low"] > 0 or r["high"] < 0 else ""
            lines.append(
                f"| {r['setting']} | {r['metric']} | {r['mean']:+.1f}{mark} | "
                f"[{r['low']:+.1f}, {r['high']:+.1f}] | {r['n']} |"
            )
        lines.append("")
    return lines

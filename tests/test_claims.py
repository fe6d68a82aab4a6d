"""The paper's three claims read off a comparison's paired differences: the verdict follows the CIs."""

from __future__ import annotations

from invert4tvg.eval.claims import claims_section, paper_claims


def _diff(mean: float, low: float, high: float, n: int = 460) -> dict:
    return {"key": "", "mean": mean, "low": low, "high": high, "n": n, "level": 0.95}


def test_verdicts_follow_the_intervals():
    actions = {"VC": _diff(-10, -14, -6), "AR": _diff(-8, -12, -4), "VD": _diff(-5, -9, -1)}
    kept = {"VC": _diff(-1, -4, 2), "AR": _diff(0, -3, 3), "VD": _diff(1, -2, 4)}
    differences = {
        "warm_start": {"time_r1": actions, "invert4tvg": kept},
        "time_r1": {
            "invert4tvg": {"R1@0.7": _diff(3, 1, 5), "mIoU": _diff(2, 0.5, 3.5)},
            "only_vc": {"R1@0.7": _diff(1, -2, 4), "mIoU": _diff(0, -1, 1)},
        },
    }
    claims = {c["claim"]: c for c in paper_claims(differences)}
    assert claims["a"]["verdict"] == "supported"  # every action metric fell, every CI below 0
    assert claims["b"]["verdict"] == "supported"  # no CI entirely below 0
    assert claims["c"]["verdict"] == "supported"  # judged on Invert4TVG; Only-VC (not resolved) is reported beside
    assert [r["setting"] for r in claims["c"]["rows"]] == ["invert4tvg", "invert4tvg", "only_vc", "only_vc"]

    differences["warm_start"]["invert4tvg"]["VC"] = _diff(-6, -9, -3)
    differences["time_r1"]["only_vc"]["mIoU"] = _diff(-3, -5, -1)
    claims = {c["claim"]: c for c in paper_claims(differences)}
    assert claims["b"]["verdict"] == "contradicted"
    assert claims["c"]["verdict"] == "supported"  # an Only-X row does not decide (c)
    differences["time_r1"]["invert4tvg"]["R1@0.7"] = _diff(1, -1, 3)
    assert paper_claims(differences)[2]["verdict"] == "not resolved"
    differences["time_r1"]["invert4tvg"]["mIoU"] = _diff(-2, -3, -1)
    assert paper_claims(differences)[2]["verdict"] == "contradicted"
    text = "\n".join(claims_section(list(claims.values())))
    assert "| invert4tvg | VC | -6.0 * | [-9.0, -3.0] | 460 |" in text


def test_a_claim_without_its_settings_is_not_measured():
    claims = paper_claims({"warm_start": {}})
    assert {c["verdict"] for c in claims} == {"not measured"}

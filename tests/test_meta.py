"""The meta-evaluation (docs/protocol.md#meta-evaluation): the consistency measures on hand-made arrays with known
answers, the weight noise and its seeding, the calibration, and ``meta_evaluate`` end to end on the bundled CE model
with a tiny config (8 images, two cheap methods and metrics, 2 draws per test): files, validation against tampering,
resume, reuse, and independence from the other selected metrics. Agreement with MetaQuantus itself is
tests/test_meta_reference.py; the leaderboard's use of meta results is tests/test_meta_leaderboard.py.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import images, linear_model
from torch import nn

from sclzoo.errors import ConfigError, ResultError
from sclzoo.evaluator.consistency import DrawScores, consistency, iac_p_value, iec_reactivity, iec_resilience
from sclzoo.evaluator.meta import (
    MAX_CHANGED_MINOR,
    MetaConfig,
    calibrate,
    chance_bound,
    draw_units,
    meta_cost,
    meta_evaluate,
    perturbed_copy,
)
from sclzoo.evaluator.meta_results import draws_path, read_draws, validate_meta
from sclzoo.evaluator.results import file_kind, validate_file
from sclzoo.evaluator.seeding import sample_generator

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"n_samples": 8, "methods": ["saliency", "input_x_gradient"], "metrics": ["sparseness", "complexity"],
        "iterations": 1, "perturbations": 2, "device": "cpu", "progress": False}


def _draw(preds: np.ndarray, **scores: np.ndarray) -> DrawScores:
    return DrawScores(np.asarray(preds), {k: np.asarray(v, dtype=float) for k, v in scores.items()})


# ------------------------------------------------------------------------------------- consistency definitions
# Arrays have more than 50 samples wherever differences are zero or tied: below that scipy's signed-rank test takes
# seconds to find an exact p-value with ties.
def test_a_model_blind_metric_scores_exactly_one_half() -> None:
    """Scores that never move: IAC_NR = 1 (no difference: p = 1), IAC_AR = 0, IEC_NR = 1, IEC_AR = 0 → MC 0.5."""
    q = {"a": np.arange(60.0), "b": np.arange(60.0)[::-1].copy()}
    p0 = np.zeros(60, dtype=int)
    runs = {"minor": [_draw(p0, **q)] * 2, "disruptive": [_draw(np.ones(60, dtype=int), **q)] * 2}
    r = consistency(q, p0, runs, higher_is_better=True, iterations=2)
    assert (r["iac_nr"], r["iac_ar"], r["iec_nr"], r["iec_ar"]) == (1.0, 0.0, 1.0, 0.0)
    assert r["mc"] == 0.5 and r["mc_std"] == 0.0 and r["resilience"] == 1.0 and r["reactivity"] == 0.0


def test_an_ideal_metric_and_the_direction_of_reactivity() -> None:
    """Minor noise keeps the scores, disruptive noise makes every one worse: IEC_AR = 1 in the metric's own
    direction and 0 in the other; IAC_AR = 1 − p, and p is the exact two-sided signed-rank p-value 2 / 2^n when n
    distinct differences all have one sign."""
    n = 60
    q = {"a": np.linspace(1, 2, n), "b": np.linspace(3, 4, n)}
    p0 = np.arange(n) % 3
    lower = {k: v - 1.0 - np.linspace(0, 0.5, n) for k, v in q.items()}
    runs = {"minor": [_draw(p0, **q)], "disruptive": [_draw(p0 + 1, **lower)]}
    up = consistency(q, p0, runs, higher_is_better=True, iterations=1)
    assert up["iec_ar"] == 1.0 and up["iec_nr"] == 1.0 and up["iac_nr"] == 1.0
    assert 1 - 1e-9 < up["iac_ar"] < 1
    small = np.arange(12.0)
    assert iac_p_value(small, small - 1 - small / 100, np.ones(12, dtype=bool)) == (2 / 2**12, 12, 0)
    down = consistency(q, p0, runs, higher_is_better=False, iterations=1)
    assert down["iec_ar"] == 0.0 and down["mc"] < up["mc"]


def test_iec_resilience_compares_the_sorted_order_position_by_position() -> None:
    q = np.array([[1.0, 5.0], [2.0, 4.0]])  # sample 0: a < b; sample 1: b < a
    swapped = q[::-1].copy()
    keep = np.array([True, True])
    assert iec_resilience(q, q, keep) == (1.0, 0)
    assert iec_resilience(q, swapped, keep) == (0.0, 0)
    assert iec_resilience(q, swapped, np.array([True, False])) == (0.0, 0)
    three = np.array([[1.0], [2.0], [3.0]])
    assert iec_resilience(three, np.array([[1.0], [3.0], [2.0]]), np.array([True]))[0] == pytest.approx(1 / 3)


def test_nan_scores_are_left_out_and_counted() -> None:
    q = np.array([1.0, 2.0, np.nan, 4.0, 5.0, 6.0])
    q_hat = q + np.array([0.5, -0.1, 0.2, np.nan, 0.3, 0.4])
    p, n_pairs, n_nan = iac_p_value(q, q_hat, np.ones(6, dtype=bool))
    assert (n_pairs, n_nan) == (4, 2) and 0 < p <= 1
    u, n_nan_iec = iec_reactivity(q[None], q_hat[None], np.ones(6, dtype=bool), higher_is_better=True)
    assert n_nan_iec == 2 and u == 0.25  # of the 4 finite entries only the −0.1 got worse


def test_a_draw_that_keeps_no_sample_is_undefined_and_counted() -> None:
    q = {"a": np.arange(60.0), "b": np.arange(60.0) * 2}
    p0 = np.zeros(60, dtype=int)
    moved = {k: v + 1 for k, v in q.items()}
    runs = {"minor": [_draw(p0, **q), _draw(p0 + 1, **q)],  # the second minor draw changes every prediction
            "disruptive": [_draw(p0 + 1, **moved), _draw(p0 + 1, **moved)]}
    r = consistency(q, p0, runs, higher_is_better=False, iterations=1)
    assert r["undefined"] == {"iac_nr": 2, "iac_ar": 0, "iec_nr": 1, "iec_ar": 0}
    assert r["draws"]["minor"][1] == {"iac": {"a": None, "b": None}, "iec": None, "n_kept": 0, "n_nan_pairs": 0,
                                      "n_nan_iec": 0}
    assert r["iac_nr"] == 1.0 and r["iec_nr"] == 1.0  # from the defined draw alone
    none = {"minor": [_draw(p0 + 1, **q)], "disruptive": [_draw(p0 + 1, **moved)]}
    assert consistency(q, p0, none, higher_is_better=False, iterations=1)["mc"] is None


def test_draws_must_form_whole_iterations() -> None:
    q = {"a": np.arange(4.0), "b": np.arange(4.0) + 1}
    p0 = np.zeros(4, dtype=int)
    with pytest.raises(ValueError, match="3 minor draws do not form 2 iterations"):
        consistency(q, p0, {"minor": [_draw(p0, **q)] * 3, "disruptive": [_draw(p0, **q)] * 4}, True, 2)


# ------------------------------------------------------------------------------------------------ weight noise
def test_perturbed_copies_are_seeded_and_leave_the_model_and_its_buffers_alone() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(200, 300), nn.BatchNorm1d(300)).eval()
    net[1].running_mean.fill_(0.5)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    a = perturbed_copy(net, 0.1, sample_generator(0, "meta/minor/sparseness", 3))
    b = perturbed_copy(net, 0.1, sample_generator(0, "meta/minor/sparseness", 3))
    c = perturbed_copy(net, 0.1, sample_generator(0, "meta/minor/complexity", 3))
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not torch.equal(a[0].weight, c[0].weight)
    assert torch.equal(a[1].running_mean, net[1].running_mean)  # buffers are not parameters: unchanged
    ratio = (a[0].weight / net[0].weight).detach().flatten()
    assert abs(float(ratio.mean()) - 1) < 0.005 and abs(float(ratio.std()) - 0.1) < 0.005  # N(1, 0.1²), 60k draws


def test_draw_units_follow_shared_draws() -> None:
    assert draw_units(["sparseness", "max_sensitivity", "avg_sensitivity"]) == {
        "sparseness": ["sparseness"], "max_sensitivity": ["max_sensitivity", "avg_sensitivity"]}
    assert draw_units(["avg_sensitivity"]) == {"max_sensitivity": ["avg_sensitivity"]}


# ------------------------------------------------------------------------------------------------- calibration
def test_calibration_meets_both_criteria_and_records_its_grid() -> None:
    net = linear_model(torch.randn(10, 64, generator=torch.Generator().manual_seed(1)))
    x = images(64, h=8, seed=2) - 0.5  # centred, so that the 10 classes all get predicted
    preds = net(x).argmax(1)
    assert len(set(preds.tolist())) >= 8
    cal = calibrate(net, x, preds, 10, 0, device=torch.device("cpu"), batch_size=64)
    rows = {r["sigma"]: r for r in cal.rows}
    assert max(rows[cal.sigma_minor]["changed"]) <= MAX_CHANGED_MINOR
    assert rows[cal.sigma_disruptive]["agreement_mean"] <= chance_bound(10, 64) < 0.2
    assert cal.sigma_minor < cal.sigma_disruptive and not cal.minor_given
    larger = [s for s in rows if s > cal.sigma_minor]
    assert larger and max(rows[larger[0]]["changed"]) > MAX_CHANGED_MINOR  # the largest σ that passes
    given = calibrate(net, x, preds, 10, 0, device=torch.device("cpu"), batch_size=64, sigma_minor=0.01,
                      sigma_disruptive=3.0)
    assert (given.sigma_minor, given.sigma_disruptive, given.rows) == (0.01, 3.0, [])


def test_a_model_that_flips_at_any_noise_cannot_be_calibrated() -> None:
    net = nn.Linear(4, 2, bias=False).eval()
    with torch.no_grad():  # two logits equal up to 1e-9: any noise flips some predictions
        net.weight.copy_(torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0 + 1e-6]]))
    x = torch.rand(40, 4)
    with pytest.raises(ConfigError, match="no minor perturbation can be calibrated; pass --sigma-minor"):
        calibrate(net, x, net(x).argmax(1), 2, 0, device=torch.device("cpu"), batch_size=64)


def test_meta_config_validation() -> None:
    with pytest.raises(ConfigError, match="at least 2 noise draws"):
        MetaConfig(iterations=1, perturbations=1)
    with pytest.raises(ConfigError, match="--sigma-disruptive 0.1 must be larger than --sigma-minor 0.2"):
        MetaConfig(sigma_minor=0.2, sigma_disruptive=0.1)
    with pytest.raises(ConfigError, match="--sigma-minor must be a positive number"):
        MetaConfig(sigma_minor=-1.0)


def test_cost_multiplies_the_plain_evaluation() -> None:
    from sclzoo.evaluator.config import build_config

    cfg = build_config(None, "standard")
    meta = MetaConfig()
    c = meta_cost(cfg, meta)
    units = {u["unit"]: u for u in c["meta"]["units"]}
    assert set(units) == {m for m in cfg.metrics if m != "avg_sensitivity"}  # it shares max_sensitivity's draws
    per_draw = sum(u["forwards_per_draw"] for u in units.values())
    assert c["meta"]["forwards"] == (c["plain"]["forwards"] + c["meta"]["calibration_forwards_at_most"]
                                     + 2 * meta.draws * per_draw)
    assert c["ratio"]["explanations"] > 2 * meta.draws and c["ratio"]["forwards"] > 2 * meta.draws


# ------------------------------------------------------------------------------------------- end to end, files
@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, bundled: dict[str, Path]) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("meta")
    res = meta_evaluate(str(bundled["ce"]), out=out, **TINY)
    assert res.path is not None and not res.reused
    return {"out": out, "res": res, "model": str(bundled["ce"])}


def test_meta_result_files_validate_and_are_reused(tiny: dict[str, Any]) -> None:
    res = tiny["res"]
    assert res.path.name == f"{res.data['meta_hash']}.meta.json" and draws_path(res.path).is_file()
    assert validate_meta(res.path) == [] and validate_file(res.path) == ("meta", [])
    assert file_kind(res.data) == "meta"
    doc = res.data
    assert set(doc["metrics"]) == {"sparseness", "complexity"}
    for m in doc["metrics"].values():
        assert m["mc"] == pytest.approx(np.mean([m["iac_nr"], m["iac_ar"], m["iec_nr"], m["iec_ar"]]))
        assert len(m["draws"]["minor"]) == len(m["draws"]["disruptive"]) == 2
    rows = {r["sigma"]: r for r in doc["calibration"]["rows"]}
    assert max(rows[doc["tests"]["minor"]["sigma"]]["changed"]) <= MAX_CHANGED_MINOR
    assert doc["tests"]["disruptive"]["changed_fraction"]["mean"] > 0.5
    again = meta_evaluate(tiny["model"], out=tiny["out"], **TINY)
    assert again.reused and again.data == doc


def _rewrite(path: Path, change: Any) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def test_tampered_meta_results_are_caught(tiny: dict[str, Any], tmp_path: Path) -> None:
    src = tiny["res"].path

    def copy() -> Path:
        dst = tmp_path / src.name
        dst.write_bytes(src.read_bytes())
        draws_path(dst).write_bytes(draws_path(src).read_bytes())
        return dst

    f = copy()
    _rewrite(f, lambda d: d["metrics"]["sparseness"].update(iac_nr=0.99, mc=None))
    assert any("metrics/sparseness/mc" in p for p in validate_meta(f))
    f = copy()

    def both(d: dict[str, Any]) -> None:  # consistent with itself, not with the stored scores
        m = d["metrics"]["complexity"]
        m["iec_nr"] = 1.0 - m["iec_nr"] / 2
        m["mc"] = float(np.mean([m["iac_nr"], m["iac_ar"], m["iec_nr"], m["iec_ar"]]))

    _rewrite(f, both)
    assert any("recomputed from the draws file" in p for p in validate_meta(f))
    f = copy()
    _rewrite(f, lambda d: d["meta_config"].update(iterations=5))
    assert any("is not the hash of the recorded" in p for p in validate_meta(f))
    f = copy()
    draws = read_draws(f)
    draws["draws"]["minor"]["sparseness"][0]["scores"]["saliency"]["sparseness"][0] += 0.25
    draws_path(f).write_bytes(gzip.compress(json.dumps(draws).encode()))
    assert any("recomputed from the draws file" in p for p in validate_meta(f))
    f = copy()
    _rewrite(f, lambda d: d["metrics"]["sparseness"].update(family="continuity"))
    assert any("contradict metric 'sparseness'" in p for p in validate_meta(f))
    renamed = tmp_path / ("0" * 64 + ".meta.json")
    copy().rename(renamed)
    draws_path(tmp_path / src.name).rename(draws_path(renamed))
    assert any("is not its meta_hash" in p for p in validate_meta(renamed))
    draws_path(renamed).unlink()
    with pytest.raises(ResultError, match="draws file .* is missing"):
        validate_meta(renamed)


def test_an_interrupted_run_resumes_to_the_same_result(tiny: dict[str, Any], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import sclzoo.evaluator.meta as meta_mod

    real = meta_mod.run_evaluation
    calls = [0]

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(meta_mod, "run_evaluation", flaky)
    with pytest.raises(KeyboardInterrupt):
        meta_evaluate(tiny["model"], out=tmp_path, **TINY)
    partial = list(tmp_path.rglob("*.meta.partial"))
    assert len(partial) == 1 and len(list(partial[0].glob("*.json.gz"))) == 5  # unperturbed, calibration, 3 draws
    with pytest.raises(ResultError, match="pass --resume"):
        meta_evaluate(tiny["model"], out=tmp_path, **TINY)
    monkeypatch.setattr(meta_mod, "run_evaluation", real)
    calls[0] = 0
    done = meta_evaluate(tiny["model"], out=tmp_path, resume=True, **TINY)
    assert not list(tmp_path.rglob("*.meta.partial"))
    ref = tiny["res"].data
    assert done.data["metrics"] == ref["metrics"] and done.data["calibration"] == ref["calibration"]
    assert read_draws(done.path) == read_draws(tiny["res"].path)


def test_a_metric_scores_the_same_whichever_metrics_run_beside_it(tiny: dict[str, Any]) -> None:
    alone = meta_evaluate(tiny["model"], out=None, **{**TINY, "metrics": ["sparseness"]})
    both = tiny["res"].data["metrics"]["sparseness"]
    assert {k: alone.data["metrics"]["sparseness"][k] for k in both} == both


def test_one_method_is_refused(bundled: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="needs at least two; got \\['saliency'\\]"):
        meta_evaluate(str(bundled["ce"]), out=None, **{**TINY, "methods": ["saliency"]})


def test_help_loads_no_torch() -> None:
    code = ("import sys\nfrom sclzoo.evaluator.cli import main\ntry:\n    main(['meta-evaluate', '--help'])\n"
            "except SystemExit:\n    pass\nassert 'torch' not in sys.modules, 'torch imported'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "--sigma-minor" in out.stdout and "--perturbations" in out.stdout


def test_command_line_runs_reuses_and_prices(tiny: dict[str, Any], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from helpers import run_main

    args = ["meta-evaluate", "--model", tiny["model"], "--n-samples", "8", "--methods", "saliency,input_x_gradient",
            "--metrics", "sparseness,complexity", "--iterations", "1", "--perturbations", "2", "--device", "cpu",
            "--quiet"]
    code, out, err = run_main([*args, "--out", str(tiny["out"])], capsys)  # the fixture's run: reused
    assert code == 0, err
    assert "meta result exists" in out and "IAC_NR" in out and "sparseness" in out
    assert f"minor σ = {tiny['res'].data['tests']['minor']['sigma']:g} (calibrated" in out
    code, out, err = run_main([*args, "--out", str(tmp_path), "--dry-run"], capsys)
    assert code == 0, err
    plan = json.loads(out)
    assert plan["meta_hash"] == tiny["res"].data["meta_hash"] and not plan["result"]["exists"]
    assert plan["cost"]["ratio"]["explanations"] > 4 and plan["estimate"]["seconds"] >= plan["estimate"]["plain_seconds"]
    code, out, err = run_main([*args[:-1], "--methods", "saliency", "--out", str(tmp_path)], capsys)
    assert code == 1 and "needs at least two" in err
    code, out, err = run_main(["validate", str(tiny["res"].path)], capsys)
    assert code == 0 and out.startswith("ok")

"""Evaluating against ground truth: the mask choice through config, plan, runner, result and leaderboard
(docs/protocol.md#localisation). The bundled models take 28 x 28 inputs, so mnist5k-clutter's 56 x 56 images and
their masks reach them resized, which these tests exercise too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import run_main

from sclzoo.errors import ConfigError
from sclzoo.evaluator.api import plan
from sclzoo.evaluator.attributions import attribute
from sclzoo.evaluator.config import EvalConfig, build_config
from sclzoo.evaluator.metrics import MetricContext, compute
from sclzoo.evaluator.results import validate_result

LOCALISATION = "pointing_game,relevance_mass_accuracy,relevance_rank_accuracy,localisation_auc"


def _resolved(mask: str | None = None) -> dict:
    r = {"dataset": "mnist5k", "methods": {"saliency": {}}, "metrics": {"sparseness": {"version": 1}},
         "split": "test", "indices_sha256": "0" * 64}
    return r if mask is None else {**r, "mask": mask}


def test_the_mask_enters_the_canonical_config_only_when_used() -> None:
    cfg = EvalConfig(methods=("saliency",), metrics=("sparseness",))
    plain = cfg.canonical(_resolved())
    assert "mask" not in plain  # configs without ground truth keep their keys, so their hashes
    assert cfg.replace(mask="ink").canonical(_resolved()) == plain  # the field alone records nothing
    box, ink = cfg.canonical(_resolved("box")), cfg.canonical(_resolved("ink"))
    assert box["mask"] == "box"
    assert len({EvalConfig.hash_of(c) for c in (plain, box, ink)}) == 3
    with pytest.raises(ConfigError, match="mask must be a string"):
        EvalConfig.from_dict({"mask": 3})
    with pytest.raises(ConfigError, match="mask must be the name of a ground-truth mask kind"):
        EvalConfig(mask="")
    assert build_config(None, "quick", None, mask="ink").mask == "ink"


def _cfg(**kw) -> EvalConfig:
    return build_config(None, None, None, **{"n_samples": 6, "methods": ["saliency"], "batch_size": 4,
                                             "device": "cpu", **kw})


def test_plan_refuses_masks_that_cannot_be_used(bundled: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match=r"pointing_game compare maps with ground-truth masks, but dataset "
                                          r"'mnist5k' has none.*--dataset mnist5k-clutter"):
        plan(str(bundled["ce"]), _cfg(metrics=["pointing_game", "sparseness"]))
    with pytest.raises(ConfigError, match=r"--mask ink is given but no selected metric uses a ground-truth mask"):
        plan(str(bundled["ce"]), _cfg(metrics=["sparseness"], dataset="mnist5k-clutter", mask="ink"))
    with pytest.raises(ConfigError, match=r"no mask 'edges'; pass --mask box or ink"):
        plan(str(bundled["ce"]), _cfg(metrics=["pointing_game"], dataset="mnist5k-clutter", mask="edges"))


def test_plan_selects_and_records_the_mask(bundled: dict[str, Path]) -> None:
    box = plan(str(bundled["ce"]), _cfg(metrics=["pointing_game"], dataset="mnist5k-clutter"))
    ink = plan(str(bundled["ce"]), _cfg(metrics=["pointing_game"], dataset="mnist5k-clutter", mask="ink"))
    none = plan(str(bundled["ce"]), _cfg(metrics=["sparseness"], dataset="mnist5k-clutter"))
    assert box.canonical["mask"] == "box" and ink.canonical["mask"] == "ink"  # box is the default
    assert "mask" not in none.canonical and none.masks is None and "mask" not in none.data.record
    assert len({box.config_hash, ink.config_hash, none.config_hash}) == 3
    for p, kind in ((box, "box"), (ink, "ink")):
        assert p.masks is not None and p.masks.shape == (6, 28, 28) and p.images.shape == (6, 1, 28, 28)
        assert p.data.record["mask"] == kind and len(p.data.record["masks_sha256"]) == 64
        assert torch.equal(p.masks, p.data.data.ground_truth[kind][:6])  # selection "first": positions 0..5
    assert box.data.record["masks_sha256"] != ink.data.record["masks_sha256"]
    assert bool((ink.masks <= box.masks).all())  # the digit's ink lies in its box, also after resizing


@pytest.mark.integration
def test_evaluate_with_a_mask_end_to_end(bundled: dict[str, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results"
    base = ["evaluate", "--model", str(bundled["ce"]), "--dataset", "mnist5k-clutter", "--n-samples", "8",
            "--methods", "saliency", "--metrics", f"{LOCALISATION},single_deletion", "--batch-size", "4",
            "--out", str(out), "--quiet"]
    code, stdout, err = run_main([*base, "--mask", "ink"], capsys)
    assert code == 0, err
    assert "localisation_auc" in stdout and "localisation" in stdout
    (path,) = sorted(out.rglob("*.json"))
    assert validate_result(path) == []
    doc = json.loads(path.read_text())
    assert doc["config"]["mask"] == "ink" and doc["dataset"]["mask"] == "ink"
    assert {doc["scores"]["saliency"][m]["family"] for m in LOCALISATION.split(",")} == {"localisation"}
    # The runner's scores are the metrics' on the plan's images and masks.
    ep = plan(str(bundled["ce"]), _cfg(metrics=LOCALISATION.split(","), dataset="mnist5k-clutter", mask="ink",
                                  n_samples=8))
    model = ep.loaded.model.eval()
    with torch.no_grad():
        target = model(ep.images).argmax(1)
    ctx = MetricContext(model=model, x=ep.images, target=target, sample_ids=ep.ids, mask=ep.masks,
                        attributions=attribute("saliency", model, ep.images, target, sample_ids=ep.ids))
    for m in LOCALISATION.split(","):
        scores = compute(m, ctx)
        assert doc["scores"]["saliency"][m]["mean"] == pytest.approx(float(scores.nanmean()), abs=1e-9), m
    # Another mask is another config, so another result file; the leaderboard keeps them apart.
    code, _, err = run_main(base, capsys)
    assert code == 0, err
    assert len(sorted(out.rglob("*.json"))) == 2
    code, _, err = run_main(["leaderboard", str(out), "--out", str(tmp_path / "lb")], capsys)
    assert code == 0, err
    board = json.loads((tmp_path / "lb" / "leaderboard.json").read_text())
    assert all(g["families"] == ["faithfulness", "localisation"] for g in board["groups"])
    assert len(board["groups"]) == 2


def test_show_data_draws_images_and_masks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    for out in (first, second):
        code, stdout, err = run_main(["show-data", "mnist5k-clutter", "--n", "4", "--out", str(out)], capsys)
        assert code == 0, err
        assert "4 image(s) of mnist5k-clutter test" in stdout
    assert first.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert first.read_bytes() == second.read_bytes()  # deterministic: a committed figure can be checked
    code, _, err = run_main(["show-data", "digits", "--n", "3", "--out", str(tmp_path / "d.png")], capsys)
    assert code == 0 and (tmp_path / "d.png").is_file()  # a dataset without masks: images only
    code, _, err = run_main(["show-data", "digits", "--out", str(tmp_path / "d.jpg")], capsys)
    assert code == 1 and "is not a .png file name" in err


def test_committed_dataset_figure_is_current(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """docs/img/mnist5k-clutter.png (README) is what `sclzoo show-data mnist5k-clutter --n 16` draws now."""
    from helpers import REPO_ROOT

    out = tmp_path / "fig.png"
    code, _, err = run_main(["show-data", "mnist5k-clutter", "--n", "16", "--out", str(out)], capsys)
    assert code == 0, err
    assert out.read_bytes() == (REPO_ROOT / "docs" / "img" / "mnist5k-clutter.png").read_bytes(), \
        "refresh it: sclzoo show-data mnist5k-clutter --n 16 --out docs/img/mnist5k-clutter.png"

"""Registry-driven leaderboard updates: only (commit sha, config hash) pairs without a result are evaluated."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import TINY_EVAL_TOML, registry_toml, stub_evaluate

from sclzoo.errors import ConfigError, ModelNotFoundError
from sclzoo.evaluator.api import build_config
from sclzoo.evaluator.results import read_maps
from sclzoo.evaluator.update import load_registry, plan_update, run_update

# Tier (tests/conftest.py): leaderboard updates end to end.
pytestmark = pytest.mark.integration


@pytest.fixture
def zoo(tmp_path: Path, bundled: dict[str, Path]) -> dict[str, Path]:
    """Copies of the bundled CE and SupCon repos, a registry listing them (plus one that resolves nowhere) and a
    tiny eval config."""
    models = tmp_path / "zoo" / "models"
    for k in ("ce", "supcon"):
        shutil.copytree(bundled[k], models / bundled[k].name)
    reg = tmp_path / "zoo" / "registry.toml"
    reg.write_text(registry_toml(bundled[k].name for k in ("ce", "supcon")))
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY_EVAL_TOML)
    return {"registry": reg, "config": cfg, "models": models, "results": tmp_path / "results",
            "out": tmp_path / "leaderboard", "ce": models / bundled["ce"].name,
            "supcon": models / bundled["supcon"].name}


def test_second_run_evaluates_nothing_and_a_new_revision_only_itself(zoo: dict[str, Path]) -> None:
    cfg = build_config(None, None, zoo["config"])
    calls: list[str] = []
    kw = {"registry": zoo["registry"], "results_dir": zoo["results"], "out_dir": zoo["out"],
          "evaluate_fn": stub_evaluate(calls), "log": lambda s: None}
    first = run_update(cfg, **kw)
    assert sorted(calls) == ["resnet8_cifar.ce_mnist5k", "resnet8_cifar.supcon_mnist5k"]
    assert [p.status for p in first.planned] == ["todo", "todo"]
    assert len(json.loads((zoo["out"] / "leaderboard.json").read_text())["rows"]) == 2

    calls.clear()
    second = run_update(cfg, **kw)
    assert calls == [] and [p.status for p in second.planned] == ["up-to-date", "up-to-date"]

    # A new revision of the SupCon copy (any new or changed file changes its local commit sha; a changed file
    # listed in files_sha256 would fail verification instead): only it is evaluated.
    (zoo["supcon"] / "NOTES.txt").write_text("a new file in the repo\n")
    third = run_update(cfg, **kw)
    assert calls == ["resnet8_cifar.supcon_mnist5k"]
    assert [p.status for p in third.planned] == ["up-to-date", "todo"]
    board = json.loads((zoo["out"] / "leaderboard.json").read_text())
    assert len(board["rows"]) == 3  # both SupCon commits stay on the board, each with its own row

    # A different evaluation config is a new config hash: everything would be evaluated again.
    calls.clear()
    plan = run_update(cfg.replace(n_samples=5), dry_run=True, **kw)
    assert calls == [] and [p.status for p in plan.planned] == ["todo", "todo"]


def test_unavailable_models_fail_after_the_rest_unless_skipped(zoo: dict[str, Path]) -> None:
    with open(zoo["registry"], "a") as f:
        f.write('[[models]]\nid = "sclzoo/not-bundled-anywhere"\nrevision = "main"\nbundled = "models/missing"\n')
    cfg = build_config(None, None, zoo["config"])
    calls: list[str] = []
    kw = {"registry": zoo["registry"], "results_dir": zoo["results"], "out_dir": zoo["out"],
          "evaluate_fn": stub_evaluate(calls), "log": lambda s: None}
    with pytest.raises(ModelNotFoundError, match=r"1 registry model\(s\) could not be resolved: "
                                                 r"sclzoo/not-bundled-anywhere .*--skip-unavailable"):
        run_update(cfg, **kw)
    assert len(calls) == 2 and (zoo["out"] / "index.html").is_file()  # the others were done first
    report = run_update(cfg, skip_unavailable=True, **kw)
    assert [p.status for p in report.planned] == ["up-to-date", "up-to-date", "unavailable"]


def test_registry_errors_name_the_file_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist; pass --registry"):
        load_registry(tmp_path / "nope.toml")
    bad = tmp_path / "r.toml"
    bad.write_text('[[models]]\nrevision = "main"\n')
    with pytest.raises(ConfigError, match="entry 1 has no `id`"):
        load_registry(bad)


def test_real_update_with_a_tiny_config(zoo: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """One real evaluation (4 images, saliency, two cheap metrics); the predicted hash must be the one evaluate
    writes, and the second run — through the CLI — evaluates nothing."""
    zoo["registry"].write_text(zoo["registry"].read_text().split("\n\n")[0] + "\n")  # the CE entry only
    cfg = build_config(None, None, zoo["config"])
    (planned,) = plan_update(load_registry(zoo["registry"]), zoo["results"], cfg)
    report = run_update(cfg, registry=zoo["registry"], results_dir=zoo["results"], out_dir=zoo["out"],
                        log=lambda s: None)
    assert report.warnings == [] and len(report.evaluated) == 1
    assert planned.result is not None and planned.result.is_file()
    doc = json.loads(planned.result.read_text())
    assert doc["config_hash"] == planned.config_hash and doc["dataset"]["n_evaluated"] == 4
    maps = read_maps(planned.result)
    assert maps is not None and maps["maps"]["saliency"].shape == (4, 28, 28) and maps["images"].shape[0] == 4
    from sclzoo.evaluator.update import main

    with pytest.raises(SystemExit) as e:
        main(["--registry", str(zoo["registry"]), "--config", str(zoo["config"]), "--results", str(zoo["results"]),
              "--out", str(zoo["out"])])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "up-to-date  sclzoo/resnet8_cifar.ce_mnist5k" in out and "evaluated 0 of 1" in out
    assert (zoo["out"] / "img").is_dir() and "gallery" in (zoo["out"] / "index.html").read_text()


def test_a_ground_truth_zoo_model_gets_the_localisation_family_and_others_keep_the_preset() -> None:
    from helpers import REPO_ROOT

    from sclzoo.evaluator.metrics import METRICS
    from sclzoo.evaluator.update import entry_plan

    cfg = build_config(preset="standard")
    localisation = {n for n, s in METRICS.items() if s.needs_mask}
    clutter, h, _ = entry_plan(cfg, REPO_ROOT / "zoo" / "models" / "resnet8_cifar.ce_mnist5k-clutter")
    assert clutter.metrics[:len(cfg.metrics)] == cfg.metrics and set(clutter.metrics) - set(cfg.metrics) == localisation
    mnist, h2, _ = entry_plan(cfg, REPO_ROOT / "zoo" / "models" / "resnet8_cifar.ce_mnist5k")
    assert mnist == cfg and h != h2
    asked = build_config(preset="standard", metrics=("sparseness", "pointing_game"), mask="ink")
    assert entry_plan(asked, REPO_ROOT / "zoo" / "models" / "resnet8_cifar.ce_mnist5k-clutter")[0] == asked

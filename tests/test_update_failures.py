"""`leaderboard-update` with broken registry models and invalid result files: the healthy models
after a broken one are still evaluated and the leaderboard written; the failures are one error at the end
(``skip_unavailable`` goes on with exit 0); ``strict`` refuses to rebuild from a folder with invalid results."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import TINY_EVAL_TOML, registry_toml, stub_evaluate

from sclzoo.errors import ModelLoadError, ResultError
from sclzoo.evaluator.api import build_config
from sclzoo.evaluator.update import run_update

# Tier (tests/conftest.py): leaderboard updates end to end.
pytestmark = pytest.mark.integration


@pytest.fixture
def zoo(tmp_path: Path, bundled: dict[str, Path]) -> dict[str, Path]:
    """A registry of: a bundled folder whose config.json is broken, SupCon (its evaluation will raise), then CE."""
    models = tmp_path / "zoo" / "models"
    for k in ("ce", "supcon"):
        shutil.copytree(bundled[k], models / bundled[k].name)
    broken = models / "broken"
    shutil.copytree(bundled["ce"], broken)
    (broken / "config.json").write_text("{not json")
    reg = tmp_path / "zoo" / "registry.toml"
    reg.write_text(registry_toml(("broken", bundled["supcon"].name, bundled["ce"].name)))
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY_EVAL_TOML)
    return {"registry": reg, "config": cfg, "results": tmp_path / "results", "out": tmp_path / "leaderboard"}


def test_broken_models_do_not_stop_the_others(zoo: dict[str, Path], bundled: dict[str, Path]) -> None:
    cfg = build_config(None, None, zoo["config"])
    calls: list[str] = []
    lines: list[str] = []
    kw = {"registry": zoo["registry"], "results_dir": zoo["results"], "out_dir": zoo["out"],
          "evaluate_fn": stub_evaluate(calls, fail_when="supcon"), "log": lines.append}
    with pytest.raises(ModelLoadError) as e:
        run_update(cfg, **kw)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("2 registry model(s) failed: sclzoo/broken (")
    assert (f"; sclzoo/{bundled['supcon'].name} (RuntimeError: weights and architecture disagree (second line of a "
            "long error)) (the others were evaluated and the leaderboard rebuilt); fix them or remove them from the "
            "registry, or pass --skip-unavailable") in msg
    assert calls == [bundled["supcon"].name, bundled["ce"].name], "CE, after the broken ones, is evaluated"
    board = json.loads((zoo["out"] / "leaderboard.json").read_text())
    assert [r["model"] for r in board["rows"]] == [f"local/{bundled['ce'].name}"]
    assert any(line.startswith("failed      sclzoo/broken: ") for line in lines)
    assert any(line.startswith(f"failed      sclzoo/{bundled['supcon'].name}: RuntimeError") for line in lines)

    report = run_update(cfg, skip_unavailable=True, **kw)  # exit 0: reported, not fatal
    assert [p.status for p in report.planned] == ["failed", "todo", "up-to-date"]
    assert [p.entry.id for p in report.failed] == ["sclzoo/broken", f"sclzoo/{bundled['supcon'].name}"]


def test_invalid_result_files_are_listed_and_strict_refuses_them(zoo: dict[str, Path]) -> None:
    zoo["registry"].write_text(zoo["registry"].read_text().split("\n\n")[2] + "\n")  # the CE entry only
    cfg = build_config(None, None, zoo["config"])
    bad = zoo["results"] / "contributed" / "x.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"schema_version": 1, "scores": {}}')
    lines: list[str] = []
    kw = {"registry": zoo["registry"], "results_dir": zoo["results"], "out_dir": zoo["out"],
          "evaluate_fn": stub_evaluate([], fail_when="supcon"), "log": lines.append}
    report = run_update(cfg, **kw)
    assert [s.file for s in report.skipped] == ["contributed/x.json"]
    i = next(i for i, line in enumerate(lines) if line.startswith("skipped 1 of 2 result file(s)"))
    assert lines[i + 1].startswith("  contributed/x.json: <root>: 'accuracy' is a required property")
    assert (zoo["out"] / "index.html").is_file()
    shutil.rmtree(zoo["out"])
    with pytest.raises(ResultError, match=r"1 of 2 result file\(s\) under .* are invalid \(listed above\); the "
                                          "leaderboard was not rebuilt; fix or delete them, or drop --strict"):
        run_update(cfg, strict=True, **kw)
    assert not zoo["out"].exists()


def test_update_command_has_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    from sclzoo.evaluator.cli import main

    with pytest.raises(SystemExit):
        main(["leaderboard-update", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--strict Fail (exit 1, leaderboard not rebuilt)" in text and "or fails to evaluate" in text

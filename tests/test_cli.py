"""The command line: happy path end to end on a bundled model, errors as one line, help with examples."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import run_main

from sclzoo.evaluator.cli import cli
from sclzoo.evaluator.results import validate_result


@pytest.mark.integration
def test_evaluate_happy_path_writes_valid_result_and_leaderboard(
    bundled: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results"
    args = ["evaluate", "--model", str(bundled["ce"]), "--n-samples", "4", "--methods", "saliency,gradcam",
            "--metrics", "faithfulness_correlation,sparseness,max_sensitivity", "--out", str(out), "--quiet"]
    code, stdout, _ = run_main(args, capsys)
    assert code == 0
    files = sorted(out.rglob("*.json"))
    assert len(files) == 1
    assert files[0].with_name(files[0].stem + ".samples.jsonl.gz").is_file()
    assert validate_result(files[0]) == []
    assert "faithfulness_correlation" in stdout and "gradcam" in stdout
    doc = json.loads(files[0].read_text())
    assert doc["model"]["source"] == "local" and doc["model"]["objective"] == "ce"
    assert set(doc["scores"]) == {"saliency", "gradcam"}
    # Same model commit + config: the result is reused, not recomputed.
    code, stdout, _ = run_main(args, capsys)
    assert code == 0 and "result exists" in stdout
    code, stdout, _ = run_main(["leaderboard", str(out), "--out", str(tmp_path / "lb")], capsys)
    assert code == 0
    board = json.loads((tmp_path / "lb" / "leaderboard.json").read_text())
    assert {r["method"] for r in board["rows"]} == {"saliency", "gradcam"}
    assert "| resnet8_cifar.ce_mnist5k | ce |" in (tmp_path / "lb" / "LEADERBOARD.md").read_text()


def test_unknown_model_is_one_line_naming_it(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run_main(["evaluate", "--model", "no-such-model-xyz", "--n-samples", "2",
                               "--out", str(tmp_path)], capsys)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert "no-such-model-xyz" in lines[0] and "sclzoo ls models" in lines[0]
    assert "Traceback" not in err


def test_unknown_metric_suggests_close_name(capsys: pytest.CaptureFixture[str], bundled: dict[str, Path],
                                            tmp_path: Path) -> None:
    code, _, err = run_main(["evaluate", "--model", str(bundled["ce"]), "--metrics", "sparsenes",
                             "--out", str(tmp_path)], capsys)
    assert code == 1
    assert "unknown metric 'sparsenes'" in err and "Did you mean 'sparseness'" in err
    assert not any(tmp_path.iterdir()), "nothing is written for a rejected config"


def test_n_samples_larger_than_split(capsys: pytest.CaptureFixture[str], bundled: dict[str, Path],
                                     tmp_path: Path) -> None:
    code, _, err = run_main(["evaluate", "--model", str(bundled["ce"]), "--n-samples", "5000",
                             "--methods", "saliency", "--metrics", "sparseness", "--out", str(tmp_path)], capsys)
    assert code == 1 and "--n-samples 5000" in err and "1000" in err


def test_usage_error_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(["evaluate"], capsys)
    assert code == 2 and "--model" in err


@pytest.mark.integration
def test_debug_env_shows_traceback(tmp_path: Path) -> None:
    env = {"SCLZOO_DEBUG": "1", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    p = subprocess.run([sys.executable, "-m", "sclzoo", "evaluate", "--model", "no-such-model-xyz"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 1 and "Traceback" in p.stderr and "ModelNotFoundError" in p.stderr


@pytest.mark.parametrize("command", [[], ["ls"], ["train"], ["export"], ["evaluate"], ["leaderboard"],
                                     ["validate"]])
def test_help_shows_examples(command: list[str]) -> None:
    res = CliRunner().invoke(cli, [*command, "--help"])
    assert res.exit_code == 0
    assert "Examples:" in res.output and "sclzoo" in res.output


@pytest.mark.parametrize("what", ["models", "objectives", "methods", "metrics", "datasets", "architectures"])
def test_ls_lists_registries(what: str) -> None:
    res = CliRunner().invoke(cli, ["ls", what, "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert rows
    names = {r.get("name") or r.get("alias") for r in rows}
    expected = {"models": "supcon-resnet8-mnist", "objectives": "simclr", "methods": "integrated_gradients",
                "metrics": "max_sensitivity", "datasets": "mnist5k", "architectures": "resnet18_cifar"}[what]
    assert expected in names


def test_dry_run_prints_config_and_cost(bundled: dict[str, Path]) -> None:
    res = CliRunner().invoke(cli, ["evaluate", "--model", str(bundled["ce"]), "--n-samples", "10",
                                   "--methods", "saliency", "--metrics", "deletion_auc,max_sensitivity",
                                   "--dry-run"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    # deletion_auc costs K+1 = 33 forwards, max_sensitivity n = 16 explanations per sample.
    assert d["cost"]["forwards"] == 33 * 10
    assert d["cost"]["explanations"] == (16 + 1) * 10
    assert d["config"]["metrics"]["deletion_auc"]["steps"] == 32


def test_ls_models_says_which_id_results_record_for_a_bundled_copy(bundled: dict[str, Path]) -> None:
    res = CliRunner().invoke(cli, ["ls", "models", "--json"])
    rows = {r["alias"]: r for r in json.loads(res.output)}
    ce = rows["ce-resnet8-mnist"]
    assert ce["id"] == "sclzoo/resnet8_cifar.ce_mnist5k" and ce["results_as"] == f"local/{bundled['ce'].name}"

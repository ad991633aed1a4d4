"""Evaluation jobs: checkpoint/resume, sharding (torchrun), stratified selection, `sclzoo explain`, bad input.

Everything runs on the bundled CE model with cheap settings (≤ 6 images, saliency/gradcam, sparseness and
short deletion/faithfulness curves), so a whole evaluation takes seconds on a CPU.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import run_main

from sclzoo.errors import ConfigError, ResultError
from sclzoo.evaluator import api
from sclzoo.evaluator.api import evaluate
from sclzoo.evaluator.config import EvalConfig
from sclzoo.evaluator.plots import explanation_grid_size
from sclzoo.evaluator.results import read_samples, samples_path, validate_result
from sclzoo.evaluator.runner import merge_batches, run_evaluation, select_samples, shard_batches

CHEAP: dict[str, Any] = {
    "n_samples": 6,
    "batch_size": 2,
    "methods": ["saliency", "gradcam"],
    "metrics": ["sparseness", "deletion_auc", "faithfulness_correlation"],
    "metric_params": {"deletion_auc": {"steps": 4}, "faithfulness_correlation": {"n_draws": 3}},
    "device": "cpu",
}
CHEAP_TOML = """
n_samples = 6
batch_size = 2
methods = ["saliency", "gradcam"]
metrics = ["sparseness", "deletion_auc"]
device = "cpu"
[metric_params.deletion_auc]
steps = 4
"""

# Tier (tests/conftest.py): evaluation jobs end to end (the killed-run and torchrun tests are slow).
pytestmark = pytest.mark.integration


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


class Interrupt(Exception):
    """Stands in for a kill right after a batch was checkpointed."""


def interrupt_after(monkeypatch: pytest.MonkeyPatch, k: int) -> list[int]:
    """Makes the next evaluation stop right after its k-th batch is checkpointed; returns the batches written."""
    real = api.write_checkpoint_batch
    written: list[int] = []

    def write(folder: Any, meta: Any, batch: Any, ids: Any) -> Path:
        path = real(folder, meta, batch, ids)
        written.append(batch.start)
        if len(written) == k:
            raise Interrupt
        return path

    monkeypatch.setattr(api, "write_checkpoint_batch", write)
    return written


def count_batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    real = api.write_checkpoint_batch
    written: list[int] = []

    def write(folder: Any, meta: Any, batch: Any, ids: Any) -> Path:
        written.append(batch.start)
        return real(folder, meta, batch, ids)

    monkeypatch.setattr(api, "write_checkpoint_batch", write)
    return written


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, bundled: dict[str, Path]) -> Path:
    """The uninterrupted single-process result of the CHEAP config."""
    res = evaluate(str(bundled["ce"]), out=tmp_path_factory.mktemp("ref"), progress=False, **CHEAP)
    assert res.path is not None
    return res.path


# ------------------------------------------------------------------------------------------------- resume
def test_interrupted_run_resumes_to_the_identical_result(reference: Path, bundled: dict[str, Path], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    written = interrupt_after(monkeypatch, 1)
    with pytest.raises(Interrupt):
        evaluate(str(bundled["ce"]), out=tmp_path, progress=False, **CHEAP)
    assert written == [0]
    partial = next(tmp_path.rglob("*.partial"))
    assert sorted(p.name for p in partial.iterdir()) == ["batch-00000000.json.gz", "lock", "meta.json"]
    assert [p for p in files_under(tmp_path) if p.parent != partial] == [], "no result before the run ends"

    monkeypatch.undo()
    with pytest.raises(ResultError, match=r"left the checkpoint .*pass --resume .* or --force"):
        evaluate(str(bundled["ce"]), out=tmp_path, progress=False, **CHEAP)

    computed = count_batches(monkeypatch)
    res = evaluate(str(bundled["ce"]), out=tmp_path, progress=False, resume=True, **CHEAP)
    assert computed == [2, 4], "the checkpointed batch is not computed again"
    assert res.path is not None and res.path.name == reference.name
    assert not partial.exists(), "the checkpoint is removed once the result is written"
    assert read_samples(res.path) == read_samples(reference)  # every per-sample score, bit for bit
    ref = json.loads(reference.read_text())
    assert res.data["scores"] == ref["scores"] and res.data["config_hash"] == ref["config_hash"]
    maps = res.path.with_name(res.path.stem + ".maps.npz")
    assert maps.read_bytes() == reference.with_name(reference.stem + ".maps.npz").read_bytes()
    assert validate_result(res.path) == []


def test_force_discards_a_checkpoint_and_resume_checks_batch_size(bundled: dict[str, Path], tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    interrupt_after(monkeypatch, 1)
    with pytest.raises(Interrupt):
        evaluate(str(bundled["ce"]), out=tmp_path, progress=False, **CHEAP)
    monkeypatch.undo()
    partial = next(tmp_path.rglob("*.partial"))
    # batch_size is execution-only (same hash, same checkpoint) but the batches must line up to resume.
    with pytest.raises(ConfigError, match=r"written with --batch-size 2 but this run uses 3; resume with "
                                          r"--batch-size 2"):
        evaluate(str(bundled["ce"]), out=tmp_path, progress=False, resume=True, **{**CHEAP, "batch_size": 3})
    computed = count_batches(monkeypatch)
    res = evaluate(str(bundled["ce"]), out=tmp_path, progress=False, force=True, **CHEAP)
    assert computed == [0, 2, 4] and res.path is not None and res.path.is_file() and not partial.exists()


def test_corrupt_checkpoint_on_resume_is_one_line_naming_the_file(
    bundled: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "cheap.toml"
    cfg.write_text(CHEAP_TOML)
    out = tmp_path / "results"
    interrupt_after(monkeypatch, 2)
    with pytest.raises(Interrupt):
        evaluate(str(bundled["ce"]), out=out, config_file=cfg, progress=False)
    monkeypatch.undo()
    batch = next(out.rglob("batch-00000002.json.gz"))
    batch.write_bytes(gzip.compress(b'{"start": 2, "sample_ids": [1, 2], "sco'))  # truncated JSON
    code, _, err = run_main(["evaluate", "--model", str(bundled["ce"]), "--config", str(cfg), "--out", str(out),
                             "--resume", "--quiet"], capsys)
    line = one_line(err)
    assert code == 1 and "result error" in line
    assert str(batch) in line and "is corrupt" in line and "--force" in line and "delete" in line
    assert not list(out.rglob("*.samples.jsonl.gz")), "no result is written from a corrupt checkpoint"
    # A checkpoint of other images (tampered sample ids) is caught too.
    batch.write_bytes(gzip.compress(json.dumps({"start": 2, "sample_ids": [7, 8], "scores": {}, "maps": {}})
                                    .encode()))
    code, _, err = run_main(["evaluate", "--model", str(bundled["ce"]), "--config", str(cfg), "--out", str(out),
                             "--resume", "--quiet"], capsys)
    assert code == 1 and "sample ids are not those of this run" in one_line(err)


@pytest.mark.slow
@pytest.mark.may_skip  # skips when the run finished before it could be killed
def test_killed_subprocess_resumes_to_the_identical_result(bundled: dict[str, Path], tmp_path: Path) -> None:
    """A real SIGKILL after the first checkpointed batch, then `--resume` in a new process."""
    cfg = tmp_path / "cheap.toml"
    cfg.write_text(CHEAP_TOML.replace("n_samples = 6", "n_samples = 24"))  # 12 batches: time to kill mid-run
    args = [sys.executable, "-m", "sclzoo", "evaluate", "--model", str(bundled["ce"]), "--config", str(cfg),
            "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = subprocess.run([*args, "--out", str(tmp_path / "ref")], capture_output=True, text=True, env=env,
                         timeout=600)
    assert ref.returncode == 0, ref.stderr[-2000:]
    out = tmp_path / "run"
    proc = subprocess.Popen([*args, "--out", str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 600
        while not list(out.rglob("batch-*.json.gz")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.kill()  # SIGKILL: no handler runs, whatever was being written stays as it was
    finally:
        proc.wait(timeout=60)
    done = list(out.rglob("batch-*.json.gz"))
    if not list(out.rglob("*.partial")) or len(done) == 12:
        pytest.skip("the run finished before it could be killed")
    assert 1 <= len(done) < 12
    p = subprocess.run([*args, "--out", str(out), "--resume"], capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    (a,) = (tmp_path / "ref").rglob("*.samples.jsonl.gz")
    (b,) = out.rglob("*.samples.jsonl.gz")
    assert a.read_bytes() == b.read_bytes()
    assert not list(out.rglob("*.partial"))


# -------------------------------------------------------------------------------------------- scale-out
def test_sharded_batches_merge_to_the_single_process_output(bundled: dict[str, Path]) -> None:
    from sclzoo.zoo.data import load_dataset
    from sclzoo.zoo.hub import load_model, resolve_model

    model = load_model(resolve_model(str(bundled["ce"]))).model
    data = load_dataset("mnist5k", "test")
    cfg = EvalConfig.from_dict({k: v for k, v in CHEAP.items() if k != "device"})
    x, y, ids = data.images[:5], data.labels[:5], data.indices[:5]  # 5 images: the last batch is short
    kw: dict[str, Any] = {"device": torch.device("cpu"), "progress": False, "n_example_maps": 3}
    full = run_evaluation(model, x, y, ids, cfg, **kw)
    parts = [run_evaluation(model, x, y, ids, cfg, shard=(r, 2), **kw) for r in range(2)]
    assert shard_batches(5, 2, 0, 2) == [0, 4] and shard_batches(5, 2, 1, 2) == [2]
    assert parts[0].missing == (2,) and parts[1].missing == (0, 4)
    assert np.isnan(parts[1].scores["saliency"]["sparseness"][0])
    merged = merge_batches(parts[0], parts[1].batches, cfg.batch_size, n_example_maps=3)
    assert merged.missing == ()
    for m, per in full.scores.items():
        for k, v in per.items():
            assert np.array_equal(merged.scores[m][k], v, equal_nan=True), (m, k)
        assert np.array_equal(merged.example_maps[m], full.example_maps[m]) and full.example_maps[m].shape[0] == 3
    # Resuming with batches done elsewhere computes only the rest.
    seen: list[int] = []
    resumed = run_evaluation(model, x, y, ids, cfg, done_batches={0: full.batches[0]},
                             on_batch=lambda b: seen.append(b.start), **kw)
    assert seen == [2, 4] and all(np.array_equal(resumed.scores[m][k], full.scores[m][k], equal_nan=True)
                                  for m in full.scores for k in full.scores[m])
    with pytest.raises(ConfigError, match="not batch starts"):
        run_evaluation(model, x, y, ids, cfg, done_batches={1: full.batches[0]}, **kw)


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(bundled: dict[str, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "cheap.toml"
    cfg.write_text(CHEAP_TOML)
    code, _, err = run_main(["evaluate", "--model", str(bundled["ce"]), "--config", str(cfg), "--out",
                             str(tmp_path / "one"), "--quiet"], capsys)
    assert code == 0, err
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun is not None
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([torchrun, "--nproc_per_node=2", "--master_port=29541", "-m", "sclzoo", "evaluate",
                        "--model", str(bundled["ce"]), "--config", str(cfg), "--out", str(tmp_path / "two"),
                        "--quiet"], capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("result →") == 1, "only rank 0 reports"
    (one,) = (tmp_path / "one").rglob("*.json")
    (two,) = (tmp_path / "two").rglob("*.json")
    assert one.name == two.name  # same config hash
    d1, d2 = json.loads(one.read_text()), json.loads(two.read_text())
    assert d1["run"]["world_size"] == 1 and d2["run"]["world_size"] == 2
    assert d1["scores"] == d2["scores"]
    assert samples_path(one).read_bytes() == samples_path(two).read_bytes()  # per-sample scores, bit for bit
    assert not list((tmp_path / "two").rglob("*.partial"))
    assert validate_result(two) == []


# ------------------------------------------------------------------------------------------- selection
def test_stratified_selection_is_seeded_and_balanced() -> None:
    labels = torch.arange(10).repeat_interleave(100)  # sorted by class, like the mnist5k test split
    assert select_samples(labels, 4, "first", 0).tolist() == [0, 1, 2, 3]
    a = select_samples(labels, 30, "stratified", 0)
    assert torch.equal(a, select_samples(labels, 30, "stratified", 0))
    assert not torch.equal(a, select_samples(labels, 30, "stratified", 1))
    assert torch.bincount(labels[a], minlength=10).tolist() == [3] * 10
    assert a.tolist() == sorted(a.tolist())
    with pytest.raises(ConfigError, match="selection 'random' is unknown"):
        EvalConfig(selection="random")


def test_stratified_selection_is_recorded_and_hashed(reference: Path, bundled: dict[str, Path],
                                                      tmp_path: Path) -> None:
    res = evaluate(str(bundled["ce"]), out=tmp_path, progress=False, **{**CHEAP, "selection": "stratified"})
    ref = json.loads(reference.read_text())
    assert ref["config"]["selection"] == "first_n" and res.data["config"]["selection"] == "stratified"
    assert res.data["config_hash"] != ref["config_hash"]
    assert res.data["config"]["indices_sha256"] == res.data["dataset"]["indices_sha256"]
    samples = read_samples(res.path)
    ids = np.array([s["sample_id"] for s in samples], dtype="<i8")
    import hashlib

    assert hashlib.sha256(ids.tobytes()).hexdigest() == res.data["dataset"]["indices_sha256"]
    assert sorted(s["label"] for s in samples) == [0, 1, 2, 3, 4, 5]  # 6 images of 10 classes: one each
    assert [s["sample_id"] for s in samples] != [s["sample_id"] for s in read_samples(reference)]


# --------------------------------------------------------------------------------------------- explain
def test_explain_writes_a_labelled_grid(bundled: dict[str, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    import matplotlib.image

    out = tmp_path / "maps.png"
    code, stdout, err = run_main(["explain", "--model", str(bundled["ce"]), "--images", "0,500,999", "--methods",
                                  "saliency,gradcam", "--out", str(out), "--device", "cpu"], capsys)
    assert code == 0, err
    assert str(out) in stdout
    png = matplotlib.image.imread(out)  # (H, W, 4) floats in [0, 1]
    assert (png.shape[1], png.shape[0]) == explanation_grid_size(3, 2)
    rgb = png[..., :3]
    assert rgb.std() > 0.1 and (rgb.mean(-1) < 0.9).mean() > 0.2, "the grid is drawn, not blank"
    assert [p.name for p in tmp_path.iterdir()] == ["maps.png"], "no temporary file is left"


@pytest.mark.parametrize(("images", "match"), [
    ("0,1000", "image index 1000 is out of range: the test split of 'mnist5k' has 1000 images; pass --images "
               "between 0 and 999"),
    ("-1", "image index -1 is out of range"),
    ("0,five", "--images must be comma-separated integers like 0,5,9, got '0,five'"),
])
def test_explain_bad_image_index_is_one_line(images: str, match: str, bundled: dict[str, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(["explain", "--model", str(bundled["ce"]), f"--images={images}", "--methods",
                             "saliency", "--out", str(tmp_path / "maps.png")], capsys)
    assert code == 1 and match in one_line(err)
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------- bad input
def test_unknown_method_suggests_close_name(bundled: dict[str, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(["evaluate", "--model", str(bundled["ce"]), "--methods", "salency,gradcam",
                             "--metrics", "sparseness", "--out", str(tmp_path)], capsys)
    line = one_line(err)
    assert code == 1 and "unknown attribution method 'salency'" in line and "Did you mean 'saliency'" in line
    assert "sclzoo ls methods" in line
    assert not any(tmp_path.iterdir())


def test_dataset_of_another_input_size_is_resized_and_recorded(bundled: dict[str, Path], tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(["evaluate", "--model", str(bundled["ce"]), "--dataset", "digits", "--n-samples", "2",
                             "--methods", "saliency", "--metrics", "sparseness", "--out", str(tmp_path),
                             "--quiet"], capsys)
    assert code == 0, err
    (doc,) = [json.loads(p.read_text()) for p in tmp_path.rglob("*.json")]
    assert doc["config"]["preprocess"]["source_size"] == [1, 8, 8]
    assert doc["config"]["preprocess"]["input_size"] == [1, 28, 28]


@pytest.mark.parametrize(("toml", "match"), [
    ("n_sample = 3\n", r"unknown key(s) ['n_sample'] in {file}; known keys:"),
    ('n_samples = "ten"\n', "{file}: n_samples must be a positive integer, got 'ten'"),
    ("methods = 3\n", "{file}: methods must be a list of names, got 3"),
    ('selection = "random"\n', "{file}: selection 'random' is unknown; use one of first, stratified"),
    ("[metric_params]\nsparseness = 1\n", "{file}: metric_params must be a table of tables"),
    ("n_samples = \n", "config file '{file}' is not valid TOML"),
])
def test_bad_config_file_is_one_line_naming_it(toml: str, match: str, bundled: dict[str, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(toml)
    out = tmp_path / "results"
    code, _, err = run_main(["evaluate", "--model", str(bundled["ce"]), "--config", str(bad), "--out", str(out)],
                            capsys)
    line = one_line(err)
    assert code == 1 and "invalid configuration" in line and match.format(file=bad) in line
    assert not out.exists()


def test_results_under_a_file_fail_before_computing(bundled: dict[str, Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "somefile"
    blocker.write_text("not a folder")
    code, _, err = run_main(["evaluate", "--model", str(bundled["ce"]), "--n-samples", "2", "--methods",
                             "saliency", "--metrics", "sparseness", "--out", str(blocker / "results")], capsys)
    line = one_line(err)
    assert code == 1 and "result error" in line
    assert f"{str(blocker)!r} is a file, not a folder; pass another --out folder" in line
    assert blocker.read_text() == "not a folder" and [p.name for p in tmp_path.iterdir()] == ["somefile"]


def test_nan_logits_are_refused_before_anything_is_written(bundled: dict[str, Path], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from safetensors.torch import load_file, save_file

    from sclzoo.zoo.hub import sha256_file

    repo = tmp_path / "broken"
    shutil.copytree(bundled["ce"], repo)
    state = load_file(str(repo / "model.safetensors"))
    fc = next(k for k in state if k.endswith("weight") and state[k].ndim == 2)  # the classifier head
    state[fc] = torch.full_like(state[fc], float("nan"))
    save_file(state, str(repo / "model.safetensors"))
    cfg = json.loads((repo / "config.json").read_text())
    cfg["sclzoo"]["files_sha256"]["model.safetensors"] = sha256_file(repo / "model.safetensors")
    (repo / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "results"
    code, _, err = run_main(["evaluate", "--model", str(repo), "--n-samples", "2", "--methods", "saliency",
                             "--metrics", "sparseness", "--out", str(out), "--quiet"], capsys)
    line = one_line(err)
    assert code == 1 and "cannot load model" in line and "NaN/inf logits for 1000 of 1000 images" in line
    assert "retrain or re-export" in line
    assert files_under(out) == []


def test_explain_and_evaluate_help_show_the_new_options() -> None:
    from click.testing import CliRunner

    from sclzoo.evaluator.cli import cli

    res = CliRunner().invoke(cli, ["explain", "--help"])
    assert res.exit_code == 0 and "Examples:" in res.output and "--images" in res.output
    res = CliRunner().invoke(cli, ["evaluate", "--help"])
    assert res.exit_code == 0 and all(o in res.output for o in ("--resume", "--selection", "torchrun"))

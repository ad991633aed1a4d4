"""Result files and checkpoints as untrusted input (the result-file half): path traversal from a crafted
config hash, invalid result files skipped and listed (``--strict`` fails), ``validate`` against NaN literals and
forged aggregates, checkpoint digests, run locks, leftovers of killed runs, ``--seed -1``, ``--resume --force``,
and file modes under the user's umask. Everything is crafted by the tests; no model is run."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import run_main as _run_main
from lb_synth import write_synthetic

from sclzoo.errors import ConfigError, ResultError
from sclzoo.evaluator import results as results_mod
from sclzoo.evaluator.api import _checkpointing
from sclzoo.evaluator.config import EvalConfig
from sclzoo.evaluator.leaderboard import _inside, _safe, scan_results
from sclzoo.evaluator.results import (
    checkpoint_dir,
    read_checkpoint,
    read_result,
    samples_path,
    validate_result,
    write_checkpoint_batch,
    write_maps,
    write_result,
)
from sclzoo.evaluator.runner import BatchResult
from sclzoo.zoo.distributed import DistInfo

N = 8


def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``sclzoo ARGS`` in this process, which must not print a traceback."""
    code, out, err = _run_main(args, capsys)
    assert "Traceback" not in out + err
    return code, out, err


def snapshot(root: Path, skip: Path | None = None) -> dict[str, bytes]:
    """Every file under root (by relative path) with its bytes, except under ``skip``."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and (skip is None or skip not in p.parents)}


def scores(seed: int) -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {"saliency": {"sparseness": rng.normal(0.5, 0.1, N), "complexity": rng.normal(3.0, 0.1, N)}}


def two_models(root: Path) -> dict[str, Path]:
    return {"ce": write_synthetic(root, "ce", scores(1)), "supcon": write_synthetic(root, "supcon", scores(2))}


def plant(root: Path, name: str, doc: dict | str | bytes, like: Path | None = None) -> Path:
    """Writes a crafted result file at ``root/name`` (a dict as JSON, a str/bytes verbatim), with the samples and
    maps of ``like`` beside it."""
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(doc) if isinstance(doc, dict) else doc
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    if like is not None:
        samples_path(path).write_bytes(samples_path(like).read_bytes())
    return path


def edited(path: Path, edit: str | None = None, **at: object) -> dict:
    """The result at ``path`` with ``scores/saliency/sparseness/<key>`` set per ``at``."""
    doc = read_result(path)
    for key, value in at.items():
        doc["scores"]["saliency"]["sparseness"][key] = value
    return doc


# --------------------------------------------------------------------------------- 1. path traversal
def test_crafted_config_hash_never_writes_outside_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "results"
    good = two_models(root)
    # A deep --out, so "img/../../../../" would land inside tmp_path where the test can see it.
    out = tmp_path / "o1" / "o2" / "o3" / "lb"
    for i, h in enumerate(["../../../../", "../../../../../../../../../tmp/x", str(tmp_path / "abs"),
                           "/" + "a" * 63]):
        doc = read_result(good["ce"])
        doc["config_hash"] = h
        doc["model"]["commit_sha"] = f"{i:040x}"
        doc["dataset"]["id"] = "../../../../evil"
        plant(root, f"crafted{i}/{doc['model']['commit_sha']}/r.json", doc, like=good["ce"])
    before = snapshot(tmp_path, skip=out)
    code, _, err = run_main(["leaderboard", str(root), "--out", str(out), "--quiet"], capsys)
    assert code == 0
    assert snapshot(tmp_path, skip=out) == before, "nothing is written outside --out"
    assert sorted(p.name for p in (out / "img").iterdir()) == sorted(
        f"{read_result(good['ce'])['config_hash'][:12]}_mnist5k_{k}.png" for k in ("distributions", "gallery", "ranks"))
    assert err.count("does not match '^[0-9a-f]{64}$'") == 4 and "skipped 4 of 6 result file(s)" in err


def test_names_from_results_are_sanitised_and_checked(tmp_path: Path) -> None:
    assert _safe("mnist5k") == "mnist5k"  # the committed leaderboard's figure names do not change
    for bad in ["..", ".", "", "../../x", "/etc/passwd", "a" * 300, "imagefolder:/data/x"]:
        safe = _safe(bad)
        assert "/" not in safe and safe not in ("", ".", "..") and len(safe) <= 48
    assert _safe("a" * 300) != _safe("a" * 301)  # truncated names stay distinct
    out = tmp_path / "out"
    (out / "img").mkdir(parents=True)
    assert _inside(out, out / "img" / "x.png") == out / "img" / "x.png"
    with pytest.raises(ResultError, match="outside the output folder"):
        _inside(out, out / "img" / ".." / ".." / "x.png")
    (out / "link").symlink_to(tmp_path)
    with pytest.raises(ResultError, match="outside the output folder"):
        _inside(out, out / "link" / "x.png")


# ------------------------------------------------------------------------- 8. invalid result files
@pytest.fixture
def zoo_with_bad_files(tmp_path: Path) -> tuple[Path, dict[str, Path], dict[str, str]]:
    """Two valid results and one bad file per case; returns (root, the good ones, {bad file: expected reason})."""
    root = tmp_path / "results"
    good = two_models(root)
    bad: dict[str, str] = {}

    def add(name: str, doc: dict | str | bytes, reason: str, like: Path | None = good["ce"]) -> None:
        plant(root, name, doc, like)
        bad[name] = reason

    add("empty/c1/" + "0" * 64 + ".json", {"schema_version": 1, "scores": {}}, "is a required property")
    (root / "dir" / "d.json").mkdir(parents=True)
    bad["dir/d.json"] = "is a folder"
    h = good["ce"].name
    add(f"high/{'1' * 40}/{h}", {**edited(good["ce"], mean="high")}, "'high' is not of type")
    nan = json.dumps(edited(good["ce"], mean=float("nan")))  # Python writes the NaN literal
    add(f"nan/{'2' * 40}/{h}", nan, "NaN/Infinity literal")
    doc = edited(good["ce"], mean=0.99)
    doc["model"]["commit_sha"] = "3" * 40
    add(f"forged/{'3' * 40}/{h}", doc, "mean 0.99 ≠")
    add(f"notjson/{'4' * 40}/{h}", "{not json", "not valid JSON")
    add(f"latin1/{'5' * 40}/{h}", b"\xff\xfe{}", "not valid JSON")
    add(f"array/{'6' * 40}/{h}", "[1, 2]", "does not hold a JSON object")
    add(f"huge/{'7' * 40}/{h}", "[" * 100_000 + "]" * 100_000, "not valid JSON")
    doc = read_result(good["ce"])
    add(f"copy/{'8' * 40}/{h}", doc, "duplicate of")
    doc = edited(good["ce"], std=123.0)
    doc["model"]["commit_sha"] = "9" * 40
    add(f"std/{'9' * 40}/{h}", doc, "std 123.0 ≠")
    doc = read_result(good["ce"])
    doc["model"]["commit_sha"] = "a" * 40
    doc["scores"]["saliency"]["sparseness"]["higher_is_better"] = False  # flips the ranking direction
    add(f"flipped/{'a' * 40}/{h}", doc, "contradict metric 'sparseness'")
    os.symlink(good["supcon"], root / "link.json")
    bad["link.json"] = "symbolic link"
    return root, good, bad


def test_bad_result_files_are_skipped_and_listed_once_at_the_end(
    zoo_with_bad_files: tuple[Path, dict[str, Path], dict[str, str]], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, good, bad = zoo_with_bad_files
    scan = scan_results(root)
    assert {s.file: s.reason for s in scan.skipped}.keys() == bad.keys()
    for s in scan.skipped:
        assert bad[s.file] in s.reason, (s.file, s.reason)
    assert sorted(lr.file for lr in scan.results) == sorted(str(p.relative_to(root)) for p in good.values())

    code, out, err = run_main(["leaderboard", str(root), "--out", str(tmp_path / "lb"), "--quiet"], capsys)
    assert code == 0
    lines = err.strip().splitlines()
    assert lines[0].startswith(f"skipped {len(bad)} of {len(bad) + 2} result file(s)") and "--strict" in lines[0]
    assert len(lines) == 1 + len(bad) and sorted(line.split(": ")[0].strip() for line in lines[1:]) == sorted(bad)
    board = json.loads((tmp_path / "lb" / "leaderboard.json").read_text())
    assert {r["file"] for r in board["rows"]} == {str(p.relative_to(root)) for p in good.values()}


def test_strict_fails_with_one_line_and_writes_nothing(
    zoo_with_bad_files: tuple[Path, dict[str, Path], dict[str, str]], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, _, bad = zoo_with_bad_files
    code, _, err = run_main(["leaderboard", str(root), "--out", str(tmp_path / "lb"), "--strict"], capsys)
    lines = err.strip().splitlines()
    invalid = [name for name, why in bad.items() if why != "duplicate of"]  # an equal copy is not an error
    assert code == 1 and len(lines) == len(invalid) + 1
    assert all(line.startswith("invalid ") for line in lines[:-1]) and not any("copy/" in ln for ln in lines)
    assert lines[-1] == (f"sclzoo: result error: {len(invalid)} of {len(bad) + 2} result file(s) under {str(root)!r} "
                         "are invalid or conflicting (listed above); fix or delete them, or drop --strict to rank "
                         "the others")
    assert not (tmp_path / "lb").exists()


def test_validate_rejects_nan_literals_and_forged_aggregates(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    good = write_synthetic(tmp_path / "r", "ce", scores(1))
    assert validate_result(good) == []
    cases = {"nan": (json.dumps(edited(good, mean=float("nan"))), "NaN/Infinity literal"),
             "inf": (json.dumps(edited(good, ci95=[0.0, float("inf")])), "NaN/Infinity literal"),
             "mean": (json.dumps(edited(good, mean=0.99)), "mean 0.99 ≠"),
             "median": (json.dumps(edited(good, median=0.99)), "median 0.99 ≠"),
             "null": (json.dumps(edited(good, mean=None)), "a mean is null exactly when no sample has a score")}
    for name, (text, reason) in cases.items():
        path = plant(tmp_path / name, good.name, text, like=good)
        problems = validate_result(path)
        assert problems and reason in problems[0], (name, problems)
    # The samples file summarised: other images (ids) are caught too.
    path = plant(tmp_path / "ids", good.name, good.read_text())
    lines = [json.loads(line) for line in gzip.decompress(samples_path(good).read_bytes()).splitlines()]
    lines[0]["sample_id"] = 999
    samples_path(path).write_bytes(gzip.compress("".join(json.dumps(x) + "\n" for x in lines).encode()))
    assert "do not hash to dataset.indices_sha256" in " ".join(validate_result(path))
    # Through the CLI: one INVALID block per bad file, a missing per-sample file included, then one error line.
    renamed = plant(tmp_path / "renamed", "x.json", good.read_text(), like=good)
    nosamples = plant(tmp_path / "nosamples", good.name, good.read_text())
    code, out, err = run_main(["validate", str(good), str(tmp_path / "nan" / good.name), str(renamed),
                               str(nosamples)], capsys)
    assert code == 1 and out.splitlines()[0] == f"ok      {good}"
    assert "NaN/Infinity literal" in out and "not its config_hash" in out and "is missing" in out
    assert err.strip() == "sclzoo: result error: 3 of 4 file(s) are invalid (see above)"


# ---------------------------------------------------------------------------------- checkpoints
META = {"config_hash": "c" * 64, "model_commit": "d" * 40, "n_samples": 4, "indices_sha256": "e" * 64,
        "batch_size": 2, "methods": ["saliency"], "metrics": ["sparseness"]}
IDS = np.array([10, 11, 12, 13])


def batch(start: int) -> BatchResult:
    return BatchResult(start, {"saliency": {"sparseness": np.array([0.25 + start, np.nan])}},
                       {"saliency": np.zeros((2, 3, 3), dtype=np.float32)} if start == 0 else {})


def test_an_edited_checkpoint_batch_is_refused_on_resume(tmp_path: Path) -> None:
    folder = tmp_path / "h.partial"
    for start in (0, 2):
        write_checkpoint_batch(folder, META, batch(start), IDS[start : start + 2])
    done = read_checkpoint(folder, META, IDS)
    assert sorted(done) == [0, 2] and done[2].scores["saliency"]["sparseness"][0] == 2.25
    f = folder / "batch-00000002.json.gz"
    doc = json.loads(gzip.decompress(f.read_bytes()))
    doc["scores"]["saliency"]["sparseness"][0] = 0.99  # a plausible score, everything else intact
    f.write_bytes(gzip.compress(json.dumps(doc).encode()))
    with pytest.raises(ResultError, match=r"batch-00000002.json.gz' is corrupt \(its content does not match its "
                                          r"sha256 digest: it was edited after this run wrote it\); delete .* or "
                                          r"run with --force"):
        read_checkpoint(folder, META, IDS)
    # A batch copied from another run (another config hash) does not verify either.
    other = {**META, "config_hash": "f" * 64}
    write_checkpoint_batch(tmp_path / "o.partial", other, batch(2), IDS[2:])
    f.write_bytes((tmp_path / "o.partial" / "batch-00000002.json.gz").read_bytes())
    with pytest.raises(ResultError, match="does not match its sha256 digest"):
        read_checkpoint(folder, META, IDS)


def _result_path(tmp_path: Path) -> Path:
    return tmp_path / "results" / "local__m" / ("d" * 40) / ("c" * 64 + ".json")


def test_resume_and_force_together_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="--resume and --force contradict each other"):
        _checkpointing(_result_path(tmp_path), META, IDS, resume=True, force=True, info=DistInfo())
    code, _, err = run_main(["evaluate", "--model", str(tmp_path / "no-such-model"), "--resume", "--force"], capsys)
    assert code == 1 and err.strip() == (
        "sclzoo: invalid configuration: --resume and --force contradict each other (--resume continues the "
        "checkpoint of an interrupted run, --force discards it); pass only one of them")


def test_empty_or_metaless_checkpoint_is_absent_and_temp_files_go(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = _result_path(tmp_path)
    folder = checkpoint_dir(path)
    # A full disk: the first checkpoint write fails after the folder was made.
    real = results_mod._atomic_write

    def full(p: Path, data: bytes) -> None:
        p.parent.mkdir(parents=True, exist_ok=True)
        (p.parent / f".{p.name}.k2j3h4g5").write_bytes(data[:1])  # what a write cut short leaves
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(results_mod, "_atomic_write", full)
    with pytest.raises(ResultError, match="No space left on device"):
        write_checkpoint_batch(folder, META, batch(0), IDS[:2])
    monkeypatch.setattr(results_mod, "_atomic_write", real)
    assert folder.is_dir() and not (folder / "meta.json").exists()
    # Temp files of a killed result write, beside the result.
    for name in (f".{path.name}.a1b2c3d4", f".{samples_path(path).name}.x9y8z7w6"):
        (path.parent / name).write_bytes(b"half")
    keep = path.parent / ".other.json.a1b2c3d4"  # another config's: not this run's to remove
    keep.write_bytes(b"x")
    # Neither a plain rerun nor --resume is blocked: the folder is treated as absent.
    assert _checkpointing(path, META, IDS, resume=True, force=False, info=DistInfo())[0] == {}
    assert [p.name for p in path.parent.iterdir()] == [keep.name], "the empty checkpoint and the temp files went"
    done, on_batch = _checkpointing(path, META, IDS, resume=False, force=False, info=DistInfo())
    assert done == {} and on_batch is not None and not folder.exists(), "no file before the first batch"
    on_batch(batch(0))
    assert sorted(read_checkpoint(folder, META, IDS)) == [0]
    assert sorted(p.name for p in folder.iterdir()) == ["batch-00000000.json.gz", "lock", "meta.json"]


HOLD = """
import sys, time
from sclzoo.evaluator.results import lock_checkpoint
lock_checkpoint(sys.argv[1])
print("locked", flush=True)
time.sleep(60)
"""


def test_a_live_run_holds_its_checkpoint(tmp_path: Path) -> None:
    path = _result_path(tmp_path)
    folder = checkpoint_dir(path)
    # This run starts before the other has checkpointed anything: nothing to see yet ...
    _, on_batch = _checkpointing(path, META, IDS, resume=False, force=False, info=DistInfo())
    assert on_batch is not None
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        running = rf"already running \(pid {proc.pid}\) and holds .*\.partial'; wait for it to finish"
        with pytest.raises(ResultError, match=running):  # ... but its first batch finds the other run's lock
            on_batch(batch(0))
        write_checkpoint_batch(folder, META, batch(0), IDS[:2])  # the live run checkpoints a batch
        for resume, force in ((False, False), (True, False), (False, True)):
            with pytest.raises(ResultError, match=running):
                _checkpointing(path, META, IDS, resume=resume, force=force, info=DistInfo())
        assert (folder / "batch-00000000.json.gz").is_file(), "--force did not discard a live run's checkpoint"
    finally:
        proc.kill()
        proc.wait(timeout=30)
    # Killed: the kernel released its lock, so the checkpoint is an interrupted run's.
    with pytest.raises(ResultError, match="an interrupted run of this config left the checkpoint"):
        _checkpointing(path, META, IDS, resume=False, force=False, info=DistInfo())
    done, _ = _checkpointing(path, META, IDS, resume=True, force=False, info=DistInfo())
    assert sorted(done) == [0]
    done, _ = _checkpointing(path, META, IDS, resume=True, force=False, info=DistInfo())  # again: still ours
    assert sorted(done) == [0]


# -------------------------------------------------------------------------------------- 5. --seed -1
@pytest.mark.parametrize("seed", [-1, 2**63])
def test_seed_out_of_range_fails_before_any_work(seed: int, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match=rf"seed {seed} is out of range; pass --seed 0 or another integer from 0"):
        EvalConfig(seed=seed)
    # The model does not exist: the seed is refused before anything is resolved, loaded or computed.
    code, _, err = run_main(["evaluate", "--model", str(tmp_path / "no-such-model"), "--seed", str(seed)], capsys)
    assert code == 1 and err.strip() == (f"sclzoo: invalid configuration: seed {seed} is out of range; pass --seed 0 "
                                         "or another integer from 0 to 9223372036854775807 (2**63 - 1)")
    cfg = tmp_path / "eval.toml"
    cfg.write_text(f"seed = {seed}\n")
    code, _, err = run_main(["evaluate", "--model", "x", "--config", str(cfg)], capsys)
    assert code == 1 and f"seed {seed} is out of range" in err and len(err.strip().splitlines()) == 1
    assert EvalConfig(seed=2**63 - 1).seed == 2**63 - 1


# ----------------------------------------------------------------------------------------- umask
@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_files_follow_the_umask(umask: int, tmp_path: Path) -> None:
    old = os.umask(umask)
    try:
        path = write_synthetic(tmp_path / "r", "ce", scores(1))
        write_maps(path, {"saliency": np.zeros((1, 2, 2), dtype=np.float32)}, np.array([0]))
        write_result(path.with_name("copy.json"), read_result(path), [])
        write_checkpoint_batch(tmp_path / "p.partial", META, batch(0), IDS[:2])
    finally:
        os.umask(old)
    files = [path, samples_path(path), path.with_name(path.stem + ".maps.npz"), path.with_name("copy.json"),
             tmp_path / "p.partial" / "meta.json", tmp_path / "p.partial" / "batch-00000000.json.gz"]
    assert {f.name: oct(f.stat().st_mode & 0o777) for f in files} == {f.name: oct(0o666 & ~umask) for f in files}

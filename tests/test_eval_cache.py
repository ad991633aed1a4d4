"""No repeated work (evaluator/cache.py): the split accuracy is computed once per model, split and runtime, a
finished result is returned without planning (and, from the command line, without torch), and a cache file that
is not what sclzoo wrote is ignored and rewritten."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import sclzoo.evaluator.cache as cache
from sclzoo.evaluator.api import evaluate
from sclzoo.evaluator.leaderboard import scan_results

# Tier (tests/conftest.py): evaluation jobs end to end.
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]

TINY = {"methods": ["saliency"], "metrics": ["sparseness"], "batch_size": 4, "device": "cpu"}


def count_split_forwards(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the forward passes over the whole split (one per computed split accuracy)."""
    calls: list[int] = []
    real = cache.split_accuracy

    def spy(logits_fn: Callable[[], Any], *args: Any, **kwargs: Any) -> Any:
        def counted() -> Any:
            calls.append(1)
            return logits_fn()

        return real(counted, *args, **kwargs)

    monkeypatch.setattr(cache, "split_accuracy", spy)
    return calls


def accuracy_files(out: Path) -> list[Path]:
    return sorted((out / cache.CACHE_DIR / "accuracy").glob("*.cache"))


def test_split_accuracy_is_computed_once_and_recorded_identically(bundled: dict[str, Path], tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    forwards = count_split_forwards(monkeypatch)
    first = evaluate(str(bundled["ce"]), out=tmp_path, progress=False, n_samples=4, **TINY)
    assert len(forwards) == 1 and len(accuracy_files(tmp_path)) == 1
    second = evaluate(str(bundled["ce"]), out=tmp_path, progress=False, n_samples=5, **TINY)  # another config
    assert len(forwards) == 1, "the second evaluation recomputed the split accuracy"
    assert not second.reused and second.data["config_hash"] != first.data["config_hash"]
    assert second.data["accuracy"] == first.data["accuracy"]
    assert first.data["accuracy"]["torch"] == {"value": first.data["accuracy"]["torch"]["value"], "n": 1000}
    # the cache is not a result: the leaderboard sees exactly the two results
    scan = scan_results(tmp_path)
    assert len(scan.results) == 2 and scan.skipped == []


GARBAGE = ["not json", "[]", '{"format": 1, "n": 1000}', '{"format": 1, "n": 1000, "value": 1.5}',
           '{"format": 1, "n": 1000, "value": 0.9805}',  # not k/1000
           '{"format": 1, "n": 999, "value": 0.5}', '{"format": 1, "n": 1000, "value": "0.5"}',
           '{"format": 1, "n": 1000, "value": null}', '{"format": 1, "n": 1000, "value": true}',
           '{"format": 2, "n": 1000, "value": 0.5}', '{"format": 1, "n": 1000, "value": NaN}',
           '{"format": 1, "n": 1000, "value": 0.5, "pad": "' + "x" * 70_000 + '"}']


@pytest.mark.parametrize("garbage", GARBAGE)
def test_split_accuracy_ignores_a_cache_file_it_did_not_write(garbage: str, tmp_path: Path) -> None:
    import torch

    labels = torch.arange(1000) % 10
    logits = torch.nn.functional.one_hot(labels.roll(1), 10).float()  # 900 of 1000 right
    logits[:100] = torch.nn.functional.one_hot(labels[:100], 10).float()
    calls: list[int] = []

    def logits_fn() -> torch.Tensor:
        calls.append(1)
        return logits

    key = "ab" * 32
    f = tmp_path / cache.CACHE_DIR / "accuracy" / f"{key}.cache"
    f.parent.mkdir(parents=True)
    f.write_text(garbage)
    kw = {"labels_match": True, "check_finite": True, "out": tmp_path, "key": key}
    assert cache.split_accuracy(logits_fn, labels, **kw) == (pytest.approx(0.1), False) and calls == [1]
    cache.store_accuracy(tmp_path, key, 1000, 0.1)
    assert cache.split_accuracy(logits_fn, labels, **kw) == (0.1, True) and calls == [1]
    f.unlink()
    f.symlink_to(tmp_path / "elsewhere")  # a link is not a file sclzoo wrote
    (tmp_path / "elsewhere").write_text('{"format": 1, "n": 1000, "value": 0.2}')
    assert cache.split_accuracy(logits_fn, labels, **kw)[1] is False


def test_a_corrupt_accuracy_cache_is_ignored_and_rewritten(bundled: dict[str, Path], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    first = evaluate(str(bundled["ce"]), out=tmp_path, progress=False, n_samples=2, **TINY)
    [f] = accuracy_files(tmp_path)
    # A well-formed value is taken as it is (like a result file, it can only come from whoever writes the
    # results folder); one that cannot be an accuracy of these 1,000 images is recomputed and rewritten.
    f.write_text('{"format": 1, "n": 1000, "value": 0.5}')
    forwards = count_split_forwards(monkeypatch)
    assert evaluate(str(bundled["ce"]), out=tmp_path, progress=False, n_samples=3,
                    **TINY).data["accuracy"]["torch"]["value"] == 0.5 and forwards == []
    f.write_text('{"format": 1, "n": 1000, "value": 1.5}')
    second = evaluate(str(bundled["ce"]), out=tmp_path, progress=False, n_samples=4, **TINY)
    assert len(forwards) == 1, "a corrupt cache file was trusted"
    assert second.data["accuracy"] == first.data["accuracy"]
    assert json.loads(f.read_text()) == {"format": 1, "n": 1000, "value": first.data["accuracy"]["torch"]["value"]}
    assert oct(f.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_onnx_runtime_caches_both_accuracies(bundled: dict[str, Path], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    forwards = count_split_forwards(monkeypatch)
    first = evaluate(str(bundled["ce"]), out=tmp_path, progress=False, n_samples=2, runtime="onnx", **TINY)
    assert len(forwards) == 2  # onnxruntime's and PyTorch's
    second = evaluate(str(bundled["ce"]), out=tmp_path, progress=False, n_samples=3, runtime="onnx", **TINY)
    assert len(forwards) == 2
    assert second.data["accuracy"] == first.data["accuracy"] and first.data["accuracy"]["onnx"]["n"] == 1000


def test_a_finished_result_is_returned_without_planning(bundled: dict[str, Path], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import sclzoo.evaluator.api as api

    first = evaluate(str(bundled["ce"]), out=tmp_path, progress=False, n_samples=2, **TINY)

    def no_plan(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("planned again")

    monkeypatch.setattr(api, "plan", no_plan)
    again = evaluate(str(bundled["ce"]), out=tmp_path, progress=False, n_samples=2, **TINY)
    assert again.reused and again.path == first.path and again.data == json.loads(first.path.read_text())
    with pytest.raises(AssertionError, match="planned again"):  # another config, or --force, plans
        evaluate(str(bundled["ce"]), out=tmp_path, progress=False, n_samples=2, force=True, **TINY)


@pytest.mark.parametrize("tamper", ["garbage", "other_result", "missing_samples"])
def test_a_memo_that_does_not_match_its_result_is_not_trusted(tamper: str, bundled: dict[str, Path],
                                                               tmp_path: Path) -> None:
    a = evaluate(str(bundled["ce"]), out=tmp_path, progress=False, n_samples=2, **TINY)
    b = evaluate(str(bundled["ce"]), out=tmp_path, progress=False, n_samples=3, **TINY)
    memos = {json.loads(f.read_text())["config_hash"]: f
             for f in (tmp_path / cache.CACHE_DIR / "plans").glob("*.cache")}
    memo_a = memos[a.data["config_hash"]]
    if tamper == "garbage":
        memo_a.write_text('{"format": 1, "repo_id": 3}')
    elif tamper == "other_result":  # points the n=2 request at the n=3 result
        memo_a.write_text(memos[b.data["config_hash"]].read_text())
    else:
        (a.path.parent / (a.path.name[: -len(".json")] + ".samples.jsonl.gz")).unlink()
    assert cache.finished_result(str(bundled["ce"]), _config(n_samples=2), tmp_path) is None
    if tamper != "missing_samples":  # planning finds the right result again and repairs the memo
        again = evaluate(str(bundled["ce"]), out=tmp_path, progress=False, n_samples=2, **TINY)
        assert again.reused and again.data["config_hash"] == a.data["config_hash"]
        assert cache.finished_result(str(bundled["ce"]), _config(n_samples=2), tmp_path) is not None


def _config(**kwargs: Any) -> Any:
    from sclzoo.evaluator.config import build_config

    return build_config(None, "standard", None, **{**TINY, **kwargs})


def test_evaluate_reuses_a_finished_result_without_importing_torch(bundled: dict[str, Path],
                                                                   tmp_path: Path) -> None:
    args = ["evaluate", "--model", str(bundled["ce"]), "--n-samples", "2", "--methods", "saliency", "--metrics",
            "sparseness", "--batch-size", "4", "--device", "cpu", "--out", str(tmp_path), "--quiet"]
    cache.code_fingerprint.cache_clear()  # the source as it is now, as the fresh process below will hash it
    first = evaluate(str(bundled["ce"]), out=tmp_path, progress=False, n_samples=2, **TINY)
    probe = ("import sys\nfrom sclzoo.evaluator.cli import main\n"
             "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\n"
             "heavy = [m for m in ('torch', 'timm', 'torchvision', 'captum', 'onnxruntime') if m in sys.modules]\n"
             "print('HEAVY', heavy, code)\n")
    res = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "result exists for this model commit and config" in res.stdout and str(first.path) in res.stdout
    assert "HEAVY [] 0" in res.stdout

"""Fuzz test of `sclzoo leaderboard` over randomly mutated result files (seeded, 60 mutations): never a traceback,
exit 0 (or 1 with one error line under --strict), every file either ranked or listed on one line, and nothing
written outside --out (nor into the results folder)."""

from __future__ import annotations

import copy
import gzip
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lb_synth import write_synthetic

from sclzoo.evaluator.cli import main
from sclzoo.evaluator.results import maps_path, read_result, samples_path

N_MUTANTS = 60
SEED = 16
WEIRD: list[Any] = [None, True, False, 0, -1, 1.5, 1e308, -1e308, 10**30, "", "high", "../../../../",
                    "/etc/passwd", "$\\frac{$", "<script>alert(1)</script>", "a" * 500, "0" * 64, "f" * 40,
                    [], [1, 2], {}, {"x": 1}, float("nan"), float("inf"), "ce\nsupcon", "é中"]


def paths(doc: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path in a JSON document."""
    out = [at]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += paths(v, (*at, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += paths(v, (*at, i))
    return out


def mutate_doc(doc: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    at = rng.choice(paths(doc)[1:])
    parent = doc
    for k in at[:-1]:
        parent = parent[k]
    if isinstance(parent, dict) and rng.random() < 0.3:
        del parent[at[-1]]
    elif isinstance(parent, dict) and rng.random() < 0.2:
        parent[rng.choice(["$ref", "../x", "", "__proto__"])] = rng.choice(WEIRD)
    else:
        parent[at[-1]] = rng.choice(WEIRD)
    return doc


def write_mutant(root: Path, i: int, base: Path, rng: random.Random) -> Path:
    """One mutated copy of ``base`` under its own commit (so a valid mutant is a distinct model)."""
    doc = read_result(base)
    doc["model"]["commit_sha"] = f"{i + 1:040x}"
    path = root / f"m{i:02d}" / doc["model"]["commit_sha"] / base.name
    path.parent.mkdir(parents=True)
    samples_path(path).write_bytes(samples_path(base).read_bytes())
    if rng.random() < 0.15:
        path.with_name(maps_path(base).name).write_bytes(maps_path(base).read_bytes())
    kind = rng.random()
    if kind < 0.6:
        text = json.dumps(mutate_doc(doc, rng))  # NaN/Infinity go out as literals, as a hand edit could
        path.write_text(text)
    elif kind < 0.7:
        text = json.dumps(doc)
        path.write_text(text[: rng.randrange(len(text))])
    elif kind < 0.75:
        path.write_bytes(rng.choice([b"", b"\xff\xfe\x00", b"[]", b"null", b'"x"', b"1e999", b"[" * 5000]))
    elif kind < 0.8:
        path.mkdir()  # a folder named like a result
    elif kind < 0.9:  # a per-sample score edited
        path.write_text(json.dumps(doc))
        lines = [json.loads(x) for x in gzip.decompress(samples_path(base).read_bytes()).splitlines()]
        line = rng.choice(lines)
        line["scores"]["saliency"]["sparseness"] = rng.choice(WEIRD)
        samples_path(path).write_bytes(gzip.compress("".join(json.dumps(x) + "\n" for x in lines).encode()))
    else:  # the samples or maps file broken
        path.write_text(json.dumps(doc))
        target = rng.choice([samples_path(path), path.with_name(maps_path(base).name)])
        target.write_bytes(rng.choice([b"", b"\x1f\x8b\x08\x00garbage", gzip.compress(b"[" * 10000),
                                       gzip.compress(b'{"sample_id": "x"}\n')]))
    return path


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    base_dir = tmp_path_factory.mktemp("fuzz")
    root = base_dir / "results"
    rng_np = np.random.default_rng(SEED)
    scores = {"saliency": {"sparseness": rng_np.normal(0.5, 0.1, 8), "complexity": rng_np.normal(3, 0.1, 8)}}
    base = write_synthetic(root, "ce", scores)
    write_synthetic(root, "supcon", {m: {k: v + 0.1 for k, v in d.items()} for m, d in scores.items()})
    rng = random.Random(SEED)
    for i in range(N_MUTANTS):
        write_mutant(root, i, base, rng)
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*.json"))
    return base_dir, names


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.timeout(120)
def test_leaderboard_survives_mutated_results(fuzzed: tuple[Path, list[str]],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    base_dir, names = fuzzed
    root, out = base_dir / "results", base_dir / "out"
    before = files(base_dir)
    with pytest.raises(SystemExit) as e:
        main(["leaderboard", str(root), "--out", str(out), "--quiet"])
    stdout, err = capsys.readouterr()
    assert e.value.code == 0, err
    assert "Traceback" not in stdout + err
    after = files(base_dir)
    assert {k: v for k, v in after.items() if not k.startswith("out/")} == before, \
        "nothing written outside --out, nothing changed in the results folder"
    assert all((out / k[len("out/"):]).resolve().is_relative_to(out.resolve()) for k in after if k.startswith("out/"))
    lines = err.strip().splitlines()
    listed = [line[2:].split(": ", 1)[0] for line in lines[1:]]
    assert all(line.startswith("  ") and ": " in line for line in lines[1:]), "one line per skipped file"
    board = json.loads((out / "leaderboard.json").read_text())
    ranked = {r["file"] for r in board["rows"]}
    assert sorted(ranked | set(listed)) == names and not ranked & set(listed), "every file ranked or listed, once"
    assert lines[0].startswith(f"skipped {len(listed)} of {len(names)} result file(s)")
    assert 2 <= len(ranked) < len(names) and len(listed) >= N_MUTANTS // 2


def test_strict_fuzzed_folder_is_one_error_line(fuzzed: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str],
                                                tmp_path: Path) -> None:
    base_dir, names = fuzzed
    with pytest.raises(SystemExit) as e:
        main(["leaderboard", str(base_dir / "results"), "--out", str(tmp_path / "lb"), "--strict"])
    _, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert e.value.code == 1 and "Traceback" not in err and not (tmp_path / "lb").exists()
    assert all(line.startswith("invalid ") for line in lines[:-1])
    assert lines[-1].startswith(f"sclzoo: result error: {len(lines) - 1} of {len(names)} result file(s)")

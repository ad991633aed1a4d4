"""The command line answers instantly: help and ``ls`` load no torch (evaluator/listing.py), ``import sclzoo`` is
light, and the stored ``ls`` rows equal the registries."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sclzoo.evaluator.listing import KINDS, STORED_KINDS, live_rows, rows, snapshot_rows

HEAVY = ("torch", "timm", "torchvision", "captum", "onnxruntime")

# Runs in a fresh interpreter (this test process has torch loaded already): every help text and every ls.
_PROBE = """
import json, sys
import sclzoo
assert not [m for m in HEAVY if m in sys.modules], "import sclzoo"
from click.testing import CliRunner
from sclzoo.evaluator.cli import cli
calls = [["--help"], *([name, "--help"] for name in sorted(cli.commands)),
         *(["ls", kind, *flag] for kind in KINDS for flag in ([], ["--json"]))]
for args in calls:
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, (args, res.output)
    loaded = [m for m in HEAVY if m in sys.modules]
    assert not loaded, f"sclzoo {' '.join(args)} imported {loaded}"
print(json.dumps(len(calls)))
"""


@pytest.mark.integration  # the command line in a fresh interpreter
def test_help_and_ls_import_no_torch() -> None:
    code = f"HEAVY = {HEAVY!r}\nKINDS = {KINDS!r}\n{_PROBE}"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads(res.stdout) > 2 * len(KINDS)


def test_stored_rows_are_current() -> None:
    stored = snapshot_rows()
    assert stored is not None, ("evaluator/listing.json is out of date (a registry's source changed); refresh it "
                                "with `make listing`")
    for kind in STORED_KINDS:
        assert stored[kind] == live_rows(kind), f"stored {kind} rows differ from the registry; run `make listing`"


@pytest.mark.parametrize("broken", ["", "{", "[]", '{"version": 2, "sources": {}, "rows": {}}',
                                    '{"version": 2, "sources": {"sclzoo": {"sha256": "0", "code_sha256": "0"}}, '
                                    '"rows": {}}'])
def test_a_broken_or_stale_listing_falls_back_to_the_registries(tmp_path: Path, broken: str) -> None:
    bad = tmp_path / "listing.json"
    bad.write_text(broken)
    assert snapshot_rows(bad) is None


def test_a_listing_edited_by_hand_is_not_trusted(tmp_path: Path) -> None:
    from sclzoo.evaluator.listing import SNAPSHOT

    doc = json.loads(SNAPSHOT.read_text())
    doc["sources"]["sclzoo.evaluator.metrics"] = {"sha256": "0" * 64, "code_sha256": "0" * 64}
    edited = tmp_path / "listing.json"
    edited.write_text(json.dumps(doc))
    assert snapshot_rows(edited) is None
    doc = json.loads(SNAPSHOT.read_text())
    doc["rows"]["metrics"] = [{"name": ["not", "a", "scalar"]}]
    edited.write_text(json.dumps(doc))
    assert snapshot_rows(edited) is None


def test_models_rows_are_read_live() -> None:
    assert rows("models") == live_rows("models")
    assert {r["alias"] for r in rows("models")} >= {"ce-resnet8-mnist", "supcon-resnet8-mnist"}


@pytest.mark.integration  # two fresh interpreters importing timm
def test_timm_knows_the_zoo_after_import_sclzoo_in_either_order() -> None:
    for first, second in (("sclzoo", "timm"), ("timm", "sclzoo")):
        code = (f"import {first}, {second}, sys\n"
                "m = timm.create_model('resnet8_cifar', in_chans=1, num_classes=10)\n"
                "print(type(m).__name__)")
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0 and res.stdout.strip() == "CifarResNet", res.stderr[-2000:]

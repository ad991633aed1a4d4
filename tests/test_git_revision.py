"""The git revision recorded in results and training records: ``-dirty`` only for modified tracked source files."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from sclzoo.zoo.export import git_revision

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "commit.gpgsign=false"]


def _git(root: Path, *args: str) -> str:
    return subprocess.run([*GIT, *args], cwd=root, check=True, capture_output=True, text=True).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_only_modified_tracked_source_files_make_a_revision_dirty(tmp_path: Path) -> None:
    for rel in ("evaluator/api.py", "leaderboard/LEADERBOARD.md", "zoo/models/m/config.json", "README.md"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("v1\n")
    (tmp_path / ".gitignore").write_text("build/\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-q", "-m", "init")
    head = _git(tmp_path, "rev-parse", "HEAD")
    assert git_revision(tmp_path) == head

    (tmp_path / "notes.txt").write_text("untracked\n")  # untracked: not dirty
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "x.py").write_text("ignored\n")  # ignored: not dirty
    for rel in ("leaderboard/LEADERBOARD.md", "zoo/models/m/config.json", "README.md"):  # outputs and prose
        (tmp_path / rel).write_text("v2\n")
    assert git_revision(tmp_path) == head

    (tmp_path / "evaluator" / "api.py").write_text("v2\n")
    assert git_revision(tmp_path) == head + "-dirty"
    assert git_revision(tmp_path / "evaluator" / "missing") == "unknown"

"""The README's "Evaluate your own model" Python example runs verbatim."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_nn_module_example_runs_verbatim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    text = README.read_text()
    section = text[text.index("## Evaluate your own model"):text.index("## What sclzoo trusts")]
    (code,) = [b for b in re.findall(r"```python\n(.*?)```", section, re.S) if "nn.Module" in b]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})  # noqa: S102 - the project's own README
    out = capsys.readouterr().out
    assert "sparseness" in out and "deletion_auc" in out
    (doc,) = [json.loads(p.read_text()) for p in (tmp_path / "results").rglob("*.json")]
    assert doc["model"]["id"] == "me/my-net" and doc["model"]["source"] == "python"

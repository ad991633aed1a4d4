"""The rows ``sclzoo ls`` prints, without importing torch.

The objectives, methods, metrics, datasets and architectures are registered in modules that need torch, timm
or captum, which take seconds to import. Their rows are therefore kept in ``listing.json`` beside this file,
together with two hashes of every sclzoo source file that computing them imported: of its bytes, and of its
code without comments and module docstring (:func:`code_sha256`). :func:`rows` uses the stored rows only while
every such file has the same code, and otherwise computes them live (slower, never stale). After changing a
registry, refresh the file with ``make listing`` (``python -m sclzoo.evaluator.listing``); tests/test_fast_cli.py
fails while it is out of date. ``models`` is read live: it comes from ``zoo/registry.toml`` and the bundled repos'
``training.json``, which this module reads without torch.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tokenize
from pathlib import Path
from typing import Any

__all__ = ["KINDS", "SNAPSHOT", "live_rows", "rows", "snapshot_rows", "write_snapshot"]

KINDS = ("models", "objectives", "methods", "metrics", "datasets", "architectures")
STORED_KINDS = KINDS[1:]
SNAPSHOT = Path(__file__).with_name("listing.json")
SNAPSHOT_VERSION = 2
MAX_SNAPSHOT_BYTES = 1 << 20
# Packages whose folders the stored module paths are relative to (pyproject.toml maps each to its own folder).
_ROOTS = ("sclzoo.evaluator", "sclzoo.zoo", "sclzoo.model_cards", "sclzoo")

Row = dict[str, Any]


def live_rows(what: str) -> list[Row]:
    """The rows of one registry, computed from the registry itself (imports torch for all kinds but models)."""
    if what == "models":
        return _model_rows()
    if what == "objectives":
        from sclzoo.zoo.losses import OBJECTIVES

        return [{"name": n, "contrastive": o.contrastive, "variant": o.variant, "defaults": json.dumps(o.defaults)}
                for n, o in OBJECTIVES.items()]
    if what == "methods":
        from sclzoo.evaluator.attributions import METHODS

        return [{"name": n, "captum": s.captum, "defaults": json.dumps(s.defaults, default=str),
                 "description": s.description} for n, s in METHODS.items()]
    if what == "metrics":
        from sclzoo.evaluator.metrics import METRICS, metric_cost

        out = []
        for n, s in METRICS.items():
            f, e = metric_cost(n)
            out.append({"name": n, "family": s.family, "better": "higher" if s.higher_is_better else "lower",
                        "version": s.version, "cost": f"{f}F+{e}E", "defaults": json.dumps(s.defaults)})
        return out
    if what == "datasets":
        from sclzoo.zoo.data import DATASETS

        out = [{"name": n, "description": (fn.__doc__ or "").strip().splitlines()[0]} for n, fn in DATASETS.items()]
        out.append({"name": "imagefolder:PATH", "description": "your images: PATH/<class>/*.png (flat; --split all "
                    "= the whole folder, default) or PATH/{train,val,test}/<class>/*; RGB or grey, any size "
                    "(resized to the model's input)"})
        return out
    if what == "architectures":
        from sclzoo.zoo.models import ARCHITECTURES

        return [{"name": n, **{k: str(v) for k, v in a.items()}} for n, a in ARCHITECTURES.items()]
    raise ValueError(f"unknown registry {what!r}; one of {', '.join(KINDS)}")


def _model_rows() -> list[Row]:
    from sclzoo.zoo.hub import ZOO_DIR, registry_entries

    out = []
    for e in registry_entries():
        folder = ZOO_DIR / e["bundled"] if e.get("bundled") else None
        acc = ""
        if folder is not None and (folder / "training.json").is_file():
            acc = f"{json.loads((folder / 'training.json').read_text())['accuracy']['torch']['test']:.4f}"
        out.append({"alias": e.get("alias", ""), "id": e["id"], "revision": e.get("revision", "main"),
                    "objective": e.get("objective", ""), "test_acc": acc,
                    "bundled": "yes" if folder is not None and folder.is_dir() else "no",
                    # the id results record when the bundled copy is evaluated (the Hub id when loaded from the Hub;
                    # the leaderboard shows both as one row, docs/artifacts.md#weights-identity)
                    "results_as": f"local/{folder.name}" if folder is not None and folder.is_dir() else e["id"]})
    return out


def rows(what: str) -> list[Row]:
    """The rows of one registry: the stored ones while their sources are unchanged, else :func:`live_rows`."""
    if what in STORED_KINDS:
        stored = snapshot_rows()
        if stored is not None:
            return stored[what]
    return live_rows(what)


def _module_file(module: str) -> Path | None:
    """The source file of a sclzoo module, found from its package's folder without importing the module."""
    import importlib

    root = next((r for r in _ROOTS if module == r or module.startswith(r + ".")), None)
    if root is None:
        return None
    try:
        base = Path(importlib.import_module(root).__file__ or "").parent  # the roots import nothing heavy
    except ImportError:
        return None
    parts = module[len(root):].lstrip(".").split(".") if module != root else []
    if not parts:
        return base / "__init__.py"
    package = base.joinpath(*parts) / "__init__.py"
    return package if package.is_file() else base.joinpath(*parts[:-1]) / f"{parts[-1]}.py"


def _file_sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def code_sha256(path: Path) -> str | None:
    """sha256 of a Python file's tokens without comments, blank lines and the module docstring (other docstrings
    count: datasets are described by their loaders'); None when it cannot be read or tokenized."""
    h = hashlib.sha256()
    first = True  # no statement seen yet: a string here is the module docstring
    try:
        for tok in tokenize.tokenize(io.BytesIO(path.read_bytes()).readline):
            if tok.type in (tokenize.COMMENT, tokenize.NL, tokenize.ENCODING):
                continue
            if first and tok.type in (tokenize.STRING, tokenize.NEWLINE):
                continue
            first = False
            h.update(f"{tok.type}\0{tok.string}\0".encode())
    except (OSError, SyntaxError, tokenize.TokenError):
        return None
    return h.hexdigest()


def _same_code(path: Path | None, recorded: Any) -> bool:
    """Whether ``path`` holds the code ``recorded`` (``{"sha256", "code_sha256"}``) was taken from: the same bytes
    (cheap), or else the same code once comments are set aside."""
    if path is None or not isinstance(recorded, dict):
        return False
    raw, code = recorded.get("sha256"), recorded.get("code_sha256")
    if not isinstance(raw, str) or not isinstance(code, str):
        return False
    return _file_sha256(path) == raw or code_sha256(path) == code


def _is_row_list(v: Any) -> bool:
    scalar = (str, int, float, bool, type(None))
    return isinstance(v, list) and all(
        isinstance(r, dict) and r and all(isinstance(k, str) and isinstance(x, scalar) for k, x in r.items())
        for r in v)


def snapshot_rows(path: Path = SNAPSHOT) -> dict[str, list[Row]] | None:
    """The stored rows, or None when the file is missing, malformed, or any source it was computed from changed.

    The file is read as untrusted input: size-limited, every field type-checked.
    """
    try:
        if path.stat().st_size > MAX_SNAPSHOT_BYTES:
            return None
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or doc.get("version") != SNAPSHOT_VERSION:
        return None
    sources, stored = doc.get("sources"), doc.get("rows")
    if not isinstance(sources, dict) or not sources or not isinstance(stored, dict):
        return None
    if set(stored) != set(STORED_KINDS) or not all(_is_row_list(stored[k]) and stored[k] for k in STORED_KINDS):
        return None
    for module, recorded in sources.items():
        if not isinstance(module, str) or not _same_code(_module_file(module), recorded):
            return None
    return stored


def snapshot_document() -> dict[str, Any]:
    """What :func:`write_snapshot` stores: the live rows and the sclzoo sources loaded to compute them."""
    stored = {k: live_rows(k) for k in STORED_KINDS}
    bad = [k for k, v in stored.items() if not _is_row_list(v)]
    if bad:
        raise TypeError(f"rows of {bad} are not flat JSON records; only str, int, float, bool and None values "
                        "can be stored")
    # This module is left out (its live_rows is compared with the stored rows by tests/test_fast_cli.py), so
    # that editing the live models rows does not retire the stored ones.
    loaded = [n for n in sorted(sys.modules) if (n == "sclzoo" or n.startswith("sclzoo."))
              and n != "sclzoo.evaluator.listing" and getattr(sys.modules[n], "__file__", None)]
    sources = {}
    for name in loaded:
        f = _module_file(name)
        if f is not None and f.is_file():
            sources[name] = {"sha256": _file_sha256(f), "code_sha256": code_sha256(f)}
    return {"version": SNAPSHOT_VERSION, "sources": sources, "rows": stored}


def write_snapshot(path: Path = SNAPSHOT) -> Path:
    """Recomputes the stored rows and writes ``listing.json`` (run in a fresh process: ``python -m ...``)."""
    blob = json.dumps(snapshot_document(), indent=1, ensure_ascii=False) + "\n"
    path.write_text(blob, encoding="utf-8")
    return path


if __name__ == "__main__":
    print(f"wrote {write_snapshot()}")

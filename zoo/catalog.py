"""The model registry file (``zoo/registry.toml``): which models the leaderboard tracks, read in one place.

Each ``[[models]]`` table names a Hub repo (``id``), the tracked ``revision``, an optional short ``alias`` that
``--model`` accepts, a ``name`` and ``display_name`` for tables, the ``objective`` it was trained with, and an
optional ``bundled`` copy shipped in this repository (relative to the registry file's folder). This module is
light (no torch), so the CLI can list models instantly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sclzoo.errors import ConfigError
from sclzoo.tomlfile import read_toml

__all__ = ["REGISTRY_FILE", "RegistryEntry", "load_registry"]

REGISTRY_FILE = Path(__file__).resolve().parent / "registry.toml"
_TEXT_KEYS = ("revision", "alias", "objective", "name", "display_name")


@dataclass(frozen=True)
class RegistryEntry:
    """One tracked model.

    Attributes:
        id: Hub repo id ``org/name``.
        revision: Tracked branch, tag or commit.
        bundled: Absolute path of the bundled copy (relative paths in the file are relative to the registry's
            folder), or None.
        alias: Short name, if any.
        objective: Objective named in the registry (informational; the result records the model's own).
        name: The model's name (the bundled folder's name for zoo models).
        display_name: Name shown in tables.
    """

    id: str
    revision: str = "main"
    bundled: Path | None = None
    alias: str = ""
    objective: str = ""
    name: str = ""
    display_name: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The entry as the file's table: ``bundled`` relative to the zoo folder when it lies inside it."""
        out: dict[str, Any] = {"id": self.id, **{k: getattr(self, k) for k in _TEXT_KEYS if getattr(self, k)}}
        out.setdefault("revision", self.revision)
        if self.bundled is not None:
            try:
                out["bundled"] = self.bundled.relative_to(REGISTRY_FILE.parent).as_posix()
            except ValueError:
                out["bundled"] = str(self.bundled)
        return out


def load_registry(path: str | Path | None = None, missing_ok: bool = False) -> list[RegistryEntry]:
    """Reads a registry TOML file (``[[models]]`` tables with at least ``id``).

    Args:
        path: The file; None = ``zoo/registry.toml``.
        missing_ok: Return an empty list when the file does not exist (instead of raising).

    Raises:
        ConfigError: the file is missing (unless ``missing_ok``), not TOML, or an entry is malformed.
    """
    p = Path(path) if path is not None else REGISTRY_FILE
    if missing_ok and not p.is_file():
        return []
    data = read_toml(p, "registry file", "; pass --registry PATH (e.g. zoo/registry.toml)")
    models = data.get("models", [])
    if not isinstance(models, list):
        raise ConfigError(f"registry file {str(p)!r}: `models` must be an array of tables ([[models]])")
    out = []
    for i, m in enumerate(models):
        if not isinstance(m, dict) or not isinstance(m.get("id"), str) or not m["id"]:
            raise ConfigError(f"registry file {str(p)!r}: entry {i + 1} has no `id` (the Hub repo org/name); add it")
        for key in (*_TEXT_KEYS, "bundled"):
            if key in m and not isinstance(m[key], str):
                raise ConfigError(f"registry file {str(p)!r}: entry {i + 1} ({m['id']}): `{key}` must be a string, "
                                  f"got {type(m[key]).__name__}")
        bundled = m.get("bundled")
        out.append(RegistryEntry(id=m["id"], bundled=(p.parent / bundled).resolve() if bundled else None,
                                 **{k: m[k] for k in _TEXT_KEYS if k in m}))
    return out

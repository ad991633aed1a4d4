"""Reading the project's TOML files (recipes, evaluation configs, the model registry) with one-line errors."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from sclzoo.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["read_toml"]


def read_toml(path: str | Path, what: str, missing_hint: str = "") -> dict[str, Any]:
    """Parses a TOML file.

    Args:
        path: The file.
        what: What the file is, for messages ("recipe file", "config file", "registry file").
        missing_hint: Appended to the message when the file does not exist (e.g. "; pass --config …").

    Raises:
        ConfigError: the file is missing or is not valid TOML (the message names the file).
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} {str(p)!r} does not exist{missing_hint}")
    try:
        return tomllib.loads(p.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{what} {str(p)!r} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{what} {str(p)!r} is not valid TOML: {e}") from None

"""Error types raised by sclzoo.

Every error subclasses :class:`SclzooError` *and* the builtin that describes it best, so callers can catch
either. Messages name the bad value and say what to do next; the CLI prints them as one line
(set ``SCLZOO_DEBUG=1`` for the traceback).
"""

from __future__ import annotations


class SclzooError(Exception):
    """Base class of every error sclzoo raises on purpose."""


class UnknownNameError(SclzooError, KeyError):
    """A registry lookup (model, objective, method, metric, dataset) found no such name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ConfigError(SclzooError, ValueError):
    """A recipe, evaluation config or option value is invalid."""


class ModelNotFoundError(SclzooError, FileNotFoundError):
    """A ``--model`` reference resolves to nothing (no folder, no alias, no Hub repo)."""


class ModelLoadError(SclzooError, ValueError):
    """A model repo exists but cannot be loaded (corrupt file, hash mismatch, wrong config, pickle only)."""


class DatasetError(SclzooError, RuntimeError):
    """A dataset is unknown, absent, or cannot be read."""


class HubError(SclzooError, ConnectionError):
    """The Hub endpoint could not be reached or refused a request."""


class ResultError(SclzooError, ValueError):
    """A result file is invalid or cannot be written."""


def transport_errors() -> tuple[type[BaseException], ...]:
    """Connection-level exceptions (refused, reset, DNS, timed out) of the HTTP client huggingface_hub uses.

    httpx's (huggingface_hub 1.x) and httpx2's (2.x) errors do not subclass OSError; requests' do. Only the
    clients that are installed are listed; importing them here is cheap once huggingface_hub is loaded.
    """
    import importlib

    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"),
                         ("requests", "ConnectionError"), ("requests", "Timeout")):
        try:
            errors.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(errors)

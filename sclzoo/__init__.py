"""sclzoo: matched CE / SupCon / SimCLR checkpoints and a reproducible evaluator of feature-attribution quality.

Importing sclzoo registers the zoo architectures in timm's registry, so ``timm.create_model("resnet8_cifar")`` and
``timm.create_model("hf-hub:org/name", pretrained=True)`` work for zoo models.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from sclzoo.threads import passive_openmp

passive_openmp()  # before torch loads OpenMP: idle workers sleep instead of spinning (sclzoo/threads.py)

from sclzoo.zoo import models as _models  # noqa: E402,F401  (registers the architectures in timm)

try:
    __version__ = metadata.version("sclzoo")
except metadata.PackageNotFoundError:  # pragma: no cover - running from a plain checkout
    __version__ = "0.0.0"

__all__ = ["evaluate", "load_model", "__version__"]


def evaluate(model: str, **kwargs: Any) -> Any:
    """Evaluates one model; see :func:`sclzoo.evaluator.api.evaluate`."""
    from sclzoo.evaluator.api import evaluate as _evaluate

    return _evaluate(model, **kwargs)


def load_model(ref: str, revision: str | None = None) -> Any:
    """Resolves (downloading if needed), verifies and loads a zoo classifier; returns a ``LoadedModel``."""
    from sclzoo.zoo.hub import load_model as _load
    from sclzoo.zoo.hub import resolve_model

    return _load(resolve_model(ref, revision))

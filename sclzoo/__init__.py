"""sclzoo: matched CE / SupCon / SimCLR checkpoints and a reproducible evaluator of feature-attribution quality.

Importing sclzoo is instant: it loads neither torch nor timm. The zoo architectures join timm's registry as soon
as timm is imported (at once when it already is), so after ``import sclzoo`` ``timm.create_model("resnet8_cifar")``
and ``timm.create_model("hf-hub:org/name", pretrained=True)`` work for zoo models, in either import order.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from importlib import metadata
from types import ModuleType
from typing import Any

from sclzoo.threads import passive_openmp

passive_openmp()  # before torch loads OpenMP: idle workers sleep instead of spinning (sclzoo/threads.py)

try:
    __version__ = metadata.version("sclzoo")
except metadata.PackageNotFoundError:  # pragma: no cover - running from a plain checkout
    __version__ = "0.0.0"

__all__ = ["evaluate", "meta_evaluate", "load_model", "__version__"]


def evaluate(model: Any, **kwargs: Any) -> Any:
    """Evaluates one model; see :func:`sclzoo.evaluator.api.evaluate`."""
    from sclzoo.evaluator.api import evaluate as _evaluate

    return _evaluate(model, **kwargs)


def meta_evaluate(model: Any, **kwargs: Any) -> Any:
    """How far each metric can be trusted on one model (MC, IAC, IEC); see
    :func:`sclzoo.evaluator.meta.meta_evaluate`."""
    from sclzoo.evaluator.meta import meta_evaluate as _meta_evaluate

    return _meta_evaluate(model, **kwargs)


def load_model(ref: str, revision: str | None = None) -> Any:
    """Resolves (downloading if needed), verifies and loads a zoo classifier; returns a ``LoadedModel``."""
    from sclzoo.zoo.hub import load_model as _load
    from sclzoo.zoo.hub import resolve_model

    return _load(resolve_model(ref, revision))


def _register_architectures() -> None:
    import sclzoo.zoo.models  # noqa: F401  (registers the architectures in timm)


class _AfterTimmImport(importlib.abc.MetaPathFinder):
    """Registers the zoo architectures right after ``timm`` itself has been imported (a post-import hook).

    When timm is looked up it asks the other finders for timm's spec and wraps that loader's ``exec_module``;
    the wrapped loader takes the hook off ``sys.meta_path`` when timm really executes, so it runs once.
    """

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != "timm":
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None) if finder is not self else None
            spec = find(fullname, path, target) if find is not None else None
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_timm = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            exec_timm(module)
            _register_architectures()

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


if "timm" in sys.modules:
    _register_architectures()
else:
    sys.meta_path.insert(0, _AfterTimmImport())

"""Shared fixtures: no network, Hub cache in a temp dir, small threads, the bundled zoo paths."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

# huggingface_hub reads these when it is first imported (sclzoo imports it through timm): set them before, so
# in-process Hub code can never reach a real endpoint or the user's cache.
if not os.environ.get("HF_ENDPOINT", "").startswith("http://127.0.0.1"):
    os.environ["HF_ENDPOINT"] = "http://127.0.0.1:9"  # discard port: nothing leaves the machine
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="sclzoo-test-hf-")
os.environ.pop("HF_HUB_CACHE", None)
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

import huggingface_hub.constants as hf_constants  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from helpers import REPO_ROOT  # noqa: E402

import sclzoo  # noqa: E402,F401  (registers the zoo architectures in timm)

ZOO_MODELS = REPO_ROOT / "zoo" / "models"
BUNDLED = {
    "ce": ZOO_MODELS / "resnet8_cifar.ce_mnist5k",
    "supcon": ZOO_MODELS / "resnet8_cifar.supcon_mnist5k",
    "simclr": ZOO_MODELS / "resnet8_cifar.simclr_mnist5k",
}


@pytest.fixture(autouse=True)
def _isolated_hub(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own Hugging Face cache and never talks to a real endpoint."""
    home = tmp_path_factory.mktemp("hf_home")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(hf_constants, "HF_HOME", str(home))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(home / "hub"))
    assert hf_constants.ENDPOINT.startswith("http://127.0.0.1"), hf_constants.ENDPOINT


@pytest.fixture(autouse=True, scope="session")
def _threads() -> None:
    torch.set_num_threads(min(2, torch.get_num_threads()))


class _Bundled(dict):  # type: ignore[type-arg]
    def __getitem__(self, key: str) -> Path:
        path: Path = super().__getitem__(key)
        if not (path / "config.json").is_file():
            pytest.fail(f"bundled zoo repo {path} is missing; run `make zoo`")
        return path


@pytest.fixture(scope="session")
def bundled() -> dict[str, Path]:
    """Folders of the bundled zoo repos (objective → path); using a missing one fails the test loudly."""
    return _Bundled(BUNDLED)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``): on 2 shared cores
    two OpenMP threads spin against each other (training ran 5× slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

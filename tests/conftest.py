"""Shared fixtures (no network, Hub cache in a temp dir, small threads, the bundled zoo paths) and the test tiers.

Tiers (markers registered in pyproject.toml, one Makefile target each; README "Development" says what they need):

- ``unit``: everything not marked otherwise (added here, so a new test lands in the fast tier); ``make test``.
- ``integration``: the command line end to end, the loopback Hub (olah), the browser, evaluation jobs,
  leaderboard updates; ``make test-integration``.
- ``reference``: agreement with the reference implementations (Quantus, captum); ``make test-reference``.
- ``slow``: minutes each (training, torchrun); ``make test-slow``. ``slow`` wins over a module's
  ``integration`` or ``reference`` mark, so the targets select ``integration and not slow`` and so on.

Each tier has a per-test timeout (``TIER_TIMEOUT_S``; pytest-timeout) unless a test sets its own with
``@pytest.mark.timeout``. With ``SCLZOO_NO_SKIPS=1`` (CI's ``.ci/run``) a skipped test fails, except a ``gpu``
test on a machine without CUDA and a test marked ``may_skip``.
"""

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
    two OpenMP threads spin against each other (measured in docs/testing.md#threads-in-tests)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------------- test tiers
TIERS = ("unit", "integration", "reference", "slow")
#: Per-test limit (setup + call + teardown, a module fixture's setup included) in seconds. On an idle 2-core
#: machine the slowest unit test took 4 s; at a load average of 10 on 2 cores the evaluation run by the module
#: fixture of tests/test_results.py (3 s idle) took over 60 s, hence 120. The integration and slow limits leave
#: room for the tests' own subprocess timeouts (tests/test_hub.py waits up to 300 s for an evaluation,
#: tests/test_eval_jobs.py up to 600 s) and for creating .venv-olah on first use.
TIER_TIMEOUT_S = {"unit": 120, "integration": 600, "reference": 120, "slow": 900}


def tier_of(item: pytest.Item) -> str:
    """The tier of a collected test: ``slow`` if marked slow, else its ``integration`` or ``reference`` mark, else
    ``unit``. A test marked with two of unit, integration and reference is an error."""
    marks = {m.name for m in item.iter_markers() if m.name in TIERS}
    if "slow" in marks:
        return "slow"
    if len(marks) > 1:
        raise pytest.UsageError(f"{item.nodeid} is marked {' and '.join(sorted(marks))}; a test has one tier "
                                f"of {', '.join(TIERS)} (slow may be added to any)")
    return marks.pop() if marks else "unit"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        tier = tier_of(item)
        if tier == "unit":
            item.add_marker(pytest.mark.unit)
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(TIER_TIMEOUT_S[tier]))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Under ``SCLZOO_NO_SKIPS=1`` a skip is a failure naming the skip's reason (CI must not pass by skipping the
    browser, the Hub, Quantus or git)."""
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    if (os.environ.get("SCLZOO_NO_SKIPS") != "1" or not rep.skipped or hasattr(rep, "wasxfail")
            or item.get_closest_marker("gpu") is not None or item.get_closest_marker("may_skip") is not None):
        return
    reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
    rep.outcome = "failed"
    rep.longrepr = f"skipped where SCLZOO_NO_SKIPS=1 allows no skip: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    """Under ``SCLZOO_NO_SKIPS=1`` a module that skips as a whole (e.g. tests/test_agreement.py without Quantus
    0.6.0) is a collection error."""
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    if os.environ.get("SCLZOO_NO_SKIPS") == "1" and rep.skipped:
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.outcome = "failed"
        rep.longrepr = f"{collector.nodeid} skipped where SCLZOO_NO_SKIPS=1 allows no skip: {reason}"

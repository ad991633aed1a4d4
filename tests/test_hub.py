"""The Hub half end to end, against a real server on loopback: publish → olah → download → evaluate / timm.

A session fixture starts olah (git mirrors, offline) behind the upload stand-in of ``tests/hub_server.py``; every
request goes to 127.0.0.1. In-process tests patch ``huggingface_hub.constants`` (read at import, so setting
``HF_ENDPOINT`` afterwards would not move the client); the evaluate/offline tests run the CLI in a subprocess
with the environment variables instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import REPO_ROOT, png_folder, sha256_tree
from hub_server import HubServer, free_port
from huggingface_hub import HfApi

import sclzoo
from sclzoo.errors import ConfigError, HubError, ModelLoadError, ModelNotFoundError
from sclzoo.evaluator.cli import main
from sclzoo.zoo.hub import resolve_model
from sclzoo.zoo.publish import PublishResult, publish

CE_REPO = "sclzoo-test/ce-mnist"
EVAL_ARGS = ["--n-samples", "2", "--methods", "saliency", "--metrics", "sparseness,deletion_auc", "--quiet"]

# Tier (tests/conftest.py): needs olah in .venv-olah (`make test-integration` builds it; the `hub` fixture
# creates it when missing, which needs git and the package index) and a free loopback port.
pytestmark = pytest.mark.integration


# ------------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    """olah + the upload stand-in on 127.0.0.1 for the whole session (creates .venv-olah if missing)."""
    server = HubServer(tmp_path_factory.mktemp("hub")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def hub_env(hub: HubServer, monkeypatch: pytest.MonkeyPatch) -> HubServer:
    """Points this process's huggingface_hub (and HF_* variables for subprocesses) at the loopback Hub."""
    _patch_endpoint(monkeypatch, hub.url)
    return hub


def _patch_endpoint(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    from huggingface_hub import constants

    # conftest set HF_HOME/HF_HUB_CACHE for this test, but constants kept the import-time paths: follow the env,
    # so neither the user's cache nor the user's saved token is touched
    home, cache = Path(os.environ["HF_HOME"]), Path(os.environ["HF_HUB_CACHE"])
    monkeypatch.setenv("HF_ENDPOINT", url)
    for var in ("NO_PROXY", "no_proxy"):  # loopback never through a proxy
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_ASSETS_CACHE", str(home / "assets"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)


@pytest.fixture(scope="session")
def ce_folder(bundled: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the bundled CE zoo repo (what `sclzoo export` wrote)."""
    return Path(shutil.copytree(bundled["ce"], tmp_path_factory.mktemp("export") / "ce"))


@pytest.fixture(scope="session")
def ce_published(hub: HubServer, ce_folder: Path) -> PublishResult:
    """The CE repo published once to the loopback Hub as sclzoo-test/ce-mnist, tagged v1."""
    return publish(ce_folder, CE_REPO, tag="v1", endpoint=hub.url, message="test publish")


def _sub_env(hf_home: Path, endpoint: str, offline: bool = False) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_HOME=str(hf_home), HF_HUB_CACHE=str(hf_home / "hub"), HF_ENDPOINT=endpoint,
               HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_TELEMETRY="1", OMP_NUM_THREADS="2",
               NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return env


def _sclzoo(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "sclzoo", *args], env=env, cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _result_json(out: Path) -> dict[str, Any]:
    files = [f for f in out.rglob("*.json") if not any(p.startswith(".") for p in f.relative_to(out).parts)]
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


def _empty(folder: Path) -> bool:
    return not folder.exists() or not any(folder.iterdir())


# ---------------------------------------------------------------------------------------------------- round trip
def test_publish_round_trip_is_byte_identical(hub_env: HubServer, ce_folder: Path, ce_published: PublishResult,
                                              tmp_path: Path) -> None:
    from huggingface_hub import snapshot_download

    assert len(ce_published.commit_sha) == 40
    assert ce_published.url == f"{hub_env.url}/{CE_REPO}"
    local = Path(snapshot_download(CE_REPO, revision="main", cache_dir=tmp_path / "cache"))
    assert local.name == ce_published.commit_sha
    assert sha256_tree(local) == sha256_tree(ce_folder)
    api = HfApi(endpoint=hub_env.url, token=False)
    assert api.model_info(CE_REPO, revision="main").sha == ce_published.commit_sha
    assert api.model_info(CE_REPO, revision="v1").sha == ce_published.commit_sha
    tagged = Path(snapshot_download(CE_REPO, revision="v1", cache_dir=tmp_path / "cache2"))
    assert tagged.name == ce_published.commit_sha


def test_evaluate_from_hub_then_offline_from_cache(hub: HubServer, ce_published: PublishResult,
                                                    tmp_path: Path) -> None:
    home = tmp_path / "hf_home"
    online = _sclzoo(["evaluate", "--model", CE_REPO, *EVAL_ARGS, "--out", str(tmp_path / "out")],
                     _sub_env(home, hub.url), tmp_path)
    stdout, stderr = online.communicate(timeout=120)
    assert online.returncode == 0, stderr
    model = _result_json(tmp_path / "out")["model"]
    assert model["commit_sha"] == ce_published.commit_sha
    assert model["source"] == "hub"
    assert model["id"] == CE_REPO
    # offline, with the endpoint closed for good measure: everything must come from HF_HOME's cache
    dead = f"http://127.0.0.1:{free_port()}"
    offline = _sclzoo(["evaluate", "--model", CE_REPO, *EVAL_ARGS, "--out", str(tmp_path / "out2")],
                      _sub_env(home, dead, offline=True), tmp_path)
    stdout, stderr = offline.communicate(timeout=120)
    assert offline.returncode == 0, stderr
    again = _result_json(tmp_path / "out2")
    assert again["model"]["commit_sha"] == ce_published.commit_sha
    assert again["model"]["source"] == "hub"


def test_timm_hf_hub_loads_the_same_classifier(hub_env: HubServer, ce_published: PublishResult) -> None:
    import timm

    from sclzoo.zoo.data import load_dataset

    images = load_dataset("mnist5k", "test").images[:64]
    via_timm = timm.create_model(f"hf-hub:{CE_REPO}", pretrained=True).eval()
    via_sclzoo = sclzoo.load_model(CE_REPO)
    assert via_sclzoo.resolved.commit_sha == ce_published.commit_sha
    with torch.no_grad():
        a, b = via_timm(images), via_sclzoo.model(images)
    assert torch.equal(a, b)
    assert (a.argmax(1) == load_dataset("mnist5k", "test").labels[:64]).float().mean() > 0.8


# ---------------------------------------------------------------------------------------------------- bad inputs
def _without_config(repo: Path) -> None:
    (repo / "config.json").unlink()


def _truncated_weights(repo: Path) -> None:
    w = repo / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    _rehash(repo)  # hashes match the truncated file, so the safetensors reader itself must catch it


def _hash_mismatch(repo: Path) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(repo / "model.safetensors"))
    state["fc.bias"] = state["fc.bias"] + 1.0
    save_file(state, str(repo / "model.safetensors"), metadata={"format": "pt"})  # files_sha256 left as it was


def _num_classes_mismatch(repo: Path) -> None:
    cfg = json.loads((repo / "config.json").read_text())
    cfg["num_classes"] = cfg["pretrained_cfg"]["num_classes"] = 5
    (repo / "config.json").write_text(json.dumps(cfg, indent=2))


def _pickle_only(repo: Path) -> None:
    (repo / "model.safetensors").rename(repo / "pytorch_model.bin")
    cfg = json.loads((repo / "config.json").read_text())
    cfg["sclzoo"]["files_sha256"].pop("model.safetensors")
    (repo / "config.json").write_text(json.dumps(cfg, indent=2))


def _rehash(repo: Path) -> None:
    cfg = json.loads((repo / "config.json").read_text())
    cfg["sclzoo"]["files_sha256"] = {n: hashlib.sha256((repo / n).read_bytes()).hexdigest()
                                     for n in cfg["sclzoo"]["files_sha256"]}
    (repo / "config.json").write_text(json.dumps(cfg, indent=2))


BROKEN: dict[str, tuple[Callable[[Path], None], type[Exception], str]] = {
    "missing-config": (_without_config, ModelLoadError, r"has no config\.json"),
    "truncated": (_truncated_weights, ModelLoadError, r"corrupt or truncated"),
    "hash-mismatch": (_hash_mismatch, ModelLoadError, r"model\.safetensors .* does not match its sha256"),
    "num-classes": (_num_classes_mismatch, ModelLoadError, r"do not fit resnet8_cifar with num_classes=5"),
    "pickle-only": (_pickle_only, ModelLoadError, r"only pickle weights \['pytorch_model\.bin'\]"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_hub_repo_fails_cleanly(case: str, hub_env: HubServer, ce_folder: Path, tmp_path: Path) -> None:
    build, error, match = BROKEN[case]
    repo = Path(shutil.copytree(ce_folder, tmp_path / "repo"))
    build(repo)
    hub_env.mirror.commit_folder(f"sclzoo-test/broken-{case}", repo)  # straight to git: publish would refuse it
    out = tmp_path / "results"
    with pytest.raises(error, match=match) as e:
        sclzoo.evaluate(f"sclzoo-test/broken-{case}", out=out, n_samples=2, methods=["saliency"],
                        metrics=["sparseness"], progress=False)
    assert "\n" not in str(e.value)
    assert _empty(out)


@pytest.mark.parametrize(("ref", "revision", "error", "match"), [
    ("sclzoo-test/no-such-model", None, ModelNotFoundError, r"no model 'sclzoo-test/no-such-model' on the Hub"),
    (CE_REPO, "no-such-tag", ModelNotFoundError, r"revision 'no-such-tag' of 'sclzoo-test/ce-mnist' does not exist"),
])
def test_unknown_repo_or_revision(ref: str, revision: str | None, error: type[Exception], match: str,
                                  hub_env: HubServer, ce_published: PublishResult, tmp_path: Path) -> None:
    with pytest.raises(error, match=match) as e:
        sclzoo.evaluate(ref, revision=revision, out=tmp_path / "results", n_samples=2, methods=["saliency"],
                        metrics=["sparseness"], progress=False)
    assert "\n" not in str(e.value)
    assert _empty(tmp_path / "results")


def test_revoked_token_is_a_token_error_not_a_network_error(hub_env: HubServer, ce_published: PublishResult,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    assert hub_env.standin is not None
    monkeypatch.setenv("HF_TOKEN", "hf_revoked")
    monkeypatch.setattr(hub_env.standin, "invalid_tokens", {"hf_revoked"})
    with pytest.raises(HubError, match=r"refused access to 'sclzoo-test/ce-mnist' \(HTTP 401\).*HF_TOKEN"):
        sclzoo.load_model(CE_REPO)


def test_unreachable_endpoint_suggests_offline_mode(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _patch_endpoint(monkeypatch, f"http://127.0.0.1:{free_port()}")
    with pytest.raises(HubError, match=r"cannot reach the Hub at http://127\.0\.0\.1:\d+.*HF_HUB_OFFLINE=1"):
        sclzoo.load_model(CE_REPO)


def test_cli_errors_are_one_line_and_write_nothing(hub: HubServer, ce_published: PublishResult,
                                                   tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    runs = {  # both subprocesses at once: each pays the torch import
        "unknown": (_sclzoo(["evaluate", "--model", "sclzoo-test/no-such-model", *EVAL_ARGS, "--out",
                             str(tmp_path / "out1")], _sub_env(tmp_path / "h1", hub.url), tmp_path),
                    r"^sclzoo: model not found: no model 'sclzoo-test/no-such-model'"),
        "unreachable": (_sclzoo(["evaluate", "--model", CE_REPO, *EVAL_ARGS, "--out", str(tmp_path / "out2")],
                                _sub_env(tmp_path / "h2", dead), tmp_path),
                        r"^sclzoo: hub unreachable: cannot reach the Hub .*HF_HUB_OFFLINE=1"),
    }
    for name, (proc, pattern) in runs.items():
        stdout, stderr = proc.communicate(timeout=120)
        lines = [ln for ln in stderr.splitlines() if ln.strip()]
        assert proc.returncode == 1, (name, stderr)
        assert len(lines) == 1, (name, stderr)
        assert re.match(pattern, lines[0]), (name, lines[0])
    assert _empty(tmp_path / "out1") and _empty(tmp_path / "out2")


# ------------------------------------------------------------------------------------------------------ publish
def test_publish_cli_prints_sha_and_url_and_replaces_stale_files(
    hub_env: HubServer, bundled: dict[str, Path], ce_folder: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = "sclzoo-test/cli-publish"
    supcon = Path(shutil.copytree(bundled["supcon"], tmp_path / "supcon"))
    with pytest.raises(SystemExit) as e:
        main(["publish", str(supcon), "--repo", repo, "--tag", "v1", "--message", "first"])
    out, err = capsys.readouterr()
    assert e.value.code == 0, err
    api = HfApi(endpoint=hub_env.url, token=False)
    sha = api.model_info(repo, revision="main").sha
    assert out.splitlines() == [f"published {repo} commit {sha} (tag v1)", f"{hub_env.url}/{repo}"]
    assert "projection_head.safetensors" in api.list_repo_files(repo, revision="main")
    # republishing another folder makes the branch equal to it: the stale projector goes, in the same commit
    second = publish(ce_folder, repo)
    assert second.commit_sha != sha and second.tag is None
    assert sorted(api.list_repo_files(repo, revision="main")) == sorted(sha256_tree(ce_folder))
    assert api.model_info(repo, revision="v1").sha == sha


def _not_a_zoo_repo(folder: Path) -> None:
    for f in folder.iterdir():
        if f.is_dir():
            shutil.rmtree(f)
        else:
            f.unlink()
    (folder / "notes.txt").write_text("hello\n")


def _pickle_beside(folder: Path) -> None:
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")


@pytest.mark.parametrize(("build", "error", "match"), [
    (_not_a_zoo_repo, ModelLoadError, r"has no config\.json"),
    (_pickle_beside, ModelLoadError, r"contains pickle files \['pytorch_model\.bin'\]"),
    (_hash_mismatch, ModelLoadError, r"does not match its sha256"),
    (_num_classes_mismatch, ModelLoadError, r"do not fit resnet8_cifar with num_classes=5"),
], ids=["no-config", "pickle", "hash-mismatch", "num-classes"])
def test_publish_refuses_invalid_folders(build: Callable[[Path], None], error: type[Exception], match: str,
                                         hub_env: HubServer, ce_folder: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(ce_folder, tmp_path / "repo"))
    build(folder)
    with pytest.raises(error, match=match):
        publish(folder, "sclzoo-test/refused")
    assert not hub_env.mirror.exists("sclzoo-test/refused")  # checked before anything is sent


def test_publish_cli_error_is_one_line(hub_env: HubServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["publish", str(tmp_path), "--repo", "sclzoo-test/empty"])
    _, err = capsys.readouterr()
    assert e.value.code == 1
    assert err.count("\n") == 1 and err.startswith("sclzoo: cannot load model: ")


def test_republishing_unchanged_folder_is_a_no_op(hub_env: HubServer, ce_folder: Path,
                                                  ce_published: PublishResult) -> None:
    again = publish(ce_folder, CE_REPO)
    assert again.commit_sha == ce_published.commit_sha  # nothing changed: no new commit, as on the Hub


def test_publish_bad_id_existing_tag_and_auth(hub_env: HubServer, ce_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not a Hub id"):
        publish(ce_folder, "no-slash")
    first = publish(ce_folder, "sclzoo-test/tagged", tag="v1")
    changed = Path(shutil.copytree(ce_folder, tmp_path / "changed"))
    (changed / "README.md").write_text("---\nlicense: apache-2.0\n---\nchanged\n")
    with pytest.raises(ConfigError, match=r"tag 'v1' already exists on 'sclzoo-test/tagged'; pass another --tag"):
        publish(changed, "sclzoo-test/tagged", tag="v1")
    api = HfApi(endpoint=hub_env.url, token=False)
    assert api.model_info("sclzoo-test/tagged", revision="main").sha == first.commit_sha  # nothing uploaded
    assert hub_env.standin is not None
    hub_env.standin.write_tokens = {"hf_writer": "write", "hf_reader": "read"}
    try:
        with pytest.raises(HubError, match=r"HTTP 401.*set HF_TOKEN"):
            publish(ce_folder, "sclzoo-test/auth", token="hf_unknown")
        with pytest.raises(HubError, match=r"HTTP 403.*set HF_TOKEN"):
            publish(ce_folder, "sclzoo-test/auth", token="hf_reader")
        assert publish(ce_folder, "sclzoo-test/auth", token="hf_writer").commit_sha
    finally:
        hub_env.standin.write_tokens = None


def test_publish_unreachable_endpoint(monkeypatch: pytest.MonkeyPatch, ce_folder: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("HF_ENDPOINT", dead)
    with pytest.raises(HubError, match=r"cannot reach the Hub at http://127\.0\.0\.1:\d+ .*check the network or "
                                       r"HF_ENDPOINT"):
        publish(ce_folder, "sclzoo-test/nowhere")


# ------------------------------------------------------------------------------------ a user's timm model (any)
def test_design_card_command_on_a_plain_timm_resnet18(hub: HubServer, tmp_path: Path) -> None:
    """`sclzoo evaluate --model user/supcon-resnet18 --dataset imagefolder:<PNGs>`: a ResNet-18 written by timm's
    own save function (random init, 10 classes, 32×32, nothing of sclzoo in its config), served by the Hub."""
    import timm
    from timm.models import save_for_hf

    torch.manual_seed(0)
    net = timm.create_model("resnet18", num_classes=10, pretrained=False).eval()
    repo = tmp_path / "r18"
    save_for_hf(net, repo, data_config={"input_size": (3, 32, 32)}, safe_serialization=True)
    assert "sclzoo" not in json.loads((repo / "config.json").read_text())
    (repo / "pytorch_model.bin").write_bytes(b"\x80\x04never downloaded")  # a pickle beside it is never fetched
    hub.mirror.commit_folder("user/supcon-resnet18", repo)
    images = png_folder(tmp_path / "pngs", classes=tuple(range(10)), per_class=1, size=28)
    out = tmp_path / "results"
    env = _sub_env(tmp_path / "hf", hub.url)
    proc = _sclzoo(["evaluate", "--model", "user/supcon-resnet18", "--dataset", f"imagefolder:{images}",
                    "--n-samples", "4", "--methods", "saliency,gradcam", "--metrics", "sparseness", "--quiet",
                    "--out", str(out)], env, tmp_path)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert "accuracy" in stdout and "pngs all images" in stdout, stdout
    doc = _result_json(out)
    assert doc["model"]["id"] == "user/supcon-resnet18" and doc["model"]["architecture"] == "resnet18"
    assert doc["run"]["gradcam_layer"] == "model.layer4"
    assert doc["config"]["preprocess"]["source_size"] == [1, 28, 28]
    cached = list((tmp_path / "hf" / "hub").rglob("*.bin"))
    assert not cached, cached
    result_file = next(p for p in out.rglob("*.json"))
    assert main_code(["validate", str(result_file)]) == 0
    # next to the bundled zoo's committed results: its own row (its config differs), the page says how
    lb_in = tmp_path / "lb_in"
    shutil.copytree(REPO_ROOT / "leaderboard" / "results", lb_in)
    shutil.copytree(out, lb_in, dirs_exist_ok=True)
    assert main_code(["leaderboard", str(lb_in), "--out", str(tmp_path / "lb")]) == 0
    board = json.loads((tmp_path / "lb" / "leaderboard.json").read_text())
    text = json.dumps(board)
    assert "user/supcon-resnet18" in text and "local/resnet8_cifar.ce_mnist5k" in text


def main_code(args: list[str]) -> int:
    with pytest.raises(SystemExit) as e:
        main(args)
    return int(e.value.code or 0)


def _silent_server(status: int | None) -> tuple[Any, str]:
    """A loopback HTTP server that answers every request with ``status``, or accepts and never answers (None)."""
    import socket
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    if status is None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        return sock, f"http://127.0.0.1:{sock.getsockname()[1]}"

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        do_HEAD = do_GET  # noqa: N815

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.mark.parametrize(("status", "match"), [
    (None, r"cannot reach the Hub at .* to fetch 'org/hung' \(.*timed out after 2 s|no answer within 2 s"),
    (500, r"answered HTTP 500 for 'org/hung' \(a server error, not a network problem\)"),
])
def test_hung_or_failing_hub_is_one_clear_error(status: int | None, match: str, monkeypatch: pytest.MonkeyPatch
                                                ) -> None:
    import time

    server, url = _silent_server(status)
    try:
        _patch_endpoint(monkeypatch, url)
        monkeypatch.setenv("SCLZOO_HUB_TIMEOUT", "2")
        t0 = time.monotonic()
        with pytest.raises(HubError, match=match):
            resolve_model("org/hung")
        assert time.monotonic() - t0 < 60
    finally:
        (server.close if status is None else server.shutdown)()


# ------------------------------------------------------------------------------------------ results on the Hub
def test_publish_evaluate_publish_results_and_read_them_back(hub_env: HubServer, ce_folder: Path,
                                                             tmp_path: Path) -> None:
    """Publish a zoo model, evaluate it from the Hub, publish its scores into the card's model-index, reload the
    card and find every score (and the card's own text and accuracy entry kept)."""
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    from sclzoo.zoo.publish import publish_results

    repo = "sclzoo-test/ce-results"
    publish(ce_folder, repo, endpoint=hub_env.url, message="model")
    run = _sclzoo(["evaluate", "--model", repo, *EVAL_ARGS, "--out", str(tmp_path / "out")],
                  _sub_env(tmp_path / "hf_home", hub_env.url), tmp_path)
    _, stderr = run.communicate(timeout=180)
    assert run.returncode == 0, stderr
    doc = _result_json(tmp_path / "out")
    res = publish_results(repo, tmp_path / "out", endpoint=hub_env.url)
    assert HfApi(endpoint=hub_env.url, token=False).model_info(repo, revision="main").sha == res.commit_sha

    card = ModelCard.load(repo)
    _, entries = model_index_to_eval_results(card.data.to_dict()["model-index"])
    ours = {e.metric_type: e for e in entries if e.metric_type.startswith("sclzoo/")}
    for method, per_metric in doc["scores"].items():
        for metric, agg in per_metric.items():
            e = ours.pop(f"sclzoo/{method}/{metric}")
            assert e.metric_value == agg["mean"] and e.metric_config == doc["config_hash"]
            assert e.metric_args["ci95"] == agg["ci95"] and e.metric_args["n"] == agg["n"]
            assert e.metric_args["metric_version"] == agg["version"] and e.metric_args["sclzoo_version"]
    assert not ours
    assert any(e.metric_type == "accuracy" for e in entries)  # the card's own entry is kept
    assert "## How to load" in card.text
    # publishing again replaces sclzoo's entries instead of adding copies
    publish_results(repo, tmp_path / "out", endpoint=hub_env.url)
    _, again = model_index_to_eval_results(ModelCard.load(repo).data.to_dict()["model-index"])
    assert len(again) == len(entries)


def test_publish_results_without_matching_results_is_one_clear_error(hub_env: HubServer, ce_published: PublishResult,
                                                                     tmp_path: Path) -> None:
    from lb_synth import write_synthetic

    from sclzoo.zoo.publish import publish_results

    write_synthetic(tmp_path / "other", "supcon", {"saliency": {"sparseness": [0.1, 0.2]}})
    with pytest.raises(ConfigError, match="evaluate it first"):
        publish_results(CE_REPO, tmp_path / "other", endpoint=hub_env.url)

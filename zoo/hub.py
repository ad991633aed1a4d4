"""All Hub and model-folder I/O: resolve a ``--model`` reference, download it, verify it, load it.

Accepted references, tried in this order:

- ``local-dir:PATH`` or an existing folder: a zoo repo on disk (``source = "local"``);
- an alias or zoo name from ``zoo/registry.toml`` (e.g. ``supcon-resnet8-mnist``): the bundled copy;
- ``hf-hub:org/name`` or ``org/name``: a Hub repo, fetched with ``snapshot_download`` (cache, ``HF_ENDPOINT``,
  ``HF_HUB_OFFLINE``) at ``revision`` (branch, tag or commit).

Loading uses safetensors and ``strict=True`` only; pickle weights are refused. Every file listed in the config's
``files_sha256`` is verified before any tensor is read.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sclzoo.errors import HubError, ModelLoadError, ModelNotFoundError
from sclzoo.tomlfile import read_toml

__all__ = ["ResolvedModel", "LoadedModel", "resolve_model", "load_model", "registry_entries", "content_commit", "sha256_file",
           "ZOO_DIR"]

ZOO_DIR = Path(__file__).resolve().parent
REGISTRY_FILE = ZOO_DIR / "registry.toml"
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model reference points, after download.

    Attributes:
        ref: The reference as given.
        repo_id: ``org/name`` (Hub) or ``local/<folder name>`` (local).
        path: Local folder with the repo's files.
        source: ``hub`` or ``local``.
        requested_revision: Revision asked for (``main`` by default for the Hub, ``local`` otherwise).
        commit_sha: The resolved Hub commit, or for local folders a content hash of the weights (40 hex).
    """

    ref: str
    repo_id: str
    path: Path
    source: str
    requested_revision: str
    commit_sha: str


@dataclass
class LoadedModel:
    """A verified, loaded classifier (eval mode, CPU) and what was read to build it."""

    model: nn.Module
    config: dict[str, Any]
    resolved: ResolvedModel
    files_sha256: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.config.get("sclzoo", {}).get("name", self.resolved.repo_id))

    @property
    def objective(self) -> str:
        return str(self.config.get("sclzoo", {}).get("objective", "unknown"))

    @property
    def input_size(self) -> tuple[int, int, int]:
        c, h, w = self.config["pretrained_cfg"]["input_size"]
        return int(c), int(h), int(w)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def registry_entries() -> list[dict[str, Any]]:
    """Models listed in ``zoo/registry.toml`` (id, revision, alias, display name, bundled folder)."""
    if not REGISTRY_FILE.is_file():
        return []
    return list(read_toml(REGISTRY_FILE, "registry file").get("models", []))


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def content_commit(path: Path) -> str:
    """A 40-hex content id for a local folder: hash of its weight and config files."""
    h = hashlib.sha1()
    for f in sorted(path.rglob("*")):
        if f.is_file() and f.name != "README.md" and not any(p.startswith(".") for p in f.relative_to(path).parts):
            h.update(str(f.relative_to(path)).encode() + b"\0" + sha256_file(f).encode() + b"\n")
    return h.hexdigest()


def _local(ref: str, path: Path) -> ResolvedModel:
    if not path.is_dir():
        raise ModelNotFoundError(f"model folder {str(path)!r} does not exist; pass a zoo repo folder, an alias "
                                 "(`sclzoo ls models`) or a Hub id org/name")
    return ResolvedModel(ref, f"local/{path.resolve().name}", path.resolve(), "local", "local",
                         content_commit(path))


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection-level exceptions of the HTTP client huggingface_hub uses.

    requests' errors subclass OSError, but httpx's (huggingface_hub 1.x) and httpx2's (2.x) do not.
    """
    import importlib

    errors: list[type[BaseException]] = [OSError]
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError")):
        try:
            errors.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def _hub(ref: str, repo_id: str, revision: str | None) -> ResolvedModel:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    rev = revision or "main"
    try:
        path = Path(snapshot_download(repo_id, revision=rev, repo_type="model"))
    except RevisionNotFoundError:
        raise ModelNotFoundError(f"revision {rev!r} of {repo_id!r} does not exist; pass an existing branch, tag "
                                 "or commit with --revision") from None
    except (RepositoryNotFoundError, GatedRepoError):
        raise ModelNotFoundError(f"no model {repo_id!r} on the Hub at {constants.ENDPOINT} (or it is private: set "
                                 "HF_TOKEN); check the id, or list the zoo with `sclzoo ls models`") from None
    except LocalEntryNotFoundError:
        if constants.HF_HUB_OFFLINE:
            raise ModelNotFoundError(f"{repo_id!r} (revision {rev!r}) is not in the Hub cache and HF_HUB_OFFLINE=1; "
                                     "download it once online, or unset HF_HUB_OFFLINE") from None
        raise HubError(f"cannot reach the Hub at {constants.ENDPOINT} to fetch {repo_id!r}; check the network or "
                       "HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use the local cache") from None
    except HfHubHTTPError as e:  # reached the Hub, which said no (before the OSError branch: it subclasses it)
        status = e.response.status_code if e.response is not None else "?"
        if status in (401, 403):
            raise HubError(f"the Hub at {constants.ENDPOINT} refused access to {repo_id!r} (HTTP {status}): the token "
                           "in HF_TOKEN (or the saved login) is invalid or lacks access; fix or unset it") from None
        raise HubError(f"the Hub at {constants.ENDPOINT} answered HTTP {status} for {repo_id!r}; try again later, or "
                       "set HF_HUB_OFFLINE=1 to use the local cache") from None
    except _transport_errors() as e:  # connection refused, reset, timed out
        raise HubError(f"cannot reach the Hub at {constants.ENDPOINT} to fetch {repo_id!r} ({type(e).__name__}); "
                       "check the network or HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use the local cache") from None
    # snapshot folders are named by the commit they hold
    return ResolvedModel(ref, repo_id, path, "hub", rev, path.name)


def resolve_model(ref: str, revision: str | None = None) -> ResolvedModel:
    """Resolves a ``--model`` reference to a local folder (downloading from the Hub when needed).

    Raises:
        ModelNotFoundError: nothing matches (the message says what was tried and how to list models).
        HubError: the Hub could not be reached.
    """
    if ref.startswith("local-dir:"):
        return _local(ref, Path(ref[len("local-dir:") :]))
    if ref.startswith("hf-hub:"):
        return _hub(ref, ref[len("hf-hub:") :], revision)
    p = Path(ref)
    if p.is_dir():
        return _local(ref, p)
    for entry in registry_entries():
        if ref in (entry.get("alias"), entry.get("name"), entry.get("id")) and entry.get("bundled"):
            folder = (ZOO_DIR / entry["bundled"]).resolve()
            if folder.is_dir() and (revision is None or revision == entry.get("revision", "main")):
                return _local(ref, folder)
            if ref != entry.get("id"):
                return _hub(ref, entry["id"], revision or entry.get("revision"))
    if REPO_ID.match(ref) and not p.suffix == ".json":
        return _hub(ref, ref, revision)
    raise ModelNotFoundError(f"unknown model {ref!r}: not a folder, not a zoo alias and not a Hub id (org/name); "
                             "run `sclzoo ls models` to list the zoo")


def _read_config(path: Path) -> dict[str, Any]:
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        pickles = [f.name for f in path.iterdir() if f.suffix in PICKLE_SUFFIXES]
        extra = f" (it has pickle weights {pickles}, which sclzoo never loads)" if pickles else ""
        raise ModelLoadError(f"model folder {str(path)!r} has no config.json{extra}; export it with `sclzoo export`")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"{cfg_path} is not valid JSON ({e}); re-export the repo with `sclzoo export`") from None
    for key in ("architecture", "num_classes", "pretrained_cfg"):
        if key not in cfg:
            raise ModelLoadError(f"{cfg_path} has no {key!r}; it is not a timm/sclzoo config — re-export the repo")
    return cfg


def load_model(resolved: ResolvedModel, verify: bool = True) -> LoadedModel:
    """Builds the classifier of a resolved repo and loads its safetensors weights (``strict=True``).

    Raises:
        ModelLoadError: missing/corrupt files, hash mismatch, pickle-only weights, config/weights mismatch.
    """
    import timm
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = resolved.path
    cfg = _read_config(path)
    weights = path / "model.safetensors"
    if not weights.is_file():
        pickles = sorted(f.name for f in path.iterdir() if f.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise ModelLoadError(f"{resolved.repo_id!r} has only pickle weights {pickles}: loading pickle can run "
                                 "arbitrary code, so sclzoo reads safetensors only; convert them to model.safetensors")
        raise ModelLoadError(f"{resolved.repo_id!r} has no model.safetensors; re-export it with `sclzoo export`")
    expected = cfg.get("sclzoo", {}).get("files_sha256", {})
    actual: dict[str, str] = {}
    for name, sha in expected.items():
        f = path / name
        if not f.is_file():
            raise ModelLoadError(f"{resolved.repo_id!r} lists {name} in files_sha256 but the file is missing; "
                                 "download again (delete it from the Hub cache) or re-export")
        actual[name] = sha256_file(f)
        if verify and actual[name] != sha:
            raise ModelLoadError(f"{name} of {resolved.repo_id!r} does not match its sha256 in config.json "
                                 f"({actual[name][:12]}… ≠ {sha[:12]}…): the file is corrupt or was changed; "
                                 "download it again or re-export the repo")
    if "model.safetensors" not in actual:  # not listed: hash it once for the record
        actual["model.safetensors"] = sha256_file(weights)
    top, pre = cfg["num_classes"], cfg["pretrained_cfg"].get("num_classes", cfg["num_classes"])
    if top != pre:
        raise ModelLoadError(f"config.json of {resolved.repo_id!r} says num_classes={top} but pretrained_cfg."
                             f"num_classes={pre}; fix the config so both agree")
    arch = cfg["architecture"]
    try:
        model = timm.create_model(arch, pretrained=False, num_classes=top, **cfg.get("model_args", {}))
    except RuntimeError as e:
        raise ModelLoadError(f"architecture {arch!r} of {resolved.repo_id!r} is unknown to timm ({e}); "
                             "upgrade sclzoo/timm") from None
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelLoadError(f"model.safetensors of {resolved.repo_id!r} is corrupt or truncated ({e}); "
                             "download it again or re-export the repo") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).split("\n")[1].strip() if "\n" in str(e) else str(e)
        raise ModelLoadError(f"weights of {resolved.repo_id!r} do not fit {arch} with num_classes={top} "
                             f"({first}); the config and model.safetensors disagree — re-export the repo") from None
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return LoadedModel(model=model, config=cfg, resolved=resolved, files_sha256=actual)


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device

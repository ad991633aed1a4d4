"""All Hub and model-folder I/O: resolve a model reference, download it, verify it, load it.

One resolver (:func:`resolve_model`) accepts, in this order:

- ``timm:ARCH`` with a weights file (``--weights w.safetensors``): a timm (or zoo) architecture by name;
- ``local-dir:PATH`` or an existing folder: a repo on disk (``source = "local"``);
- an alias or zoo name from ``zoo/registry.toml`` (e.g. ``supcon-resnet8-mnist``): the bundled copy;
- ``hf-hub:org/name`` or ``org/name``: a Hub repo at ``revision`` (branch, tag or commit).

A repo is either a sclzoo zoo repo or a timm repo as ``timm.models.save_for_hf`` / ``push_to_hf_hub`` write
it: ``config.json`` (``architecture``, ``num_classes``, ``model_args``, ``pretrained_cfg``) and
``model.safetensors``. The zoo's ``config.json`` is a superset of timm's (it adds the ``sclzoo`` block), so both
load through the same code. From Python, any ``nn.Module`` joins through :func:`from_module`.

Trust model (README.md, "What sclzoo trusts"): every file of a repo is hostile until checked.

1. ``config.json`` (at most 1 MB of UTF-8 JSON) is read through an allow-list: only the keys in
   :data:`TOP_LEVEL_KEYS` are read; ``model_args`` may hold only :data:`GENERIC_MODEL_ARGS` plus the
   architecture's own keys (``sclzoo.zoo.models.MODEL_ARGS``), each type- and range-checked;
   ``architecture`` must be a plain registered name (no ``hf-hub:``/``local-dir:`` source, no path).
2. ``files_sha256`` may name only files inside the repo; each listed file is hashed and compared.
3. The safetensors header is parsed (size-limited) and the model is first built on PyTorch's ``meta`` device,
   which allocates nothing: its parameter count is checked against :data:`MAX_PARAMETERS` and its state-dict
   names and shapes against the file's header. Only then is the model built for real and the weights loaded
   (``strict=True``).
4. Pickle files (``.bin``, ``.pt``, ``.pth``, ``.pkl``, ``.ckpt``) are never downloaded, opened or unpickled.
5. Hub downloads fetch ``config.json`` first, check it, then only the weights and the files it lists.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from sclzoo.deletion import PatchDeletionConfig
from sclzoo.errors import ConfigError, HubError, ModelLoadError, ModelNotFoundError, transport_errors
from sclzoo.zoo.catalog import REGISTRY_FILE, load_registry

if TYPE_CHECKING:  # torch, timm and the modules that need them load only when a model is built
    from torch import nn

    from sclzoo.zoo.preprocess import DataConfig

__all__ = ["ResolvedModel", "LoadedModel", "resolve_model", "resolve_local", "load_model", "from_module",
           "registry_entries", "content_commit", "module_commit", "sha256_file", "parse_config", "hub_timeout",
           "ZOO_DIR"]

ZOO_DIR = Path(__file__).resolve().parent
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
ARCH_NAME = re.compile(r"^[A-Za-z0-9_][\w.-]{0,127}$")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
MAX_CONFIG_BYTES = 1 << 20
MAX_HEADER_BYTES = 100 << 20
MAX_FILES_LISTED = 256
MAX_CLASSES = 100_000
MAX_PARAMETERS = int(os.environ.get("SCLZOO_MAX_PARAMETERS", 2_000_000_000))
"""Largest model sclzoo builds (parameters + buffers); override with ``SCLZOO_MAX_PARAMETERS``."""
DEFAULT_HUB_TIMEOUT = 30.0

TOP_LEVEL_KEYS = ("architecture", "num_classes", "num_features", "global_pool", "label_names",
                  "label_descriptions", "model_args", "pretrained_cfg", "sclzoo")
"""config.json keys sclzoo reads; any other key is ignored (never passed to timm)."""


def _int_in(lo: int, hi: int) -> Any:
    def check(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi
    check.__doc__ = f"an integer in [{lo}, {hi}]"
    return check


def _float_in(lo: float, hi: float) -> Any:
    def check(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and lo <= v <= hi
    check.__doc__ = f"a number in [{lo}, {hi}]"
    return check


def _pool(v: Any) -> bool:
    """one of '', avg, max, avgmax, catavgmax, token, map, fast, avgmaxc"""
    return v in ("", "avg", "max", "avgmax", "catavgmax", "token", "map", "fast", "avgmaxc")


def _img_size(v: Any) -> bool:
    """an integer or [H, W] in [1, 4096]"""
    ok = _int_in(1, 4096)
    return bool(ok(v)) or (isinstance(v, (list, tuple)) and len(v) == 2 and all(ok(x) for x in v))


GENERIC_MODEL_ARGS: dict[str, Any] = {
    "num_classes": _int_in(0, MAX_CLASSES),
    "in_chans": _int_in(1, 3),
    "global_pool": _pool,
    "drop_rate": _float_in(0.0, 1.0),
    "drop_path_rate": _float_in(0.0, 1.0),
    "proj_drop_rate": _float_in(0.0, 1.0),
    "attn_drop_rate": _float_in(0.0, 1.0),
    "img_size": _img_size,
}
"""model_args keys any timm architecture may receive, with their checks (everything else is refused)."""


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model reference points, after download.

    Attributes:
        ref: The reference as given.
        repo_id: ``org/name`` (Hub), ``local/<folder name>`` (local) or the id given for a Python module.
        path: Local folder with the repo's files (the weights file's folder for ``timm:``).
        source: ``hub``, ``local``, ``timm`` or ``python``.
        requested_revision: Revision asked for (``main`` by default for the Hub, ``local`` otherwise).
        commit_sha: The resolved Hub commit, or a content hash of the weights (40 hex).
        weights: The weights file inside ``path``.
        config: For ``timm:`` references, the config built from the options (no config.json is read).
    """

    ref: str
    repo_id: str
    path: Path
    source: str
    requested_revision: str
    commit_sha: str
    weights: str = "model.safetensors"
    config: Mapping[str, Any] | None = None


@dataclass
class LoadedModel:
    """A verified, loaded classifier (eval mode, CPU) that takes [0, 1] pixels, and what was read to build it.

    Attributes:
        model: [0, 1] pixels at ``data_config.input_size`` → logits (N, num_classes). When the repo's data config
            normalises, this is a :class:`PixelModel` around the network.
        config: The validated config (allow-listed keys only).
        resolved: Where it came from.
        files_sha256: sha256 of every verified file (``model.safetensors`` always).
        data_config: How images reach it; None for a Python module given without preprocessing (then the
            dataset's own size is its input, with no normalisation).
        label_names: Class names by logit index, when the repo gives them.
    """

    model: nn.Module
    config: dict[str, Any]
    resolved: ResolvedModel
    files_sha256: dict[str, str] = field(default_factory=dict)
    data_config: DataConfig | None = None
    label_names: tuple[str, ...] | None = None

    @property
    def name(self) -> str:
        return str(self.config.get("sclzoo", {}).get("name", self.resolved.repo_id))

    @property
    def objective(self) -> str:
        return str(self.config.get("sclzoo", {}).get("objective", "unknown"))

    @property
    def num_classes(self) -> int:
        return int(self.config["num_classes"])

    @property
    def input_size(self) -> tuple[int, int, int]:
        if self.data_config is None:
            raise ModelLoadError(f"{self.resolved.repo_id!r} has no input size yet; pass preprocess="
                                 "{'input_size': (C, H, W)} or evaluate it on a dataset")
        c, h, w = self.data_config.input_size
        return c, h, w

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


# ------------------------------------------------------------------------------------------------ small helpers
def registry_entries() -> list[dict[str, Any]]:
    """Models listed in ``zoo/registry.toml`` as the file's tables (id, revision, alias, names, bundled folder)."""
    return [e.as_dict() for e in load_registry(REGISTRY_FILE, missing_ok=True)]


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


def module_commit(module: nn.Module) -> str:
    """A 40-hex content id of a module: hash of its state_dict (names, dtypes, shapes and bytes, in order)."""
    import torch

    h = hashlib.sha1(b"sclzoo-state-dict-v1\0")
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def hub_timeout() -> float:
    """Seconds a Hub connection or read may take (``SCLZOO_HUB_TIMEOUT``, default 30).

    Raises:
        ConfigError: the variable is not a positive number.
    """
    raw = os.environ.get("SCLZOO_HUB_TIMEOUT", "")
    if not raw:
        return DEFAULT_HUB_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"SCLZOO_HUB_TIMEOUT={raw!r} is not a positive number of seconds; e.g. 30")
    return value


def _did_you_mean(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def _local(ref: str, path: Path) -> ResolvedModel:
    if not path.is_dir():
        raise ModelNotFoundError(f"model folder {str(path)!r} does not exist; pass a zoo or timm repo folder, an "
                                 "alias (`sclzoo ls models`) or a Hub id org/name")
    return ResolvedModel(ref, f"local/{path.resolve().name}", path.resolve(), "local", "local",
                         content_commit(path))


# ------------------------------------------------------------------------------------------------------- Hub
_TIMEOUT_SET: list[float] = []


def _apply_timeout(seconds: float) -> None:
    """Gives huggingface_hub's shared HTTP client connect/read timeouts (its default waits forever)."""
    from huggingface_hub import constants

    constants.HF_HUB_ETAG_TIMEOUT = int(math.ceil(seconds))
    constants.HF_HUB_DOWNLOAD_TIMEOUT = int(math.ceil(seconds))
    if _TIMEOUT_SET and _TIMEOUT_SET[-1] == seconds:
        return
    try:
        from huggingface_hub.utils import _http

        base = _http.default_client_factory

        def factory() -> Any:
            client = base()
            import httpx2  # the client huggingface_hub 2.x uses

            client.timeout = httpx2.Timeout(seconds)
            return client

        _http.set_client_factory(factory)
        _TIMEOUT_SET.append(seconds)
    except (ImportError, AttributeError):  # other huggingface_hub versions: the constants above still apply
        pass


def _hub_call(repo_id: str, rev: str, fn: Any) -> Any:
    """Runs a huggingface_hub call, turning its errors into one-line sclzoo errors."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    timeout = hub_timeout()
    _apply_timeout(timeout)
    try:
        return fn()
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
        raise HubError(f"cannot reach the Hub at {constants.ENDPOINT} to fetch {repo_id!r} (no answer within "
                       f"{timeout:g} s); check the network or HF_ENDPOINT, raise SCLZOO_HUB_TIMEOUT, or set "
                       "HF_HUB_OFFLINE=1 to use the local cache") from None
    except EntryNotFoundError:
        raise ModelLoadError(f"{repo_id!r} (revision {rev!r}) lacks a file it lists; it is not a complete timm or "
                             "sclzoo repo — publish it again") from None
    except HfHubHTTPError as e:  # reached the Hub, which said no (before the OSError branch: it subclasses it)
        status = e.response.status_code if e.response is not None else "?"
        if status in (401, 403):
            raise HubError(f"the Hub at {constants.ENDPOINT} refused access to {repo_id!r} (HTTP {status}): the token "
                           "in HF_TOKEN (or the saved login) is invalid or lacks access; fix or unset it") from None
        raise HubError(f"the Hub at {constants.ENDPOINT} answered HTTP {status} for {repo_id!r} (a server error, "
                       "not a network problem); try again later, or set HF_HUB_OFFLINE=1 to use the local "
                       "cache") from None
    except transport_errors() as e:  # connection refused, reset, timed out
        kind = f"timed out after {timeout:g} s" if "timeout" in type(e).__name__.lower() else type(e).__name__
        raise HubError(f"cannot reach the Hub at {constants.ENDPOINT} to fetch {repo_id!r} ({kind}); check the "
                       "network or HF_ENDPOINT, raise SCLZOO_HUB_TIMEOUT, or set HF_HUB_OFFLINE=1 to use the local "
                       "cache") from None


def _hub(ref: str, repo_id: str, revision: str | None) -> ResolvedModel:
    """Reads the repo's file list, downloads config.json, checks it, then only the weights and the files it
    lists (never a pickle file)."""
    from huggingface_hub import HfApi, constants, hf_hub_download, snapshot_download

    from sclzoo.zoo.hf_transformers import is_transformers_config

    rev = revision or "main"
    if constants.HF_HUB_OFFLINE:  # the cache holds what an earlier, checked download fetched
        folder = Path(_hub_call(repo_id, rev, lambda: snapshot_download(
            repo_id, revision=rev, repo_type="model", allow_patterns=["config.json"])))
        if not (folder / "config.json").is_file():
            raise ModelLoadError(f"{repo_id!r} (revision {rev!r}) has no config.json in the Hub cache; it is not "
                                 "a timm or sclzoo repo")
        raw = _read_json(folder / "config.json", repo_id)
        if not is_transformers_config(raw):
            parse_config(raw, repo_id)
        return ResolvedModel(ref, repo_id, folder, "hub", rev, folder.name)
    t = hub_timeout()
    info = _hub_call(repo_id, rev, lambda: HfApi().model_info(repo_id, revision=rev, timeout=t))
    commit = str(info.sha or "")
    files = [s.rfilename for s in (info.siblings or [])]
    if not re.fullmatch(r"[0-9a-f]{40}", commit):
        raise HubError(f"the Hub at {constants.ENDPOINT} gave no commit for {repo_id!r} at {rev!r}; try again later")
    if "config.json" not in files:
        raise ModelLoadError(f"{repo_id!r} (revision {rev!r}) has no config.json: it is not a timm or sclzoo "
                             "repo; export it with timm.models.push_to_hf_hub or `sclzoo export`")
    if "model.safetensors" not in files:
        pickles = sorted(f for f in files if f.endswith(PICKLE_SUFFIXES))
        if pickles:
            raise ModelLoadError(f"{repo_id!r} has only pickle weights {pickles}: loading pickle can run arbitrary "
                                 "code, so sclzoo reads (and downloads) safetensors only; convert them to "
                                 "model.safetensors")
        raise ModelLoadError(f"{repo_id!r} (revision {rev!r}) has no model.safetensors; publish it with "
                             "safetensors weights")
    # by revision (not commit), so the cache records the ref and HF_HUB_OFFLINE=1 finds it later
    cfg_file = Path(_hub_call(repo_id, rev, lambda: hf_hub_download(repo_id, "config.json", revision=rev,
                                                                     repo_type="model", etag_timeout=t)))
    folder = cfg_file.parent  # snapshot folders are named by the commit they hold
    commit = folder.name
    raw = _read_json(cfg_file, repo_id)
    if is_transformers_config(raw):
        listed = ["preprocessor_config.json"]
    else:
        listed = sorted(parse_config(raw, repo_id).get("sclzoo", {}).get("files_sha256", {}))
    patterns = sorted({"config.json", "model.safetensors", *listed})
    _hub_call(repo_id, rev, lambda: snapshot_download(repo_id, revision=commit, repo_type="model",
                                                      allow_patterns=patterns, etag_timeout=t))
    return ResolvedModel(ref, repo_id, folder, "hub", rev, commit)


def _timm_ref(ref: str, weights: str | Path | None, num_classes: int | None, in_chans: int | None,
              model_id: str | None) -> ResolvedModel:
    """``timm:ARCH`` + a safetensors weights file: the config is made from the options and timm's defaults."""
    arch = ref[len("timm:"):]
    _check_architecture(arch, ref)
    if weights is None:
        raise ConfigError(f"{ref!r} needs its weights: pass --weights FILE.safetensors (sclzoo reads safetensors "
                          "only and downloads nothing for timm: references)")
    w = Path(weights)
    if w.suffix in PICKLE_SUFFIXES:
        raise ModelLoadError(f"--weights {str(w)!r} is a pickle file: loading pickle can run arbitrary code, so "
                             "sclzoo reads safetensors only; convert it with safetensors.torch.save_file")
    if not w.is_file():
        raise ModelNotFoundError(f"weights file {str(w)!r} does not exist; pass --weights FILE.safetensors")
    import timm

    default_cfg = timm.models.get_pretrained_cfg(arch)
    pre = dict(default_cfg.to_dict()) if default_cfg is not None else {}
    pre = {k: pre[k] for k in ("input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std") if k in pre}
    if num_classes is None:
        raise ConfigError(f"{ref!r} needs --num-classes (the size of the weights' classifier)")
    args: dict[str, Any] = {}
    if in_chans is not None:
        args["in_chans"] = in_chans
        if "input_size" in pre:
            pre["input_size"] = [in_chans, *list(pre["input_size"])[1:]]
        for key in ("mean", "std"):  # an RGB default on a grey model: one averaged value
            if key in pre and len(pre[key]) not in (1, in_chans):
                pre[key] = [sum(pre[key]) / len(pre[key])]
    if "input_size" not in pre:
        pre["input_size"] = [in_chans or 3, 224, 224]
    pre["num_classes"] = num_classes
    config = {"architecture": arch, "num_classes": num_classes, "model_args": args, "pretrained_cfg": pre}
    digest = hashlib.sha1(b"sclzoo-weights-v1\0" + sha256_file(w).encode() + json.dumps(
        config, sort_keys=True).encode()).hexdigest()
    rid = model_id or f"local/{arch.split('.')[0]}-{w.stem}"
    if not REPO_ID.match(rid):
        raise ConfigError(f"model id {rid!r} is not of the form org/name; pass --model-id org/name")
    return ResolvedModel(ref, rid, w.resolve().parent, "timm", "local", digest, weights=w.name, config=config)


def resolve_model(ref: str, revision: str | None = None, *, weights: str | Path | None = None,
                  num_classes: int | None = None, in_chans: int | None = None,
                  model_id: str | None = None) -> ResolvedModel:
    """Resolves a ``--model`` reference to a local folder (downloading from the Hub when needed).

    Args:
        ref: ``timm:ARCH``, ``local-dir:PATH``, a folder, an alias, ``hf-hub:org/name`` or ``org/name``.
        revision: Hub branch, tag or commit.
        weights: For ``timm:ARCH``: the safetensors weights file.
        num_classes: For ``timm:ARCH``: classes of the weights' classifier.
        in_chans: For ``timm:ARCH``: input channels (default: the architecture's).
        model_id: For ``timm:ARCH``: the id results are filed under (default ``local/<arch>-<weights stem>``).

    Raises:
        ModelNotFoundError: nothing matches (the message says what was tried and how to list models).
        HubError: the Hub could not be reached, timed out or failed (the status code is named).
    """
    resolved = _resolve(ref, revision, weights, num_classes, in_chans, model_id, remote=True)
    if resolved is None:  # pragma: no cover - remote=True resolves or raises
        raise ModelNotFoundError(f"unknown model {ref!r}")
    return resolved


def resolve_local(ref: str, revision: str | None = None) -> ResolvedModel | None:
    """:func:`resolve_model` for the references it resolves on disk alone (a folder, ``local-dir:PATH``, a bundled
    alias whose copy is present): the same result, found by hashing the folder's files, without the network or
    torch. None for every other reference (``timm:``, Hub ids, an alias of a model not bundled here).

    Raises:
        The errors of :func:`resolve_model` for a reference that names nothing.
    """
    return _resolve(ref, revision, None, None, None, None, remote=False)


def _resolve(ref: str, revision: str | None, weights: str | Path | None, num_classes: int | None,
             in_chans: int | None, model_id: str | None, *, remote: bool) -> ResolvedModel | None:
    """:func:`resolve_model`'s resolution order; with ``remote=False`` it stops (None) where it would build a timm
    reference or ask the Hub."""
    if not isinstance(ref, str) or not ref:
        raise ConfigError(f"model reference {ref!r} is empty; pass a folder, an alias, org/name or timm:ARCH")
    if ref.startswith("timm:"):
        return _timm_ref(ref, weights, num_classes, in_chans, model_id) if remote else None
    if weights is not None:
        raise ConfigError(f"--weights is for timm:ARCH references; {ref!r} brings its own model.safetensors")
    if ref.startswith("local-dir:"):
        return _local(ref, Path(ref[len("local-dir:") :]))
    if ref.startswith("hf-hub:"):
        repo_id = ref[len("hf-hub:") :]
        if not REPO_ID.match(repo_id):
            raise ModelNotFoundError(f"{repo_id!r} is not a Hub id; use hf-hub:org/name")
        return _hub(ref, repo_id, revision) if remote else None
    p = Path(ref)
    if p.is_dir():
        return _local(ref, p)
    entries = registry_entries()
    for entry in entries:
        if ref in (entry.get("alias"), entry.get("name"), entry.get("id")) and entry.get("bundled"):
            folder = (ZOO_DIR / entry["bundled"]).resolve()
            if folder.is_dir() and (revision is None or revision == entry.get("revision", "main")):
                return _local(ref, folder)
            if ref != entry.get("id"):
                return _hub(ref, entry["id"], revision or entry.get("revision")) if remote else None
    if REPO_ID.match(ref) and not p.suffix == ".json":
        return _hub(ref, ref, revision) if remote else None
    names = [str(v) for e in entries for v in (e.get("alias"), e.get("name"), e.get("id")) if v]
    raise ModelNotFoundError(f"unknown model {ref!r}: not a folder, not a zoo alias and not a Hub id (org/name)"
                             f"{_did_you_mean(ref, names)}; run `sclzoo ls models` to list the zoo, or use "
                             "timm:ARCH --weights FILE for a timm architecture")


# ---------------------------------------------------------------------------------------- config allow-list
def _read_json(path: Path, repo: str) -> dict[str, Any]:
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ModelLoadError(f"config.json of {repo!r} is {path.stat().st_size} bytes, more than the "
                             f"{MAX_CONFIG_BYTES} a model config may have; it is not a timm/sclzoo config")
    try:
        cfg = json.loads(path.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"config.json of {repo!r} is not valid UTF-8 JSON ({e}); re-export the repo with "
                             "`sclzoo export` or timm.models.save_for_hf") from None
    if not isinstance(cfg, dict):
        raise ModelLoadError(f"config.json of {repo!r} is a JSON {type(cfg).__name__}, not an object; re-export it")
    return cfg


def _raw_config(path: Path) -> dict[str, Any]:
    """``path/config.json`` as a JSON object (size-limited, UTF-8), not yet validated."""
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        pickles = [f.name for f in path.iterdir() if f.suffix in PICKLE_SUFFIXES]
        extra = f" (it has pickle weights {pickles}, which sclzoo never loads)" if pickles else ""
        raise ModelLoadError(f"model folder {str(path)!r} has no config.json{extra}; export it with `sclzoo export` "
                             "or timm.models.save_for_hf")
    return _read_json(cfg_path, str(path))


def _read_config(path: Path) -> dict[str, Any]:
    """Reads and validates ``path/config.json`` (see :func:`parse_config`)."""
    return parse_config(_raw_config(path), str(path))


def _load_transformers(resolved: ResolvedModel, raw: dict[str, Any],
                       preprocess: Mapping[str, Any] | None) -> LoadedModel:
    """A transformers image classifier (zoo/hf_transformers.py), under the same checks as a timm repo."""
    from sclzoo.zoo.hf_transformers import load_transformers

    path, repo = resolved.path, resolved.repo_id
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise ModelLoadError(f"{repo!r} has no model.safetensors; save it with save_pretrained (safetensors)")
    shapes = safetensors_header(weights, repo)
    net, cfg, dc = load_transformers(path, weights, raw, repo, shapes, MAX_PARAMETERS,
                                     dict(preprocess) if preprocess else None)
    model = _finish(net, dc)
    check_logits(model, dc.input_size, cfg["num_classes"], repo)
    return LoadedModel(model=model, config=cfg, resolved=resolved,
                       files_sha256={"model.safetensors": sha256_file(weights)}, data_config=dc,
                       label_names=tuple(cfg["label_names"]))


def _check_architecture(arch: Any, where: str) -> str:
    import timm

    import sclzoo.zoo.models  # noqa: F401  (registers the zoo architectures)

    if not isinstance(arch, str) or not ARCH_NAME.match(arch):
        raise ModelLoadError(f"{where}: architecture {arch!r} is not a plain architecture name (no hf-hub:, "
                             "local-dir: or paths); use a timm name such as 'resnet18'")
    if not timm.is_model(arch):
        raise ModelLoadError(f"{where}: architecture {arch!r} is unknown to timm "
                             f"{timm.__version__}{_did_you_mean(arch.split('.')[0], timm.list_models())}")
    return arch


def _model_args(arch: str, args: Any, where: str) -> dict[str, Any]:
    from sclzoo.zoo.models import MODEL_ARGS

    if args is None:
        return {}
    if not isinstance(args, dict):
        raise ModelLoadError(f"{where}: model_args must be an object, got {type(args).__name__}")
    allowed = {**GENERIC_MODEL_ARGS, **MODEL_ARGS.get(arch.split(".")[0], {})}
    out: dict[str, Any] = {}
    for key, value in args.items():
        check = allowed.get(key)
        if check is None:
            raise ModelLoadError(f"{where}: model_args.{key} is not allowed for {arch!r} (sclzoo builds models only "
                                 f"from {sorted(allowed)}); remove it from config.json")
        if not check(value):
            raise ModelLoadError(f"{where}: model_args.{key} = {value!r} must be {check.__doc__}")
        out[key] = value
    return out


def _files_sha256(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or len(value) > MAX_FILES_LISTED:
        raise ModelLoadError(f"{where}: sclzoo.files_sha256 must be an object of at most {MAX_FILES_LISTED} "
                             "'path': 'sha256' pairs")
    out: dict[str, str] = {}
    for name, sha in value.items():
        parts = PurePosixPath(name).parts if isinstance(name, str) else ()
        if (not parts or "\\" in name or name.startswith("/") or ".." in parts or any(p.startswith(".") for p in parts)
                or ":" in name):
            raise ModelLoadError(f"{where}: sclzoo.files_sha256 names {name!r}, which is not a file inside the repo; "
                                 "only relative paths such as 'model.safetensors' are allowed")
        if not isinstance(sha, str) or not SHA256_HEX.match(sha):
            raise ModelLoadError(f"{where}: sclzoo.files_sha256[{name!r}] = {sha!r} is not a 64-hex sha256")
        out[name] = sha
    return out


def parse_config(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Validates a model config against the allow-list; returns only the keys sclzoo reads.

    Raises:
        ModelLoadError: a missing or ill-typed key, a key outside the allow-list in ``model_args``, an unknown
            architecture (with "did you mean"), a bad ``files_sha256`` entry, or inconsistent class counts.
    """
    from sclzoo.zoo.preprocess import DataConfig

    where = f"config.json of {where!r}"
    for key in ("architecture", "num_classes", "pretrained_cfg"):
        if key not in raw:
            raise ModelLoadError(f"{where} has no {key!r}; it is not a timm/sclzoo config — re-export the repo")
    arch = _check_architecture(raw["architecture"], where)
    k = raw["num_classes"]
    if not _int_in(1, MAX_CLASSES)(k):
        raise ModelLoadError(f"{where}: num_classes {k!r} must be an integer in [1, {MAX_CLASSES}]")
    pre = raw["pretrained_cfg"]
    if not isinstance(pre, dict):
        raise ModelLoadError(f"{where}: pretrained_cfg must be an object, got {type(pre).__name__}")
    if pre.get("num_classes", k) != k:
        raise ModelLoadError(f"{where} says num_classes={k} but pretrained_cfg.num_classes={pre['num_classes']!r}; "
                             "fix the config so both agree")
    args = _model_args(arch, raw.get("model_args"), where)
    if args.pop("num_classes", k) != k:
        raise ModelLoadError(f"{where} says num_classes={k} but model_args.num_classes="
                             f"{raw['model_args']['num_classes']!r}; fix the config so both agree")
    try:
        data = DataConfig.from_timm(pre, where=f"{where}: pretrained_cfg")
    except ConfigError as e:
        raise ModelLoadError(str(e)) from None
    if args.get("in_chans", data.channels) != data.channels:
        raise ModelLoadError(f"{where}: model_args.in_chans={args['in_chans']} but pretrained_cfg.input_size "
                             f"{list(data.input_size)} has {data.channels} channels; make them agree")
    out: dict[str, Any] = {"architecture": arch, "num_classes": k, "model_args": args,
                           "pretrained_cfg": {key: pre[key] for key in pre if isinstance(key, str)}}
    names = raw.get("label_names")
    if isinstance(names, dict):
        try:
            names = [names[str(i)] if str(i) in names else names[i] for i in range(k)]  # type: ignore[index]
        except KeyError:
            names = None
    if isinstance(names, list) and len(names) == k and all(isinstance(n, str) for n in names):
        out["label_names"] = names
    for key in ("num_features", "global_pool"):
        if key in raw:
            out[key] = raw[key]
    z = raw.get("sclzoo")
    if z is not None:
        if not isinstance(z, dict):
            raise ModelLoadError(f"{where}: the sclzoo block must be an object, got {z!r}; re-export the repo")
        z = dict(z)
        if "files_sha256" in z:
            z["files_sha256"] = _files_sha256(z["files_sha256"], where)
        for key in ("name", "objective", "head"):
            if key in z and not isinstance(z[key], str):
                raise ModelLoadError(f"{where}: sclzoo.{key} must be a string, got {z[key]!r}")
        if "train_dataset" in z and not (isinstance(z["train_dataset"], dict)
                                         and isinstance(z["train_dataset"].get("id", ""), str)):
            raise ModelLoadError(f"{where}: sclzoo.train_dataset must be an object with a string id")
        if "patch_deletion" in z:  # results say from it whether a deletion metric is in domain (sclzoo/deletion.py)
            try:
                z["patch_deletion"] = PatchDeletionConfig.from_dict(z["patch_deletion"],
                                                                    "sclzoo.patch_deletion").to_dict()
            except ConfigError as e:
                raise ModelLoadError(f"{where}: {e}; re-export the repo with `sclzoo export`, or delete the key "
                                     "if the model was not trained with patch deletion") from None
        out["sclzoo"] = z
    return out


# ---------------------------------------------------------------------------------------------------- loading
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}


def safetensors_header(path: Path, repo: str) -> dict[str, tuple[int, ...]]:
    """Tensor name → shape from a safetensors file's header, checked against the file size (reads no tensor).

    Raises:
        ModelLoadError: a truncated file, an oversized or malformed header, offsets outside the file.
    """
    size = path.stat().st_size
    bad = f"{path.name} of {repo!r} is corrupt or truncated"
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ModelLoadError(f"{bad} (shorter than a safetensors header); download it again or re-export")
        n = int.from_bytes(head, "little")
        if n > MAX_HEADER_BYTES or n + 8 > size:
            raise ModelLoadError(f"{bad} (header of {n} bytes in a {size}-byte file); download it again or re-export")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ModelLoadError(f"{bad} (unreadable header); download it again or re-export") from None
    if not isinstance(header, dict):
        raise ModelLoadError(f"{bad} (header is not an object)")
    shapes: dict[str, tuple[int, ...]] = {}
    data_len = size - 8 - n
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            shape = tuple(int(v) for v in info["shape"])
            lo, hi = (int(v) for v in info["data_offsets"])
            width = _DTYPE_BYTES[info["dtype"]]
        except (KeyError, TypeError, ValueError):
            raise ModelLoadError(f"{bad} (entry {name!r} of its header is malformed)") from None
        if any(d < 0 for d in shape) or not 0 <= lo <= hi <= data_len or hi - lo != math.prod(shape) * width:
            raise ModelLoadError(f"{bad} (tensor {name!r} does not fit the file)")
        shapes[name] = shape
    return shapes


def _verify_files(path: Path, listed: dict[str, str], repo: str, verify: bool, hub_cache: bool = False
                  ) -> dict[str, str]:
    actual: dict[str, str] = {}
    root = path.resolve()
    for name, sha in listed.items():
        f = path / name  # names were checked to be relative paths without '..' (parse_config)
        if not hub_cache and f.is_symlink() and not f.resolve().is_relative_to(root):
            raise ModelLoadError(f"{repo!r} lists {name} in files_sha256, a link to a file outside the repo; "
                                 "replace the link with the file")
        if not f.is_file():
            raise ModelLoadError(f"{repo!r} lists {name} in files_sha256 but the file is missing; "
                                 "download again (delete it from the Hub cache) or re-export")
        actual[name] = sha256_file(f)
        if verify and actual[name] != sha:
            raise ModelLoadError(f"{name} of {repo!r} does not match its sha256 in config.json "
                                 f"({actual[name][:12]}… ≠ {sha[:12]}…): the file is corrupt or was changed; "
                                 "download it again or re-export the repo")
    return actual


def _build(arch: str, num_classes: int, args: dict[str, Any], repo: str, shapes: dict[str, tuple[int, ...]],
           weights_name: str) -> nn.Module:
    """Builds on the meta device (no memory), checks size and shapes against the weights, then builds for real."""
    import timm
    import torch

    def create() -> nn.Module:
        return timm.create_model(arch, pretrained=False, num_classes=num_classes, **args)

    try:
        with torch.device("meta"):
            skeleton = create()
    except (TypeError, ValueError, RuntimeError, AssertionError, KeyError, NotImplementedError) as e:
        raise ModelLoadError(f"cannot build {arch!r} of {repo!r} with num_classes={num_classes} and model_args "
                             f"{args} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); fix "
                             "config.json") from None
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    n_values = sum(math.prod(s) for s in expected.values())
    del skeleton
    if n_values > MAX_PARAMETERS:
        raise ModelLoadError(f"{arch!r} of {repo!r} as configured has {n_values:,} parameters and buffers, more "
                             f"than the {MAX_PARAMETERS:,} sclzoo builds; fix config.json or raise "
                             "SCLZOO_MAX_PARAMETERS")
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong = sorted(k for k in set(expected) & set(shapes) if expected[k] != shapes[k])
    if missing or unexpected or wrong:
        what = (f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}" if unexpected
                else f"{wrong[0]} is {list(shapes[wrong[0]])} in the file but {list(expected[wrong[0]])} in the model")
        raise ModelLoadError(f"weights of {repo!r} do not fit {arch} with num_classes={num_classes} ({weights_name}: "
                             f"{what}); the config and the weights disagree — re-export the repo")
    try:
        return create()
    except (MemoryError, RuntimeError) as e:
        raise ModelLoadError(f"not enough memory to build {arch!r} of {repo!r} ({n_values:,} values; "
                             f"{type(e).__name__}); free memory or use a smaller model") from None


def check_logits(model: nn.Module, input_size: tuple[int, int, int], num_classes: int | None, repo: str) -> int:
    """Runs two blank images through ``model``; the output must be (2, K) logits. Returns K.

    Raises:
        ModelLoadError: the output is not a (N, classes) tensor, or K differs from ``num_classes``.
    """
    import torch

    try:
        with torch.no_grad():
            out = model(torch.zeros(2, *input_size))
    except Exception as e:  # a user's module can raise anything; name it in one line
        raise ModelLoadError(f"{repo!r} fails on a (2, {', '.join(map(str, input_size))}) input "
                             f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); check its input "
                             "size (preprocess input_size) and channels") from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 2:
        shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelLoadError(f"{repo!r} returns {shape} for 2 images, not (N, classes) logits; wrap it so that "
                             "forward returns a (N, classes) tensor")
    if num_classes is not None and out.shape[1] != num_classes:
        raise ModelLoadError(f"{repo!r} returns {out.shape[1]} logits but its config says num_classes={num_classes}")
    return int(out.shape[1])


def _finish(net: nn.Module, dc: DataConfig | None) -> nn.Module:
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    if dc is not None and dc.normalises:
        from sclzoo.zoo.preprocess import PixelModel

        return PixelModel(net, dc.mean, dc.std).eval()
    return net


def load_model(resolved: ResolvedModel, verify: bool = True,
               preprocess: Mapping[str, Any] | None = None) -> LoadedModel:
    """Builds the classifier of a resolved repo and loads its safetensors weights (``strict=True``).

    Every check runs before the model is allocated (see the module docstring).

    Args:
        resolved: From :func:`resolve_model`.
        verify: Compare listed files with their sha256 (always on for evaluation).
        preprocess: Overrides of the data config (input_size, interpolation, crop_pct, crop_mode, mean, std).

    Raises:
        ModelLoadError: missing/corrupt files, hash mismatch, pickle-only weights, a config outside the
            allow-list, a model larger than :data:`MAX_PARAMETERS`, config/weights mismatch.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from sclzoo.zoo.hf_transformers import is_transformers_config
    from sclzoo.zoo.preprocess import DataConfig

    path, repo = resolved.path, resolved.repo_id
    if resolved.config is not None:
        cfg = parse_config(resolved.config, repo)
    else:
        raw = _raw_config(path)
        if is_transformers_config(raw):
            return _load_transformers(resolved, raw, preprocess)
        cfg = parse_config(raw, str(path))
    weights = path / resolved.weights
    if not weights.is_file():
        pickles = sorted(f.name for f in path.iterdir() if f.suffix in PICKLE_SUFFIXES) if path.is_dir() else []
        if pickles:
            raise ModelLoadError(f"{repo!r} has only pickle weights {pickles}: loading pickle can run "
                                 "arbitrary code, so sclzoo reads safetensors only; convert them to model.safetensors")
        raise ModelLoadError(f"{repo!r} has no {resolved.weights}; re-export it with `sclzoo export` or "
                             "timm.models.save_for_hf(..., safe_serialization=True)")
    actual = _verify_files(path, cfg.get("sclzoo", {}).get("files_sha256", {}), repo, verify,
                           hub_cache=resolved.source == "hub")  # the Hub cache links snapshots to its blobs
    if resolved.weights not in actual:  # not listed: hash it once for the record
        actual[resolved.weights] = sha256_file(weights)
    try:
        dc = DataConfig.from_timm(cfg["pretrained_cfg"], preprocess)
    except ConfigError as e:
        raise ModelLoadError(f"{repo!r}: {e}") from None
    shapes = safetensors_header(weights, repo)
    arch, k = cfg["architecture"], cfg["num_classes"]
    args = dict(cfg["model_args"])
    if dc.channels != args.get("in_chans", dc.channels):
        raise ModelLoadError(f"{repo!r}: preprocessing input_size {list(dc.input_size)} has {dc.channels} channels "
                             f"but the model takes in_chans={args['in_chans']}")
    net = _build(arch, k, args, repo, shapes, resolved.weights)
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelLoadError(f"{resolved.weights} of {repo!r} is corrupt or truncated ({e}); "
                             "download it again or re-export the repo") from None
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).split("\n")[1].strip() if "\n" in str(e) else str(e)
        raise ModelLoadError(f"weights of {repo!r} do not fit {arch} with num_classes={k} "
                             f"({first}); the config and model.safetensors disagree — re-export the repo") from None
    model = _finish(net, dc)
    check_logits(model, dc.input_size, k, repo)
    names = tuple(cfg["label_names"]) if "label_names" in cfg else None
    return LoadedModel(model=model, config=cfg, resolved=resolved, files_sha256=actual, data_config=dc,
                       label_names=names)


def from_module(module: nn.Module, model_id: str, preprocess: Mapping[str, Any] | None = None,
                label_names: tuple[str, ...] | None = None) -> LoadedModel:
    """A Python ``nn.Module`` as a loaded model; its commit is a content hash of its state_dict.

    Args:
        module: Takes images (after the normalisation in ``preprocess``, if any) and returns (N, K) logits.
        model_id: ``org/name`` the results are filed under.
        preprocess: Data config keys (``input_size``, ``mean``, ``std``, ``interpolation``, ``crop_pct``,
            ``crop_mode``); without ``input_size`` the dataset's own image size is used, with no normalisation.
        label_names: Class names by logit index.

    Raises:
        ConfigError: ``model_id`` is not ``org/name``, or ``module`` is not an ``nn.Module``.
        ModelLoadError: its output on the input size is not (N, K) logits.
    """
    from torch import nn

    from sclzoo.zoo.preprocess import DataConfig

    if not isinstance(module, nn.Module):
        raise ConfigError(f"model must be a reference string or an nn.Module, got {type(module).__name__}")
    if not isinstance(model_id, str) or not REPO_ID.match(model_id):
        raise ConfigError(f"model_id {model_id!r} is not of the form org/name; pass model_id='me/my-net'")
    commit = module_commit(module)
    resolved = ResolvedModel(f"python:{type(module).__name__}", model_id, Path("."), "python", "local", commit)
    dc = None
    if preprocess and "input_size" in preprocess:
        dc = DataConfig.from_timm({"mean": (0.0,), "std": (1.0,), "crop_pct": 1.0, "interpolation": "bilinear"},
                                  preprocess, where="preprocess")
    model = _finish(module, dc)
    cfg: dict[str, Any] = {"architecture": f"python:{type(module).__name__}", "num_classes": 0, "model_args": {},
                           "pretrained_cfg": dc.as_dict() if dc else {}}
    loaded = LoadedModel(model=model, config=cfg, resolved=resolved, files_sha256={}, data_config=dc,
                         label_names=label_names)
    if dc is not None:
        cfg["num_classes"] = check_logits(model, dc.input_size, None, model_id)
    return loaded


def module_data_config(loaded: LoadedModel, image_size: tuple[int, int, int],
                       preprocess: Mapping[str, Any] | None) -> LoadedModel:
    """Gives a Python module without an input size the dataset's size (no resize, no normalisation)."""
    from sclzoo.zoo.preprocess import DataConfig

    if loaded.data_config is not None:
        return loaded
    base = {"input_size": list(image_size), "mean": (0.0,), "std": (1.0,), "crop_pct": 1.0,
            "interpolation": "bilinear"}
    dc = DataConfig.from_timm(base, {k: v for k, v in (preprocess or {}).items() if k != "input_size"},
                              where="preprocess")
    model = _finish(loaded.model, dc)
    k = check_logits(model, dc.input_size, None, loaded.resolved.repo_id)
    cfg = {**loaded.config, "num_classes": k, "pretrained_cfg": dc.as_dict()}
    return LoadedModel(model=model, config=cfg, resolved=loaded.resolved, files_sha256={}, data_config=dc,
                       label_names=loaded.label_names)

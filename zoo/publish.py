"""Zoo repo folder → Hub repo (``sclzoo publish``): verify, create the repo, upload in one commit, tag.

The folder is checked the way ``sclzoo evaluate`` will check the download — config.json present, every file in
``files_sha256`` matching, safetensors weights loading with ``strict=True``, no pickle files — so a repo that
cannot be evaluated is never published. The upload is a single commit that makes the Hub branch equal to the
folder (stale files on the Hub are deleted in the same commit), and an optional tag pins it.

``HF_TOKEN`` and ``HF_ENDPOINT`` are read when :func:`publish` is called (not when huggingface_hub was imported),
so a test or a script can point it at another endpoint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sclzoo.errors import ConfigError, HubError, ModelLoadError, ModelNotFoundError, transport_errors

__all__ = ["PublishResult", "publish", "publish_results", "check_repo_folder"]

BRANCH = "main"
KEEP_ON_HUB = (".gitattributes",)  # created by the Hub with the repo; not part of a zoo repo folder


@dataclass(frozen=True)
class PublishResult:
    """What :func:`publish` created.

    Attributes:
        commit_sha: The commit on ``main`` that holds the folder (40 hex).
        url: The repo's page, ``<endpoint>/<org>/<name>``.
        repo_id: ``org/name``.
        tag: The tag pointing at ``commit_sha``, or None.
    """

    commit_sha: str
    url: str
    repo_id: str
    tag: str | None


def _upload_paths(folder: Path) -> list[str]:
    """Files to upload, relative POSIX paths; hidden files and caches are local clutter, not repo content."""
    out = []
    for f in sorted(folder.rglob("*")):
        rel = f.relative_to(folder)
        if f.is_file() and not any(p.startswith(".") or p == "__pycache__" for p in rel.parts):
            out.append(rel.as_posix())
    return out


def check_repo_folder(repo_dir: str | Path) -> list[str]:
    """Verifies a zoo repo folder before upload; returns the relative paths to upload.

    Raises:
        ModelNotFoundError: the folder does not exist.
        ModelLoadError: not a zoo repo (no config.json / files_sha256), pickle files, hash mismatch, or weights
            that do not load into the configured architecture.
    """
    from sclzoo.zoo.hub import PICKLE_SUFFIXES, _read_config, load_model, resolve_model

    folder = Path(repo_dir)
    if not folder.is_dir():
        raise ModelNotFoundError(f"folder {str(folder)!r} does not exist; pass the zoo repo folder that "
                                 "`sclzoo export` wrote")
    paths = _upload_paths(folder)
    pickles = [p for p in paths if p.endswith(PICKLE_SUFFIXES)]
    if pickles:
        raise ModelLoadError(f"{str(folder)!r} contains pickle files {pickles}; sclzoo publishes safetensors only "
                             "(pickle can run code when loaded) — delete them or re-export with `sclzoo export`")
    cfg = _read_config(folder)
    hashes = cfg.get("sclzoo", {}).get("files_sha256") or {}
    if "model.safetensors" not in hashes:
        raise ModelLoadError(f"config.json in {str(folder)!r} has no sclzoo.files_sha256 entry for "
                             "model.safetensors, so downloads could not be verified; re-export it with `sclzoo export`")
    load_model(resolve_model(f"local-dir:{folder}"), verify=True)  # hashes, num_classes, strict weights
    return paths


def _endpoint(endpoint: str | None) -> str:
    from huggingface_hub import constants

    return (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _hub_error(e: BaseException, repo_id: str, endpoint: str) -> Exception:
    """One-line sclzoo error for a failed Hub request."""
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(e, HfHubHTTPError):
        status = e.response.status_code if e.response is not None else None
        server = (getattr(e, "server_message", None) or "").strip().splitlines()
        detail = f": {server[0]}" if server else ""
        if status in (401, 403):
            return HubError(f"the Hub at {endpoint} refused to publish {repo_id!r} (HTTP {status}{detail}); set "
                            "HF_TOKEN to a token with write access to that namespace (or pass token=)")
        return HubError(f"the Hub at {endpoint} answered HTTP {status} while publishing {repo_id!r}{detail}; "
                        "try again later or check HF_ENDPOINT")
    return HubError(f"cannot reach the Hub at {endpoint} to publish {repo_id!r} ({type(e).__name__}); check the "
                    "network or HF_ENDPOINT")


def publish(
    repo_dir: str | Path,
    repo_id: str,
    *,
    tag: str | None = None,
    private: bool = False,
    token: str | None = None,
    endpoint: str | None = None,
    message: str | None = None,
) -> PublishResult:
    """Uploads a zoo repo folder to the Hub as one commit on ``main``, optionally tagged.

    Args:
        repo_dir: Folder written by ``sclzoo export`` (config.json, model.safetensors, …).
        repo_id: ``org/name`` on the Hub; created if missing.
        tag: Tag to create on the new commit (e.g. ``v1``); it must not exist yet.
        private: Create the repo private (ignored when it already exists).
        token: Hub token; default ``HF_TOKEN`` or the saved login.
        endpoint: Hub URL; default ``HF_ENDPOINT`` or https://huggingface.co.
        message: Commit message (default ``Publish <name> with sclzoo``).

    Returns:
        A :class:`PublishResult` with the commit sha and the repo URL.

    Raises:
        ConfigError: ``repo_id`` is not ``org/name``, or ``tag`` already exists.
        ModelNotFoundError / ModelLoadError: the folder is not a valid zoo repo (see :func:`check_repo_folder`).
        HubError: the endpoint cannot be reached, or refused the upload (401/403 → set ``HF_TOKEN``).
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    from sclzoo.zoo.hub import REPO_ID

    if not REPO_ID.match(repo_id):
        raise ConfigError(f"--repo {repo_id!r} is not a Hub id; pass org/name (e.g. my-org/resnet8-ce-mnist)")
    folder = Path(repo_dir)
    paths = check_repo_folder(folder)
    name = _read_name(folder)
    url_base = _endpoint(endpoint)
    api = HfApi(endpoint=url_base, token=token or os.environ.get("HF_TOKEN") or None)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        try:
            remote = api.list_repo_files(repo_id, repo_type="model", revision=BRANCH)
            tags = {t.name for t in api.list_repo_refs(repo_id, repo_type="model").tags} if tag else set()
        except (RepositoryNotFoundError, RevisionNotFoundError):
            remote, tags = [], set()  # a new repo has no branch yet
        if tag in tags:  # refuse before uploading, so no commit lands without its tag
            raise ConfigError(f"tag {tag!r} already exists on {repo_id!r}; pass another --tag")
        ops: list[Any] = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(folder / p)) for p in paths]
        ops += [CommitOperationDelete(path_in_repo=p) for p in sorted(set(remote) - set(paths)) if p not in KEEP_ON_HUB]
        info = api.create_commit(repo_id, operations=ops, repo_type="model", revision=BRANCH,
                                 commit_message=message or f"Publish {name} with sclzoo")
        sha = str(info.oid)
    except HfHubHTTPError as e:
        raise _hub_error(e, repo_id, url_base) from None
    except transport_errors() as e:
        raise _hub_error(e, repo_id, url_base) from None
    if tag:
        try:
            api.create_tag(repo_id, tag=tag, revision=sha, repo_type="model", tag_message=message or f"{name} {tag}")
        except HfHubHTTPError as e:
            if e.response is not None and e.response.status_code == 409:
                raise ConfigError(f"tag {tag!r} already exists on {repo_id!r} (created meanwhile); commit {sha} was "
                                  "published without it — pass another --tag") from None
            raise _hub_error(e, repo_id, url_base) from None
        except transport_errors() as e:
            raise _hub_error(e, repo_id, url_base) from None
    return PublishResult(commit_sha=sha, url=f"{url_base}/{repo_id}", repo_id=repo_id, tag=tag)


def publish_results(
    repo_id: str,
    results: str | Path | list[str | Path],
    *,
    revision: str = BRANCH,
    token: str | None = None,
    endpoint: str | None = None,
    message: str | None = None,
) -> PublishResult:
    """Writes the model's attribution scores into its card's ``model-index`` and commits the card to the Hub.

    The repo's weights are identified by ``sclzoo.files_sha256["model.safetensors"]`` of its config.json (zoo repos)
    and matched against the results' weights ids (docs/artifacts.md#weights-identity); repos without that entry
    match results recorded for this repo id at this revision's commit. Every (config, method, metric) with a score
    becomes one model-index entry (:func:`sclzoo.model_cards.attribution_eval_results`); entries sclzoo wrote
    before are replaced, every other entry and the card's text are kept.

    Args:
        repo_id: ``org/name`` on the Hub.
        results: Results folder(s) (``sclzoo evaluate --out``, or a leaderboard's results).
        revision: Branch whose card is updated (and whose weights are matched).
        token: Hub token; default ``HF_TOKEN`` or the saved login.
        endpoint: Hub URL; default ``HF_ENDPOINT`` or https://huggingface.co.
        message: Commit message.

    Returns:
        The commit that updated README.md.

    Raises:
        ConfigError: ``repo_id`` is not ``org/name``, or no result matches the repo's weights.
        HubError: the endpoint cannot be reached or refused the commit.
    """
    import json
    import tempfile

    from huggingface_hub import CommitOperationAdd, HfApi, ModelCard, ModelCardData
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

    from sclzoo.evaluator.leaderboard import build_leaderboard, scan_results
    from sclzoo.model_cards import attribution_eval_results, merge_eval_results
    from sclzoo.zoo.hub import REPO_ID

    if not REPO_ID.match(repo_id):
        raise ConfigError(f"--repo {repo_id!r} is not a Hub id; pass org/name (e.g. my-org/resnet8-ce-mnist)")
    url_base = _endpoint(endpoint)
    api = HfApi(endpoint=url_base, token=token or os.environ.get("HF_TOKEN") or None)
    with tempfile.TemporaryDirectory() as tmp:
        def fetch(name: str) -> str | None:
            try:
                return Path(api.hf_hub_download(repo_id, name, revision=revision, cache_dir=tmp)).read_text()
            except EntryNotFoundError:
                return None

        try:
            head = str(api.model_info(repo_id, revision=revision).sha)
            readme, config_text = fetch("README.md"), fetch("config.json")
        except HfHubHTTPError as e:
            raise _hub_error(e, repo_id, url_base) from None
        except transport_errors() as e:
            raise _hub_error(e, repo_id, url_base) from None
    try:
        sha = json.loads(config_text or "{}").get("sclzoo", {}).get("files_sha256", {}).get("model.safetensors")
    except (ValueError, AttributeError):
        sha = None
    scan = scan_results(results if isinstance(results, (str, Path)) else list(results))
    versions = {lr.file: str(lr.doc["run"].get("sclzoo_version", "")) for lr in scan.results}
    rows = [r for r in build_leaderboard(scan)["rows"]
            if (isinstance(sha, str) and r["weights_id"] == f"sha256:{sha}")
            or (r["model"] == repo_id and r["commit_sha"] == head)]
    if not rows:
        raise ConfigError(f"no result under {results} is for the weights of {repo_id!r} at {revision} ({head[:12]}); "
                          f"evaluate it first: sclzoo evaluate --model {repo_id} --out <folder>")
    ours = [e for r in rows for e in attribution_eval_results([r], versions.get(r["file"]) or None)]
    card = ModelCard(readme) if readme and readme.lstrip().startswith("---") else ModelCard(
        "---\n" + ModelCardData(library_name="timm").to_yaml() + "\n---\n\n" + (readme or f"# {repo_id}\n"))
    data: Any = card.data  # a ModelCardData for a model card
    data.eval_results = merge_eval_results(data.eval_results, ours)
    data.model_name = data.model_name or repo_id.split("/")[-1]
    data.metrics = sorted(set(data.metrics or []) | {e.metric_type.split("/")[-1] for e in ours})
    try:
        info = api.create_commit(repo_id, operations=[CommitOperationAdd("README.md", str(card).encode())],
                                 repo_type="model", revision=revision, parent_commit=head,
                                 commit_message=message or f"Attribution scores from sclzoo ({len(ours)} entries)")
    except HfHubHTTPError as e:
        raise _hub_error(e, repo_id, url_base) from None
    except transport_errors() as e:
        raise _hub_error(e, repo_id, url_base) from None
    return PublishResult(commit_sha=str(info.oid), url=f"{url_base}/{repo_id}", repo_id=repo_id, tag=None)


def _read_name(folder: Path) -> str:
    import json

    try:
        return str(json.loads((folder / "config.json").read_text())["sclzoo"]["name"])
    except (KeyError, TypeError, ValueError):
        return folder.name

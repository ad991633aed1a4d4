"""A Hub on loopback for the tests: olah serves git mirrors (reads), a small stand-in takes uploads (writes).

``huggingface_hub`` talks to one endpoint. That endpoint is the stand-in (:class:`UploadStandIn`): it answers the
write routes listed below itself (docs/testing.md#upload-stand-in) — committing into the same git repositories
olah serves — and forwards every other request to olah unchanged (status, headers and body streamed through).
Nothing listens on or connects to anything but 127.0.0.1; ``/api/whoami-v2``, which olah would forward
upstream, is answered locally.

Typical use (see the session fixture in ``tests/test_hub.py``)::

    with HubServer(tmp_dir) as hub:
        os.environ["HF_ENDPOINT"] = hub.url
        ...

Write routes (huggingface_hub 2.x wire contract):

- ``POST /api/validate-yaml`` → ``{"errors": [], "warnings": []}``
- ``POST /api/repos/create`` ``{name, organization, type, …}`` → ``{"url": …}``; 409 when it exists
- ``POST /api/{type}s/{org}/{name}/preupload/{rev}`` → every file ``uploadMode: "regular"``
- ``POST /api/{type}s/{org}/{name}/commit/{rev}`` NDJSON ``header`` / ``file`` (base64) / ``deletedFile`` /
  ``deletedFolder`` → a real ``git commit`` on branch ``rev``; ``{commitOid, commitUrl, pullRequestUrl}``
- ``POST /api/{type}s/{org}/{name}/tag/{rev}`` ``{tag, message?}`` → a git tag (``HfApi.create_tag``); 409 if it
  exists, 404 ``RevisionNotFound`` if ``rev`` does not resolve
- ``DELETE /api/{type}s/{org}/{name}/tag/{tag}`` → deletes the tag (``HfApi.delete_tag``)
- ``GET /api/whoami-v2`` → 401 (never forwarded)

Set :attr:`UploadStandIn.write_tokens` to require ``Authorization: Bearer <token>`` on writes (401 without or
with an unknown token, 403 for a token mapped to ``"read"``), and :attr:`UploadStandIn.invalid_tokens` to answer
401 to any request carrying one of those tokens (a revoked token).

Reads of a known repo at an unknown revision or file answer 404 ``RevisionNotFound`` / ``EntryNotFound`` here,
as the Hub does (olah says 401/500); the preupload answer carries the blob id of files already on the branch, so
an unchanged upload makes no commit, as on the Hub.
"""

from __future__ import annotations

import atexit
import base64
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit

__all__ = ["HubServer", "UploadStandIn", "GitMirror", "ensure_olah_python", "free_port", "OLAH_VENV"]

REPO_ROOT = Path(__file__).resolve().parent.parent
OLAH_VENV = REPO_ROOT / ".venv-olah"
READY_REPO = "sclzoo-test/ready"
REPO_TYPES = ("models", "datasets", "spaces")
# Hop-by-hop headers are per connection; the stand-in answers HTTP/1.0 and closes after each response.
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}
GIT_ENV = {
    "GIT_AUTHOR_NAME": "sclzoo-test", "GIT_AUTHOR_EMAIL": "test@sclzoo.invalid",
    "GIT_COMMITTER_NAME": "sclzoo-test", "GIT_COMMITTER_EMAIL": "test@sclzoo.invalid",
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0",
}


# loopback must never go through a proxy from the environment
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_olah_python(venv: Path = OLAH_VENV) -> Path:
    """The Python of a virtualenv with olah, creating it (``pip install olah``) when missing."""
    py = venv / "bin" / "python"
    probe = [str(py), "-c", "import olah.server"]
    if py.is_file() and subprocess.run(probe, capture_output=True).returncode == 0:
        return py
    if shutil.which("git") is None:
        raise RuntimeError("olah needs `git` on PATH; install git (e.g. apt-get install git)")
    subprocess.run([shutil.which("python3") or sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "olah"], check=True)
    return py


# ------------------------------------------------------------------------------------------------ git mirrors
class GitMirror:
    """The git repositories olah serves: ``<root>/<type>s/<org>/<name>``, bare, branch ``main``.

    Commits are written with plumbing (hash-object, a private index, write-tree, commit-tree, update-ref), so no
    work tree is touched and large binary files are stored as plain blobs.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._locks: dict[Path, threading.Lock] = {}
        self._guard = threading.Lock()

    def path(self, repo_id: str, repo_type: str = "models") -> Path:
        return self.root / repo_type / repo_id

    def exists(self, repo_id: str, repo_type: str = "models") -> bool:
        return (self.path(repo_id, repo_type) / "HEAD").is_file()

    def _lock(self, path: Path) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(path, threading.Lock())

    def _git(self, path: Path, *args: str, stdin: bytes | None = None, env: Mapping[str, str] | None = None,
             check: bool = True) -> str:
        proc = subprocess.run(["git", *args], cwd=path, input=stdin, capture_output=True,
                              env={**os.environ, **GIT_ENV, **(env or {})})
        if check and proc.returncode != 0:
            raise RuntimeError(f"git {' '.join(args)} failed in {path}: {proc.stderr.decode(errors='replace')}")
        return proc.stdout.decode().strip() if proc.returncode == 0 else ""

    def create(self, repo_id: str, repo_type: str = "models") -> bool:
        """Initialises an empty bare repository; returns False when it already exists."""
        path = self.path(repo_id, repo_type)
        with self._lock(path):
            if self.exists(repo_id, repo_type):
                return False
            path.mkdir(parents=True, exist_ok=True)
            self._git(path, "init", "--quiet", "--bare", "--initial-branch=main")
            return True

    def rev_parse(self, repo_id: str, rev: str, repo_type: str = "models") -> str | None:
        """The commit ``rev`` (branch, tag or sha) points to, or None."""
        out = self._git(self.path(repo_id, repo_type), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}",
                        check=False)
        return out or None

    def commit(self, repo_id: str, branch: str, files: Mapping[str, bytes], *, deleted: tuple[str, ...] = (),
               deleted_folders: tuple[str, ...] = (), message: str = "commit", parent: str | None = None,
               repo_type: str = "models") -> str:
        """Commits ``files`` (path → bytes) on top of ``branch`` (created if absent); returns the commit sha.

        Raises:
            ValueError: ``parent`` is given and the branch has moved past it.
        """
        path = self.path(repo_id, repo_type)
        with self._lock(path), tempfile.TemporaryDirectory(prefix="index.") as tmp:
            # a private index, and an empty work tree only so that `update-index --force-remove` agrees to run
            (Path(tmp) / "wt").mkdir()
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index"), "GIT_WORK_TREE": str(Path(tmp) / "wt")}
            head = self.rev_parse(repo_id, f"refs/heads/{branch}", repo_type)
            if parent is not None and head != parent:
                raise ValueError(f"branch {branch!r} is at {head}, not at the parent commit {parent}")
            if head:
                self._git(path, "read-tree", head, env=env)
            for rel in deleted:
                self._git(path, "update-index", "--force-remove", "--", rel, env=env)
            if deleted_folders:
                listed = self._git(path, "ls-files", "-z", env=env).split("\0")
                for rel in listed:
                    if rel and any(rel.startswith(d.rstrip("/") + "/") for d in deleted_folders):
                        self._git(path, "update-index", "--force-remove", "--", rel, env=env)
            for rel, data in files.items():
                blob = self._git(path, "hash-object", "-w", "--stdin", stdin=data)
                self._git(path, "update-index", "--add", "--cacheinfo", f"100644,{blob},{rel}", env=env)
            tree = self._git(path, "write-tree", env=env)
            parents = ["-p", head] if head else []
            sha = self._git(path, "commit-tree", tree, *parents, "-m", message or "commit")
            self._git(path, "update-ref", f"refs/heads/{branch}", sha, *([head] if head else []))
            return sha

    def commit_folder(self, repo_id: str, folder: Path, *, branch: str = "main", message: str = "seed",
                      repo_type: str = "models") -> str:
        """Creates the repo if needed and commits every file of ``folder`` (a test seeding helper)."""
        self.create(repo_id, repo_type)
        files = {f.relative_to(folder).as_posix(): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()}
        return self.commit(repo_id, branch, files, message=message, repo_type=repo_type)

    def has_file(self, repo_id: str, commit: str, rel: str, repo_type: str = "models") -> bool:
        out = self._git(self.path(repo_id, repo_type), "cat-file", "-t", f"{commit}:{rel}", check=False)
        return out == "blob"

    def blob_id(self, repo_id: str, commit: str, rel: str, repo_type: str = "models") -> str | None:
        """The git blob sha1 of ``rel`` at ``commit``, or None when there is no such file."""
        if not self.has_file(repo_id, commit, rel, repo_type):
            return None
        return self._git(self.path(repo_id, repo_type), "rev-parse", f"{commit}:{rel}") or None

    def tag(self, repo_id: str, tag: str, rev: str, message: str | None = None, repo_type: str = "models") -> None:
        path = self.path(repo_id, repo_type)
        with self._lock(path):
            args = ["tag", "-a", "-m", message] if message else ["tag"]
            self._git(path, *args, tag, rev)

    def delete_tag(self, repo_id: str, tag: str, repo_type: str = "models") -> bool:
        path = self.path(repo_id, repo_type)
        with self._lock(path):
            return bool(self._git(path, "tag", "-d", tag, check=False))


# ---------------------------------------------------------------------------------------------- upload stand-in
class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet unless asked
        if self.server.standin.verbose:
            sys.stderr.write(f"[hub stand-in] {format % args}\n")

    # ------------------------------------------------------------------ plumbing
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, status: int, message: str, code: str | None = None) -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._json(status, {"error": message}, headers)

    def _authorised(self) -> bool:
        tokens = self.server.standin.write_tokens
        if tokens is None:
            return True
        auth = self.headers.get("Authorization", "")
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
        if token is None or token not in tokens:
            self._error(401, "Invalid credentials in Authorization header")
            return False
        if tokens[token] != "write":
            self._error(403, "You don't have the rights to write to this repo (read-only token)")
            return False
        return True

    @staticmethod
    def _repo_route(path: str) -> tuple[str, str, str, str] | None:
        """``/api/{type}s/{org}/{name}/{action}/{rev}`` → (type, org/name, action, rev)."""
        parts = path.split("/")
        if len(parts) >= 7 and parts[1] == "api" and parts[2] in REPO_TYPES:
            return parts[2], f"{unquote(parts[3])}/{unquote(parts[4])}", parts[5], unquote("/".join(parts[6:]))
        return None

    # ------------------------------------------------------------------ routes
    def _rejected_token(self) -> bool:
        """401 like the Hub for a token listed in ``invalid_tokens``, on any route (read or write)."""
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and auth[len("Bearer "):] in self.server.standin.invalid_tokens:
            self._body()
            self._error(401, "Invalid credentials in Authorization header")
            return True
        return False

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch()

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch()

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch()

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch()

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch()

    def _dispatch(self) -> None:
        if self._rejected_token():
            return
        path = urlsplit(self.path).path
        route = self._repo_route(path)
        action = route[2] if route is not None else None
        if self.command == "POST":
            if path == "/api/validate-yaml":
                self._body()
                return self._json(200, {"errors": [], "warnings": []})
            if path == "/api/repos/create":
                return self._create_repo()
            if route is not None and action in ("preupload", "commit", "tag"):
                return {"preupload": self._preupload, "commit": self._commit, "tag": self._tag}[action](*route)
        elif self.command == "DELETE" and route is not None and action == "tag":
            return self._delete_tag(*route)
        elif self.command in ("GET", "HEAD"):
            if path == "/api/whoami-v2":
                return self._error(401, "whoami is not served by the test Hub")
            if self._missing_revision_or_file():
                return None
        return self._forward()

    def _delete_tag(self, repo_type: str, repo_id: str, _action: str, tag: str) -> None:
        if not self._authorised():
            return None
        if not self.server.mirror.delete_tag(repo_id, tag, repo_type):
            return self._error(404, f"tag {tag!r} does not exist", "RevisionNotFound")
        return self._json(200, {})

    def _missing_revision_or_file(self) -> bool:
        """Answers 404 like the Hub where olah would say 401/500: unknown revision or file of a known repo.

        The Hub tells "no such repo" (401 RepoNotFound) from "no such revision" (404 RevisionNotFound) and "no such
        file" (404 EntryNotFound); olah answers 401 or 500 for all three, which would hide sclzoo's error mapping.
        """
        parts = [unquote(p) for p in urlsplit(self.path).path.split("/")]
        if len(parts) >= 7 and parts[1] == "api" and parts[2] in REPO_TYPES and parts[5] == "revision":
            repo_type, repo_id, rev, rel = parts[2], f"{parts[3]}/{parts[4]}", "/".join(parts[6:]), None
        elif len(parts) >= 6 and parts[3] == "resolve" and parts[1] != "api":
            repo_type, repo_id, rev, rel = "models", f"{parts[1]}/{parts[2]}", parts[4], "/".join(parts[5:])
        else:
            return False
        mirror = self.server.mirror
        if not mirror.exists(repo_id, repo_type):
            return False  # olah's own 401 RepoNotFound is what the Hub says
        sha = mirror.rev_parse(repo_id, rev, repo_type)
        if sha is None:
            self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            return True
        if rel is not None and not mirror.has_file(repo_id, sha, rel, repo_type):
            self._error(404, f"{rel} does not exist on {rev!r}", "EntryNotFound")
            return True
        return False

    def _create_repo(self) -> None:
        body = json.loads(self._body() or b"{}")
        if not self._authorised():
            return None
        org, name = body.get("organization"), body.get("name")
        if not org or not name:
            return self._error(400, "the test Hub needs both organization and name")
        repo_type = f"{body.get('type') or 'model'}s"
        repo_id = f"{org}/{name}"
        url = f"{self.server.standin.url}/{'' if repo_type == 'models' else repo_type + '/'}{repo_id}"
        if not self.server.mirror.create(repo_id, repo_type):
            return self._json(409, {"error": "You already created this model repo", "url": url},
                              {"X-Error-Message": "You already created this model repo"})
        return self._json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _known(self, repo_type: str, repo_id: str) -> bool:
        if self.server.mirror.exists(repo_id, repo_type):
            return True
        self._error(404, "Repository not found", "RepoNotFound")
        return False

    def _preupload(self, repo_type: str, repo_id: str, _action: str, branch: str) -> None:
        body = json.loads(self._body() or b"{}")
        if not self._authorised() or not self._known(repo_type, repo_id):
            return None
        # "oid" is the git blob id of the file already on the branch: the client drops unchanged files (and makes
        # no commit at all when nothing changed), as with the Hub.
        head = self.server.mirror.rev_parse(repo_id, f"refs/heads/{branch}", repo_type)
        files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                  "oid": self.server.mirror.blob_id(repo_id, head, f["path"], repo_type) if head else None}
                 for f in body.get("files", [])]
        return self._json(200, {"files": files, "commitOid": head})

    def _commit(self, repo_type: str, repo_id: str, _action: str, branch: str) -> None:
        raw = self._body()
        if not self._authorised() or not self._known(repo_type, repo_id):
            return None
        if "create_pr=1" in (urlsplit(self.path).query or ""):
            return self._error(400, "pull requests are not supported by the test Hub")
        header: dict[str, Any] = {}
        files: dict[str, bytes] = {}
        deleted: list[str] = []
        deleted_folders: list[str] = []
        for line in raw.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item.get("key"), item.get("value", {})
            if key == "header":
                header = value
            elif key == "file":
                content = value["content"]
                files[value["path"]] = (base64.b64decode(content) if value.get("encoding") == "base64"
                                        else content.encode())
            elif key == "deletedFile":
                deleted.append(value["path"])
            elif key == "deletedFolder":
                deleted_folders.append(value["path"])
            else:
                return self._error(422, f"commit operation {key!r} is not supported by the test Hub "
                                        "(it answers uploadMode 'regular' for every file)")
        message = header.get("summary") or "commit"
        if header.get("description"):
            message += "\n\n" + header["description"]
        try:
            sha = self.server.mirror.commit(repo_id, branch, files, deleted=tuple(deleted),
                                            deleted_folders=tuple(deleted_folders), message=message,
                                            parent=header.get("parentCommit"), repo_type=repo_type)
        except ValueError as e:
            return self._error(412, str(e))
        prefix = "" if repo_type == "models" else repo_type + "/"
        return self._json(200, {"success": True, "commitOid": sha, "pullRequestUrl": None,
                                "commitUrl": f"{self.server.standin.url}/{prefix}{repo_id}/commit/{sha}"})

    def _tag(self, repo_type: str, repo_id: str, _action: str, rev: str) -> None:
        body = json.loads(self._body() or b"{}")
        if not self._authorised() or not self._known(repo_type, repo_id):
            return None
        tag = body.get("tag")
        if not tag:
            return self._error(400, "no tag given")
        sha = self.server.mirror.rev_parse(repo_id, rev, repo_type)
        if sha is None:
            return self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        if self.server.mirror.rev_parse(repo_id, f"refs/tags/{tag}", repo_type) is not None:
            return self._error(409, f"tag {tag!r} already exists")
        self.server.mirror.tag(repo_id, tag, sha, body.get("message"), repo_type)
        return self._json(200, {})

    # ------------------------------------------------------------------ forwarding to olah
    def _forward(self) -> None:
        body = self._body()
        upstream = self.server.standin.upstream
        target = urlsplit(upstream)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"host", "content-length"}}
        conn = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port, timeout=60)
        try:
            conn.request(self.command, self.path, body=body if body or self.command in ("POST", "PUT") else None,
                         headers=headers)
            resp = conn.getresponse()
            self.send_response_only(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() in HOP_BY_HOP:
                    continue
                if k.lower() == "location" and v.startswith(upstream):
                    v = self.server.standin.url + v[len(upstream):]
                self.send_header(k, v)
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                while chunk := resp.read(1 << 16):
                    self.wfile.write(chunk)
        except OSError as e:
            self._error(502, f"olah at {upstream} did not answer ({type(e).__name__}: {e})")
        finally:
            conn.close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    standin: UploadStandIn
    mirror: GitMirror


class UploadStandIn:
    """The write side of the Hub on 127.0.0.1, forwarding reads to ``upstream`` (olah)."""

    def __init__(self, mirror: GitMirror, upstream: str, port: int | None = None, verbose: bool = False) -> None:
        self.mirror = mirror
        self.upstream = upstream.rstrip("/")
        self.verbose = verbose
        self.write_tokens: dict[str, str] | None = None  # token → "write" | "read"; None accepts any request
        self.invalid_tokens: set[str] = set()  # answered 401 on every route, like a revoked token on the Hub
        self._server = _Server(("127.0.0.1", port or 0), _Handler)
        self._server.standin = self
        self._server.mirror = mirror
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="hub-stand-in", daemon=True)

    def start(self) -> UploadStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# ---------------------------------------------------------------------------------------------------- together
class HubServer:
    """olah (reads, offline, git mirrors) behind the upload stand-in (writes); ``url`` is the ``HF_ENDPOINT``."""

    def __init__(self, workdir: Path, olah_python: Path | None = None, startup_timeout: float = 60.0) -> None:
        self.workdir = Path(workdir)
        self.olah_python = olah_python
        self.startup_timeout = startup_timeout
        self.mirror = GitMirror(self.workdir / "mirrors")
        self.olah_port = free_port()
        self.olah_url = f"http://127.0.0.1:{self.olah_port}"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.standin: UploadStandIn | None = None

    @property
    def url(self) -> str:
        assert self.standin is not None, "HubServer.start() first"
        return self.standin.url

    def start(self) -> HubServer:
        py = self.olah_python or ensure_olah_python()
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "olah.toml").write_text(
            "[basic]\n"
            'host = "127.0.0.1"\n'
            f"port = {self.olah_port}\n"
            'repos-path = "./olah-cache"\n'
            'mirrors-path = ["./mirrors"]\n'
            "\n[accessibility]\n"
            "offline = true\n"
        )
        # a repo to poll for readiness (olah answers 500 on `/`)
        seed = self.workdir / "ready-seed"
        seed.mkdir(exist_ok=True)
        (seed / "README.md").write_text("ready\n")
        self.mirror.commit_folder(READY_REPO, seed)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
        env["HF_HUB_OFFLINE"] = "1"  # olah's own huggingface_hub must not go online either
        self._log = open(self.workdir / "olah.log", "wb")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen([str(py), "-m", "olah.server", "-c", "olah.toml"], cwd=self.workdir,
                                      stdout=self._log, stderr=subprocess.STDOUT, env=env)
        atexit.register(self.stop)  # also when the session dies before its fixture's teardown
        try:
            self._wait_ready()
            self.standin = UploadStandIn(self.mirror, self.olah_url).start()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        probe = f"{self.olah_url}/api/models/{READY_REPO}/revision/main"
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(f"olah exited with code {self._proc.returncode}; see {self.workdir / 'olah.log'}:\n"
                                   + (self.workdir / "olah.log").read_text(errors="replace")[-2000:])
            try:
                with _NO_PROXY.open(probe, timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"olah did not become ready on {self.olah_url} in {self.startup_timeout:.0f} s; "
                           f"see {self.workdir / 'olah.log'}")

    def stop(self) -> None:
        if self.standin is not None:
            self.standin.stop()
            self.standin = None
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

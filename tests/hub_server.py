"""A local server that speaks the Hub's HTTP protocol, enough for push and ``load_dataset``.

The real ``huggingface_hub`` client talks to it through ``HF_ENDPOINT`` (with
``HF_HUB_DISABLE_XET=1``). Datasets only: repo info, create, pre-upload, LFS batch and
upload, commit, tree listing, paths-info, resolve. ``fail`` lets a test inject errors:
``server.fail["commit"] = [500, 500]`` answers the next two commits with 500, and
``[None, 503]`` lets one through and fails the next.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse


def git_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Repo:
    def __init__(self, private: bool):
        self.private = private
        self.files: dict[str, bytes] = {}
        self.lfs: dict[str, str] = {}  # path -> sha256 of files stored through LFS
        self.commits: list[str] = [hashlib.sha1(str(time.time()).encode()).hexdigest()]

    @property
    def sha(self) -> str:
        return self.commits[-1]


class HubState:
    def __init__(self):
        self.repos: dict[str, Repo] = {}
        self.objects: dict[str, bytes] = {}  # sha256 -> bytes uploaded through LFS
        self.log: list[tuple[str, str]] = []  # (method, path) of every request
        self.fail: dict[str, list[int]] = {"commit": [], "upload": [], "whoami": [], "create": [], "list": []}
        self.model_repos: set[str] = set()  # created without type "dataset": no dataset endpoint finds them
        self.uploads: list[str] = []  # sha256 of every accepted PUT
        self.commit_paths: list[list[str]] = []  # paths added by each commit
        self.auth_headers: list[str] = []
        self.tokens: dict[str, str] = {}  # token -> role ("write" or "read"); others get 401
        self.upload_delay_s = 0.0  # each LFS upload waits this long (to kill a client mid-push)
        self.snapshots: list[dict[str, bytes]] = []  # each repo's files after every commit (path -> bytes)
        self.lock = threading.Lock()


def _card_data(repo: Repo) -> dict:
    """The YAML metadata of the repo's README.md, as the Hub reports it in ``cardData``."""
    text = repo.files.get("README.md", b"").decode(errors="replace")
    if not text.startswith("---"):
        return {}
    import yaml

    try:
        return yaml.safe_load(text.split("---", 2)[1]) or {}
    except yaml.YAMLError:
        return {}


def make_handler(state: HubState):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        # ------------------------------------------------------------ helpers
        def _send(self, code: int, body=b"", headers: dict | None = None, content_type="application/json"):
            if not isinstance(body, bytes):
                body = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _error(self, code: int, error_code: str, message: str):
            self._send(code, {"error": message}, {"X-Error-Code": error_code, "X-Error-Message": message})

        def _body(self) -> bytes:
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def _repo(self, repo_id: str) -> Repo | None:
            repo = state.repos.get(repo_id)
            if repo is None:
                self._error(404, "RepoNotFound", f"Repository Not Found for url: {self.path}")
            return repo

        def _entry(self, repo: Repo, path: str) -> dict:
            data = repo.files[path]
            entry = {"type": "file", "path": path, "oid": git_sha(data), "size": len(data)}
            if path in repo.lfs:
                entry["lfs"] = {"oid": repo.lfs[path], "size": len(data), "pointerSize": 134}
            return entry

        def _maybe_fail(self, kind: str) -> bool:
            with state.lock:  # a None entry lets that request through; (code, headers) adds headers
                code = state.fail[kind].pop(0) if state.fail[kind] else None
            if code is None:
                return False
            code, headers = code if isinstance(code, tuple) else (code, {})
            self._body()
            # the message echoes the request's credentials, as a misconfigured proxy may: the client
            # must never print them
            message = f"injected {kind} failure (request had {self.headers.get('authorization', 'no auth')})"
            self._send(code, {"error": message}, {"X-Error-Code": "Injected", "X-Error-Message": message, **headers})
            return True

        # ------------------------------------------------------------ routes
        def do_HEAD(self):
            self.do_GET()

        def do_GET(self):
            with state.lock:
                state.log.append(("GET" if self.command == "GET" else "HEAD", self.path))
                state.auth_headers.append(self.headers.get("authorization", ""))
            url = urlparse(self.path)
            path = unquote(url.path)
            if path == "/api/whoami-v2":
                if self._maybe_fail("whoami"):
                    return None
                auth = self.headers.get("authorization", "")
                if state.tokens.get(auth.removeprefix("Bearer ")) is None:
                    return self._error(401, "Unauthorized", "Invalid credentials in Authorization header")
                role = state.tokens[auth.removeprefix("Bearer ")]
                return self._send(200, {"type": "user", "name": "user", "orgs": [{"name": "org"}],
                                        "auth": {"type": "access_token", "accessToken": {"role": role}}})
            m = re.fullmatch(r"/api/datasets/([^/]+/[^/]+)(?:/revision/([^/]+))?", path)
            if m:
                repo = self._repo(m.group(1))
                if repo:
                    self._send(200, {"id": m.group(1), "sha": repo.sha, "private": repo.private,
                                     "siblings": [{"rfilename": p} for p in sorted(repo.files)], "tags": [],
                                     "lastModified": "2026-11-24T00:00:00.000Z", "cardData": _card_data(repo)})
                return
            m = re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?", path)
            if m:
                if self._maybe_fail("list"):
                    return None
                repo = self._repo(m.group(1))
                if repo is None:
                    return
                folder = (m.group(3) or "").strip("/")
                recursive = parse_qs(url.query).get("recursive", ["false"])[0].lower() == "true"
                prefix = folder + "/" if folder else ""
                files = [p for p in sorted(repo.files) if p.startswith(prefix)]
                if folder and not files:
                    return self._error(404, "EntryNotFound", f"{folder} does not exist")
                entries, dirs = [], set()
                for p in files:
                    rest = p[len(prefix):]
                    if "/" in rest and not recursive:
                        dirs.add(prefix + rest.split("/")[0])
                    else:
                        entries.append(self._entry(repo, p))
                        if recursive:
                            parts = rest.split("/")[:-1]
                            dirs.update(prefix + "/".join(parts[: i + 1]) for i in range(len(parts)))
                entries += [{"type": "directory", "path": d, "oid": git_sha(d.encode()), "size": 0} for d in sorted(dirs)]
                return self._send(200, entries)
            m = re.fullmatch(r"/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
            if m:
                repo = self._repo(m.group(1))
                if repo is None:
                    return
                file = m.group(3)
                if file not in repo.files:
                    return self._error(404, "EntryNotFound", f"{file} does not exist")
                data = repo.files[file]
                headers = {"X-Repo-Commit": repo.sha, "ETag": f'"{repo.lfs.get(file) or git_sha(data)}"',
                           "Accept-Ranges": "bytes"}
                if file in repo.lfs:
                    headers["X-Linked-Etag"] = f'"{repo.lfs[file]}"'
                    headers["X-Linked-Size"] = str(len(data))
                rng = self.headers.get("Range")
                if rng and (r := re.fullmatch(r"bytes=(\d+)-(\d*)", rng)):
                    start = int(r.group(1))
                    end = int(r.group(2)) if r.group(2) else len(data) - 1
                    headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                    return self._send(206, data[start:end + 1], headers, "application/octet-stream")
                return self._send(200, data, headers, "application/octet-stream")
            self._error(404, "NotFound", f"no route for GET {path}")

        def do_POST(self):
            with state.lock:
                state.log.append(("POST", self.path))
                state.auth_headers.append(self.headers.get("authorization", ""))
            path = unquote(urlparse(self.path).path)
            if path == "/api/repos/create":
                if self._maybe_fail("create"):  # reads the body itself
                    return None
                body = json.loads(self._body())
                repo_id = f"{body.get('organization') or 'user'}/{body['name']}"
                if body.get("type") != "dataset":  # the Hub makes a model repo
                    state.model_repos.add(repo_id)
                    return self._send(200, {"url": f"http://{self.headers['Host']}/{repo_id}"})
                url = f"http://{self.headers['Host']}/datasets/{repo_id}"
                if repo_id in state.repos:  # the Hub's 409 names the repo's url too
                    return self._send(409, {"error": "You already created this dataset repo", "url": url},
                                      {"X-Error-Code": "RepoExists"})
                state.repos[repo_id] = Repo(bool(body.get("private")) or body.get("visibility") == "private")
                return self._send(200, {"url": url})
            if path == "/api/validate-yaml":
                self._body()
                return self._send(200, {"errors": [], "warnings": []})
            m = re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/preupload/([^/]+)", path)
            if m:
                body = json.loads(self._body())
                if self._repo(m.group(1)) is None:
                    return
                files = [{"path": f["path"], "uploadMode": "regular" if f["path"].endswith((".md", ".json", ".yaml"))
                          else "lfs", "shouldIgnore": False, "oid": None} for f in body["files"]]
                return self._send(200, {"files": files})
            m = re.fullmatch(r"/datasets/([^/]+/[^/]+)\.git/info/lfs/objects/batch", path)
            if m:
                body = json.loads(self._body())
                host = self.headers["Host"]
                objects = []
                for o in body["objects"]:
                    entry = {"oid": o["oid"], "size": o["size"]}
                    if o["oid"] not in state.objects:
                        entry["actions"] = {"upload": {"href": f"http://{host}/lfs-upload/{o['oid']}"}}
                    objects.append(entry)
                return self._send(200, {"transfer": "basic", "objects": objects}, content_type="application/vnd.git-lfs+json")
            m = re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/paths-info/([^/]+)", path)
            if m:
                repo = self._repo(m.group(1))
                if repo is None:
                    return
                raw = self._body().decode()
                form = parse_qs(raw) if not raw.startswith("{") else {"paths": json.loads(raw).get("paths", [])}
                wanted = form.get("paths", [])
                out = [self._entry(repo, p) for p in wanted if p in repo.files]
                out += [{"type": "directory", "path": p, "oid": git_sha(p.encode()), "size": 0}
                        for p in wanted if p not in repo.files and any(f.startswith(p.rstrip("/") + "/") for f in repo.files)]
                return self._send(200, out)
            m = re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/commit/([^/]+)", path)
            if m:
                if self._maybe_fail("commit"):
                    return
                repo = self._repo(m.group(1))
                if repo and m.group(2) != "main":  # no branches here but main (a commit to another one: 404)
                    self._body()
                    return self._error(404, "RevisionNotFound", f"Invalid rev id: {m.group(2)}")
                lines = [json.loads(line) for line in self._body().decode().splitlines() if line.strip()]
                if repo is None:
                    return
                added = []
                with state.lock:
                    for line in lines:
                        key, value = line["key"], line["value"]
                        if key == "file":
                            repo.files[value["path"]] = base64.b64decode(value["content"])
                            repo.lfs.pop(value["path"], None)
                            added.append(value["path"])
                        elif key == "lfsFile":
                            if value["oid"] not in state.objects:
                                return self._error(422, "LfsObjectMissing", f"LFS object {value['oid']} was not uploaded")
                            repo.files[value["path"]] = state.objects[value["oid"]]
                            repo.lfs[value["path"]] = value["oid"]
                            added.append(value["path"])
                        elif key == "deletedFile":
                            repo.files.pop(value["path"], None)
                            repo.lfs.pop(value["path"], None)
                        elif key == "deletedFolder":
                            for p in [p for p in repo.files if p.startswith(value["path"].rstrip("/") + "/")]:
                                repo.files.pop(p)
                                repo.lfs.pop(p, None)
                    repo.commits.append(hashlib.sha1(f"{repo.sha}{lines}".encode()).hexdigest())
                    state.commit_paths.append(added)
                    state.snapshots.append({"repo": m.group(1), **dict(repo.files)})
                return self._send(200, {"commitUrl": f"http://{self.headers['Host']}/datasets/{m.group(1)}/commit/{repo.sha}",
                                        "commitOid": repo.sha})
            self._error(404, "NotFound", f"no route for POST {path}")

        def do_PUT(self):
            with state.lock:
                state.log.append(("PUT", self.path))
            m = re.fullmatch(r"/lfs-upload/([0-9a-f]{64})", urlparse(self.path).path)
            if not m:
                return self._error(404, "NotFound", "no route")
            if self._maybe_fail("upload"):
                return
            data = self._body()
            time.sleep(state.upload_delay_s)
            if hashlib.sha256(data).hexdigest() != m.group(1):
                return self._error(400, "BadChecksum", "sha256 mismatch")
            with state.lock:
                state.objects[m.group(1)] = data
                state.uploads.append(m.group(1))
            self._send(200, b"")

    return Handler


class HubServer:
    """``with HubServer() as hub: ...``: a Hub on ``hub.endpoint``; ``hub.state`` to inspect."""

    def __init__(self):
        self.state = HubState()
        self._bind()

    def _bind(self) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(self.state))
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.pid = os.getpid()

    def __enter__(self) -> HubServer:
        self.thread.start()
        return self

    def serve_here(self) -> bool:
        """In a forked child (mutmut runs each mutant's tests in one), serve this process's own copy
        of the state on a new port: the inherited socket belongs to the parent's serving thread, which
        would answer with the parent's state. Returns whether the endpoint changed."""
        if self.pid == os.getpid():
            return False
        self.httpd.socket.close()  # this process's copy of the parent's socket; the parent keeps serving
        self.state.lock = threading.Lock()  # the parent's may have been held at the fork
        self._bind()
        self.thread.start()
        return True

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

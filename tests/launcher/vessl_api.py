"""A VESSL API on 127.0.0.1: the endpoints the vessl SDK calls to sign in, create, read, log and terminate a run.

Paths and JSON shapes are those of the SDK's generated client (`vessl.openapi_client`); every request must carry
`Authorization: Token <token>`. What the SDK sends is kept (`created_specs`, `requests`) for the tests to read,
and a test moves a run along with `set_status` and `add_log`, or plays the job itself with `on_create` (the spec
in, the run's first status out).
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional
from urllib.parse import parse_qs, urlparse

ORG = r"/api/v1/organizations/(?P<org>[^/]+)"
RUN = ORG + r"/projects/(?P<project>[^/]+)/run_executions/(?P<run>\d+)"


class VesslApi:
    def __init__(self, *, token: str, organization: str, projects: tuple[str, ...], clusters: tuple[str, ...]):
        self.token, self.organization, self.projects, self.clusters = token, organization, projects, clusters
        self.created_specs: list[str] = []
        self.requests: list[tuple[str, str]] = []
        self.runs: dict[int, dict] = {}
        self.on_create: Optional[Callable[[str], str]] = None
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "VesslApi":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def set_status(self, run: int, status: str) -> None:
        with self._lock:
            self.runs[run]["status"] = status

    def add_log(self, run: int, message: str) -> None:
        with self._lock:
            logs = self.runs[run]["logs"]
            logs.append({"message": message, "timestamp": 1_700_000_000.0 + len(logs), "stream": "stdout"})

    # --- the endpoints ---------------------------------------------------------------------------------------

    def answer(self, method: str, path: str, query: dict, body: dict) -> tuple[int, dict]:
        if method == "GET" and path == "/api/v1/accounts/me":
            return 200, {"id": 1, "username": "alice", "email": "alice@example.com"}
        if match := re.fullmatch(ORG, path):
            return self._organization(match) or (200, {"id": 1, "name": self.organization})
        if match := re.fullmatch(ORG + "/projects", path):
            return self._organization(match) or (200, {"results": [{"id": i, "name": name} for i, name in
                                                                    enumerate(self.projects)]})
        if match := re.fullmatch(ORG + "/clusters", path):
            return self._organization(match) or (200, {"clusters": [
                {"id": i, "name": name, "available_gpus": ["A100-80GB"]} for i, name in enumerate(self.clusters)]})
        if method == "POST" and (match := re.fullmatch(ORG + r"/projects/(?P<project>[^/]+)/run/spec/create_from_yaml",
                                                       path)):
            return self._project(match) or self._create(body)
        if match := re.fullmatch(RUN + "/logs", path):
            after = float(query.get("log_start", ["0"])[0])
            return self._run(match) or (200, {"logs": [entry for entry in self.runs[int(match["run"])]["logs"]
                                                       if entry["timestamp"] > after]})
        if method == "POST" and (match := re.fullmatch(RUN + "/terminate", path)):
            if error := self._run(match):
                return error
            self.set_status(int(match["run"]), "stopped")
            return 200, self._info(int(match["run"]))
        if match := re.fullmatch(RUN, path):
            return self._run(match) or (200, self._info(int(match["run"])))
        return 404, {"code": "NotFound", "message": f"no route {method} {path}"}

    def _organization(self, match):
        if match["org"] != self.organization:
            return 404, {"code": "NotFound", "message": f"organization {match['org']} not found"}
        return None

    def _project(self, match):
        if error := self._organization(match):
            return error
        if match["project"] not in self.projects:
            return 404, {"code": "NotFound", "message": f"project {match['project']} not found"}
        return None

    def _run(self, match):
        if error := self._project(match):
            return error
        if int(match["run"]) not in self.runs:
            return 404, {"code": "NotFound", "message": f"run {match['run']} not found"}
        return None

    def _create(self, body: dict) -> tuple[int, dict]:
        status = self.on_create(body["yaml_spec"]) if self.on_create else "pending"
        with self._lock:
            self.created_specs.append(body["yaml_spec"])
            run = 4200 + len(self.created_specs)
            self.runs[run] = {"status": status, "logs": []}
        return 200, {"run_execution": {"id": run, "status": status}}

    def _info(self, run: int) -> dict:
        return {"id": run, "status": self.runs[run]["status"]}

    def _handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self):
                url = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                api.requests.append((self.command, url.path))
                if self.headers.get("Authorization") != f"Token {api.token}":
                    status, answer = 401, {"code": "Unauthorized", "message": "invalid token"}
                else:
                    status, answer = api.answer(self.command, url.path, parse_qs(url.query), body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _serve

            def log_message(self, *args):  # quiet: the tests read `requests`
                pass

        return Handler

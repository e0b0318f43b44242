"""The hub is safe by default: user data is shown as text, a token guards every request when one is set, state
changes need CSRF proof, and without a token it answers only on this machine."""

from __future__ import annotations

import json
import time

import pytest

from hub_helpers import client_for, hub_project
from launch_helpers import run_launch
from launcher.registry import Registry, RunRecord
from spottrain_contract.job import RunState

EVIL_NAME = "<img src=x onerror=alert(1)>"
EVIL_LINE = "<script>alert(1)</script>"


@pytest.fixture
def project(tmp_path):
    return hub_project(tmp_path / "project")


def evil_run(project) -> str:
    """A finished run here whose name, failure and log line are HTML."""
    registry = Registry(project)
    log = registry.log_path("evil-run")
    log.write_text(f"step 1\n{EVIL_LINE}\n")
    registry.save(RunRecord(run_id="evil-run", recipe="baseline", target="local", state=RunState.FAILED,
                            started=time.time(), store=str(project / "runs/store"),
                            local_dir=str(project / "runs/local"), tracking_uri="", log=str(log),
                            project=str(project), handle={"failure": EVIL_LINE, "hub": {
                                "name": EVIL_NAME, "recipe": "baseline", "target": "local", "profile": "local",
                                "overrides": {}}}))
    return "evil-run"


def test_names_and_errors_render_as_text(project):
    run_id = evil_run(project)
    with client_for(project) as client:
        for page in ("/", f"/runs/{run_id}"):
            html = client.get(page).text
            assert EVIL_NAME not in html and EVIL_LINE not in html
            assert "&lt;img src=x onerror=alert(1)&gt;" in html or "\\u003cimg" in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in client.get(f"/runs/{run_id}").text  # the failure line


def test_log_lines_stream_as_json_text(project):
    run_id = evil_run(project)
    with client_for(project) as client:
        body = client.get(f"/api/runs/{run_id}/events").text  # the run is over: the stream ends
    events = [block for block in body.split("\n\n") if block.startswith("event: log")]
    lines = [line for block in events for line in json.loads(block.split("data: ", 1)[1])["lines"]]
    assert EVIL_LINE + "\n" in lines
    assert body.rstrip().splitlines()[-2:] == ["event: end", 'data: {"state": "failed"}']


def test_with_a_token_a_request_without_it_is_401(project):
    with client_for(project, token="s3cret") as client:
        assert client.get("/api/runs").status_code == 401
        assert client.get("/").status_code == 401
        assert client.get("/api/events").status_code == 401
        assert client.get("/api/runs", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/api/runs", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_the_login_form_sets_a_strict_httponly_cookie(project):
    with client_for(project, token="s3cret") as client:
        assert client.post("/login", data={"token": "wrong", "next": "/"}).status_code == 401
        signed_in = client.post("/login", data={"token": "s3cret", "next": "/new"}, follow_redirects=False)
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/new"
        cookie = signed_in.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "s3cret" not in cookie
        assert client.get("/api/runs").status_code == 200


def test_a_post_without_csrf_proof_is_refused(project):
    with client_for(project) as client:
        body = {"recipe": "baseline"}
        assert client.post("/api/runs", json=body, headers={"X-Spottrain-CSRF": ""}).status_code == 403
        assert client.post("/api/runs", json=body, headers={"X-Spottrain-CSRF": "other"}).status_code == 403
        assert client.post("/api/runs", json=body, headers={"Origin": "http://evil.example"}).status_code == 403
        assert client.post("/api/runs", json=body, headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
        assert client.get("/api/runs").json() == []
        assert client.post("/api/runs", json=body).status_code == 201


def test_a_bearer_request_needs_no_csrf_header(project):
    with client_for(project, token="s3cret") as client:
        del client.headers["X-Spottrain-CSRF"]
        made = client.post("/api/runs", json={"recipe": "baseline"}, headers={"Authorization": "Bearer s3cret"})
        assert made.status_code == 201


def test_a_stream_from_another_origin_is_refused(project):
    with client_for(project) as client:
        assert client.get("/api/events", headers={"Origin": "http://evil.example"}).status_code == 403


def test_without_a_token_only_loopback_names_are_answered(project):
    with client_for(project) as client:
        assert client.get("/api/runs", headers={"Host": "evil.example"}).status_code == 403


def test_hub_on_a_public_address_without_a_token_exits_2(project, tmp_path):
    done = run_launch("hub", "--host", "0.0.0.0", home=tmp_path, cwd=project)
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["error: --host 0.0.0.0: the hub would be reachable from other machines: "
                                        "give it a token (--token or SPOTTRAIN_HUB_TOKEN), or listen on 127.0.0.1"]


def _sign_in_form(page) -> tuple[str, dict]:
    """The login form of a page: (where it posts, its hidden fields)."""
    import html as html_lib
    import re

    form = re.search(r'<form method="post" action="([^"]*)">(.*?)</form>', page.text, re.S)
    assert form, page.text
    hidden = dict(re.findall(r'<input type="hidden" name="([^"]*)" value="([^"]*)">', form.group(2)))
    return html_lib.unescape(form.group(1)), {k: html_lib.unescape(v) for k, v in hidden.items()}


def test_signing_in_returns_to_the_page_asked_for(project):
    """From the page asked for (even after a wrong token first), and from /login?next=; never off the hub."""
    run_id = evil_run(project)
    asked = f"/runs/{run_id}?tab=log"
    with client_for(project, token="s3cret") as client:
        refused = client.get(asked)
        assert refused.status_code == 401
        action, hidden = _sign_in_form(refused)
        assert hidden["next"] == asked
        wrong = client.post(action, data={**hidden, "token": "wrong"})
        assert wrong.status_code == 401 and "That token is not the hub" in wrong.text
        action, hidden = _sign_in_form(wrong)
        landed = client.post(action, data={**hidden, "token": "s3cret"})
        assert landed.status_code == 200 and landed.url.path + "?" + landed.url.query.decode() == asked
        assert [step.status_code for step in landed.history] == [303]
    with client_for(project, token="s3cret") as client:
        action, hidden = _sign_in_form(client.get(f"/login?next=/runs/{run_id}"))
        assert hidden["next"] == f"/runs/{run_id}"
        landed = client.post(action, data={**hidden, "token": "s3cret"})
        assert landed.status_code == 200 and landed.url.path == f"/runs/{run_id}"
    for elsewhere in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "/login", "runs/x"):
        with client_for(project, token="s3cret") as client:
            action, hidden = _sign_in_form(client.get("/login", params={"next": elsewhere}))
            done = client.post(action, data={**hidden, "token": "s3cret"}, follow_redirects=False)
            assert done.headers["location"] == "/", elsewhere

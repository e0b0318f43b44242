"""The hub's pages render from the registry and the recipe schema (the browser test drives them live)."""

from __future__ import annotations

import re

import pytest

from hub_helpers import client_for, hub_project


@pytest.fixture
def client(tmp_path):
    with client_for(hub_project(tmp_path / "project")) as client:
        yield client


def test_the_new_run_form_comes_from_the_recipe_schema(client):
    html = client.get("/new?recipe=baseline&target=local").text
    lr = re.search(r'<input class="field" id="f-train\.optim\.lr"[^>]*>', html).group(0)
    assert 'value="0.001"' in lr and 'data-kind="float"' in lr  # the local profile's value
    assert "Peak learning rate (AdamW)." in html
    precision = re.search(r'id="f-train\.deepspeed\.precision".*?</select>', html, re.S).group(0)
    assert re.findall(r'<option value="([^"]*)"', precision) == ["bf16", "fp16", "fp32"]
    assert re.search(r'<option value="local"\s+selected>', html)


def test_every_page_renders(client):
    base = client.post("/api/runs", json={"recipe": "baseline", "name": "a"}).json()["id"]
    copy = client.post(f"/api/runs/{base}/clone", json={"overrides": {"train.optim.lr": "2e-3"}}).json()["id"]
    for page in ("/", "/new", f"/new?draft={copy}", f"/runs/{base}", f"/compare?run={base}&run={copy}",
                 "/static/plotly.min.js", "/static/hub.js"):
        assert client.get(page).status_code == 200, page
    draft_form = client.get(f"/new?draft={copy}").text
    assert re.search(r'id="f-train\.optim\.lr" name="train\.optim\.lr" value="0.002" data-base="0.001"', draft_form)
    compare = client.get(f"/compare?run={base}&run={copy}").text
    assert re.findall(r'class="mono diff-key">([^<]*)<', compare) == ["train.optim.lr"]


def test_an_unknown_run_page_is_404(client):
    assert client.get("/runs/nope").status_code == 404


def _title_and_heading(html: str) -> tuple[str, str]:
    return (re.search(r"<title>(.*?)</title>", html, re.S).group(1).strip(),
            re.search(r"<h1>(.*?)</h1>", html, re.S).group(1).strip())


def test_the_404_page_says_not_found_and_other_errors_keep_their_wording(client):
    missing = client.get("/runs/nope")
    assert missing.status_code == 404
    title, heading = _title_and_heading(missing.text)
    assert title.startswith("Not found") and heading == "Not found"
    assert re.search(r'<p class="error" id="error">[^<]*nope', missing.text)
    refused = client.get("/compare?run=only-one")
    assert refused.status_code == 400
    title, heading = _title_and_heading(refused.text)
    assert "Not found" not in title and heading == "Not possible"


def test_a_required_field_says_what_it_requires(client):
    html = client.get("/new?recipe=baseline&target=local").text
    lr = re.search(r'<input class="field" id="f-train\.optim\.lr"[^>]*>', html).group(0)
    assert 'placeholder="required: Peak learning rate (AdamW)."' in lr
    assert re.search(r'<span class="req" title="required: Peak learning rate \(AdamW\)\.">required</span>', html)
    optional = re.search(r'<input class="field" id="f-train\.max_steps"[^>]*>', html).group(0)
    assert "required" not in optional

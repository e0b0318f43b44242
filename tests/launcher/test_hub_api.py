"""The hub's JSON API over a project with the real recipes: drafts, clone, compare, launch, stop; on the project's
SQLite file and on a real PostgreSQL (SPOTTRAIN_DB)."""

from __future__ import annotations

import time

import pytest

from hub_helpers import TINY, client_for, hub_project, wait_for_state


@pytest.fixture
def project(tmp_path):
    return hub_project(tmp_path / "project")


@pytest.fixture
def client(project, db_url, monkeypatch):
    if db_url.startswith("postgresql"):
        monkeypatch.setenv("SPOTTRAIN_DB", db_url)  # else the project's own SQLite file, the default
    with client_for(project) as client:
        yield client


@pytest.fixture
def sqlite_client(project):
    with client_for(project) as client:
        yield client


def test_a_saved_draft_is_listed_and_read_back(client):
    made = client.post("/api/runs", json={"recipe": "baseline", "target": "local", "name": "first try",
                                          "overrides": {"train.optim.lr": "2e-3"}, "launch": False})
    assert made.status_code == 201, made.text
    run_id = made.json()["id"]
    listed = client.get("/api/runs").json()
    assert [(r["id"], r["name"], r["state"]) for r in listed] == [(run_id, "first try", "draft")]
    run = client.get(f"/api/runs/{run_id}").json()
    assert (run["recipe"], run["target"], run["state"], run["step"], run["profile"]) == (
        "baseline", "local", "draft", None, "local")
    assert run["overrides"] == {"train.optim.lr": "2e-3"}  # the shape POST /api/runs takes


def test_a_bad_override_is_the_loaders_one_line_error(client):
    made = client.post("/api/runs", json={"recipe": "baseline", "overrides": {"train.optim.lr": "-1"}})
    assert made.status_code == 400
    assert made.json()["error"].startswith("--override: train.optim.lr: ")
    assert "\n" not in made.json()["error"]
    reason = made.json()["fields"]["train.optim.lr"]  # what the form puts beside the field
    assert made.json()["error"].endswith(reason)
    assert client.get("/api/runs").json() == []


def test_an_unknown_run_is_404_with_the_clis_message(client):
    missing = client.get("/api/runs/nope")
    assert missing.status_code == 404
    assert missing.json() == {"error": "no run 'nope' launched from this project"}


def test_a_clone_with_another_lr_differs_in_exactly_that_key(client):
    run_id = client.post("/api/runs", json={"recipe": "baseline", "name": "base"}).json()["id"]
    cloned = client.post(f"/api/runs/{run_id}/clone", json={"overrides": {"train.optim.lr": 0.002}})
    assert cloned.status_code == 201, cloned.text
    copy = client.get(f"/api/runs/{cloned.json()['id']}").json()
    assert (copy["name"], copy["state"]) == ("base (copy)", "draft")
    compared = client.get("/api/compare", params={"run": [run_id, copy["id"]]}).json()
    assert compared["config_diff"] == {"train.optim.lr": ["0.001", "0.002"]}


def test_a_dry_run_shows_the_document_with_secrets_masked(client, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_very_secret_value")
    plan = client.post("/api/dry-run", json={"recipe": "baseline", "target": "local"}).json()
    assert "hf_very_secret_value" not in plan["document"]
    assert "recipe     baseline" in plan["summary"]


def test_launch_status_lists_a_draft(client, project, tmp_path):
    from launch_helpers import run_launch

    run_id = client.post("/api/runs", json={"recipe": "baseline"}).json()["id"]
    done = run_launch("status", home=tmp_path, cwd=project)
    assert done.returncode == 0, done.stderr
    assert run_id in done.stdout and "draft" in done.stdout


def test_stopping_a_draft_is_refused(client):
    run_id = client.post("/api/runs", json={"recipe": "baseline"}).json()["id"]
    refused = client.post(f"/api/runs/{run_id}/stop")
    assert refused.status_code == 400
    assert "draft" in refused.json()["error"]


def finished_runs(project, count: int) -> list[str]:
    """`count` finished SkyPilot runs in the project's run database, oldest first."""
    from launcher.registry import Registry, RunRecord
    from spottrain_contract.job import RunState

    registry, ids = Registry(project), [f"run-{i}" for i in range(count)]
    for i, run_id in enumerate(ids):
        registry.save(RunRecord(run_id=run_id, recipe="baseline", target="skypilot", state=RunState.FINISHED,
                                started=1000.0 + i, store="s3://b/runs", local_dir="/workspace/local",
                                tracking_uri="", handle={"job_id": i}, project=str(project)))
    return ids


def test_the_run_list_is_the_newest_page_oldest_first_and_says_the_total(client, project):
    ids = finished_runs(project, 5)
    everything = client.get("/api/runs")
    assert [r["id"] for r in everything.json()] == ids and everything.headers["X-Total-Count"] == "5"
    assert [r["id"] for r in client.get("/api/runs", params={"limit": 2}).json()] == ids[3:]
    assert [r["id"] for r in client.get("/api/runs", params={"limit": 2, "offset": 2}).json()] == ids[1:3]
    assert client.get("/api/runs", params={"offset": 5}).json() == []
    assert client.get("/api/runs", params={"limit": 0}).status_code == 422


def test_a_finished_run_is_listed_without_asking_its_platform(client, project, monkeypatch):
    from launcher.targets import skypilot

    def asked(record):
        raise AssertionError("a finished run's platform was asked for its state")

    monkeypatch.setattr(skypilot, "status", asked)
    run_id = finished_runs(project, 1)[0]
    assert [(r["id"], r["state"]) for r in client.get("/api/runs").json()] == [(run_id, "finished")]
    assert client.get(f"/api/runs/{run_id}").json()["state"] == "finished"
    assert client.get("/").status_code == 200


@pytest.mark.slow
def test_a_launched_draft_trains_to_the_end_and_a_stopped_run_is_stopped(sqlite_client):
    client = sqlite_client
    run_id = client.post("/api/runs", json={"recipe": "baseline", "overrides": TINY}).json()["id"]
    launched = client.post(f"/api/runs/{run_id}/launch")
    assert launched.status_code == 200, launched.text
    finished = wait_for_state(client, run_id, {"finished", "failed", "stopped"})
    assert (finished["state"], finished["step"], finished["total_steps"]) == ("finished", 6, 6), finished
    assert "train/loss" in client.get(f"/api/runs/{run_id}/metrics").json()

    long = client.post("/api/runs", json={"recipe": "baseline", "launch": True,
                                          "overrides": {"train.max_steps": 400}}).json()["id"]
    wait_for_state(client, long, {"running"}, training=True)
    stopped = client.post(f"/api/runs/{long}/stop")
    assert stopped.json()["state"] == "stopped", stopped.text
    assert client.get(f"/api/runs/{long}").json()["state"] == "stopped"

    stopped_at = client.get(f"/api/runs/{long}").json()["step"]
    resumed = client.post(f"/api/runs/{long}/resume")  # Resume: the same run id, from its stop's checkpoint
    assert resumed.json() == {"id": long, "state": "launching"}, resumed.text
    deadline = time.monotonic() + 240
    while client.get(f"/api/runs/{long}").json()["step"] <= stopped_at:
        assert time.monotonic() < deadline, client.get(f"/api/runs/{long}").json()
        time.sleep(0.5)
    assert client.post(f"/api/runs/{long}/stop").json()["state"] == "stopped"
    assert client.get(f"/api/runs/{long}").json()["restarts"] == 0  # a new attempt by hand, not a restart


@pytest.mark.slow  # ~20 s of 1,000 requests: the fast tier keeps its 3 minutes
def test_a_thousand_concurrent_new_runs_are_all_kept_even_when_their_ids_clash(sqlite_client, project, monkeypatch):
    """Creating a draft inserts, never overwrites: here every other id a request draws is the one id the first
    draft took, so each request but one finds its first id taken and draws again."""
    import itertools
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from launcher.operations import drafts

    draws, each_thread = itertools.count(), threading.local()  # a request's draws are all on one thread

    def clashing_ids(recipe_name, now=None):
        each_thread.clash = not getattr(each_thread, "clash", False)
        return f"{recipe_name}-clash" if each_thread.clash else f"{recipe_name}-fresh-{next(draws)}"

    monkeypatch.setattr(drafts, "new_run_id", clashing_ids)

    def create(n):
        return sqlite_client.post("/api/runs", json={"recipe": "baseline", "name": f"draft {n}"})

    with ThreadPoolExecutor(20) as pool:
        made = list(pool.map(create, range(1000)))
    assert [m.status_code for m in made] == [201] * 1000
    ids = {m.json()["id"] for m in made}
    listed = sqlite_client.get("/api/runs", params={"limit": 2000}).json()
    assert len(ids) == 1000 and {r["id"] for r in listed} == ids
    assert sorted(r["name"] for r in listed) == sorted(f"draft {n}" for n in range(1000))  # none replaced
    assert next(draws) >= 999  # every request but the first to draw the clashing id drew a fresh one

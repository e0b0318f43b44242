"""`launch recipe NAME --target vessl` and the lifecycle verbs, through the real vessl SDK, against a VESSL API
served on 127.0.0.1 (`VESSL_API_HOST`): the body `create_run` sends validates against our VESSL schema, inline
secret values exist only in that body, and status, logs --follow and stop reach the run by its VESSL id."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from launch_helpers import copy_real_recipes, launch_env, launch_executable, plan_launch
from launcher.errors import LaunchError
from launcher.registry import Registry, RunRecord
from launcher.secrets import ResolvedSecrets
from launcher.targets import vessl
from spottrain_contract.job import RECIPE_ENV, RUN_ID_ENV, RunState
from spottrain_contract.layout import Manifest
from spottrain_contract.recipe import from_shipped
from vessl_api import VesslApi

TOKEN = "vessl-token-abc"
SECRETS = {"MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": "p@ss: {{x}}\n|&",
           "AWS_ACCESS_KEY_ID": "AKIA-test", "AWS_SECRET_ACCESS_KEY": "s3cr3t/+=", "HF_TOKEN": "hf_abc"}
REPO = "code.repo=github.com/acme/wmtp"


@pytest.fixture(scope="module")
def api():
    with VesslApi(token=TOKEN, organization="acme", projects=("wmtp", "sandbox"),
                  clusters=("vessl-gcp-oregon",)) as server:
        yield server


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return copy_real_recipes(tmp_path_factory.mktemp("vessl") / "project")


def vessl_env(home: Path, api: VesslApi, **changes) -> dict:
    env = {**launch_env(home), "VESSL_API_HOST": api.url, "VESSL_ACCESS_TOKEN": TOKEN,
           "VESSL_DEFAULT_ORGANIZATION": "acme", "VESSL_DEFAULT_PROJECT": "wmtp", **SECRETS}
    env.update(changes)
    return {k: v for k, v in env.items() if v is not None}


def run_vessl(*args, api, project, home, **changes) -> subprocess.CompletedProcess:
    """`launch ARGS` as a script runs it: no terminal, so launches say --yes."""
    confirmed = ["--yes"] if args[0] in ("recipe", "pipeline") else []
    return subprocess.run([launch_executable(), *args, *confirmed], cwd=project, env=vessl_env(home, api, **changes),
                          capture_output=True, text=True, timeout=120)


def on_a_terminal(args: list[str], answer: str, *, api, project, home) -> tuple[int, str]:
    """`launch ARGS` on a pseudo-terminal, answering `answer` to its question: (exit code, what it showed)."""
    master, terminal = pty.openpty()
    process = subprocess.Popen([launch_executable(), *args], cwd=project, env=vessl_env(home, api), stdin=terminal,
                               stdout=terminal, stderr=terminal, close_fds=True)
    os.close(terminal)
    shown, answered, deadline = b"", False, time.monotonic() + 60
    while time.monotonic() < deadline:
        if select.select([master], [], [], 0.2)[0]:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the other end closed: the command is done
                break
            shown += chunk
            if not answered and b"? [y/N]" in shown:
                os.write(master, answer.encode() + b"\n")
                answered = True
        elif process.poll() is not None:
            break
    os.close(master)
    return process.wait(timeout=60), shown.decode(errors="replace")


@pytest.fixture(scope="module")
def launched(api, project, private_home):
    done = run_vessl("recipe", "rho1", "--target", "vessl", "--override", REPO, "--override", "secrets_mode=inline",
                     "--run-id", "rho1-inline", api=api, project=project, home=private_home)
    assert done.returncode == 0, done.stderr
    return done, Registry(project).get("rho1-inline"), api.created_specs[-1]


def test_the_body_create_run_sends_validates_against_our_vessl_schema(launched):
    _, record, spec = launched
    vessl.validate(spec)
    body = yaml.safe_load(spec)
    assert body["resources"] == {"cluster": "vessl-gcp-oregon", "preset": "gpu-a100-large-spot"}
    assert body["env"][RUN_ID_ENV] == record.run_id  # a restarted run resumes by it


def test_inline_secret_values_are_only_in_the_body_sent(launched, project):
    done, record, spec = launched
    env = yaml.safe_load(spec)["env"]
    assert {name: env[name] for name in SECRETS} == SECRETS
    written = b"".join(p.read_bytes() for p in project.rglob("*") if p.is_file())  # the run database's file too
    for value in SECRETS.values():
        assert value not in done.stdout + done.stderr
        assert value.encode() not in written


def test_the_registry_finds_the_run_by_its_vessl_id(launched, api):
    done, record, _ = launched
    assert record.target == "vessl"
    assert record.handle["vessl_run"] in api.runs
    assert (record.handle["organization_name"], record.handle["project_name"]) == ("acme", "wmtp")
    assert f"launched {record.run_id} on vessl ({record.handle['url']})" in done.stdout


def test_status_logs_and_follow_read_the_run_on_vessl(launched, api, project, private_home):
    _, record, _ = launched
    run = record.handle["vessl_run"]
    api.set_status(run, "running")
    api.add_log(run, "step 1 loss 2.5")
    status = run_vessl("status", record.run_id, api=api, project=project, home=private_home)
    assert status.returncode == 0, status.stderr
    assert status.stdout.splitlines()[1].split()[:4] == [record.run_id, "rho1", "vessl", "running"]
    assert run_vessl("logs", record.run_id, api=api, project=project, home=private_home).stdout == "step 1 loss 2.5\n"

    follow = subprocess.Popen([launch_executable(), "logs", record.run_id, "--follow"], cwd=project,
                              env=vessl_env(private_home, api), stdout=subprocess.PIPE, text=True)
    assert follow.stdout.readline() == "step 1 loss 2.5\n"
    api.add_log(run, "step 2 loss 2.1\\nsaved checkpoint step-2")  # VESSL sends newlines escaped
    api.set_status(run, "completed")
    out, _ = follow.communicate(timeout=60)
    assert follow.returncode == 0
    assert out == "step 2 loss 2.1\nsaved checkpoint step-2\n"
    finished = run_vessl("status", record.run_id, api=api, project=project, home=private_home)
    assert finished.stdout.splitlines()[1].split()[3] == "finished"


def test_stop_terminates_the_run_on_vessl(api, project, private_home):
    done = run_vessl("recipe", "rho1", "--target", "vessl", "--override", REPO, "--run-id", "rho1-to-stop",
                     api=api, project=project, home=private_home)
    assert done.returncode == 0, done.stderr
    run = Registry(project).get("rho1-to-stop").handle["vessl_run"]
    api.set_status(run, "running")
    stopped = run_vessl("stop", "rho1-to-stop", api=api, project=project, home=private_home)
    assert stopped.stdout.strip() == "run rho1-to-stop stopped"
    assert ("POST", f"/api/v1/organizations/acme/projects/wmtp/run_executions/{run}/terminate") in api.requests
    assert api.runs[run]["status"] == "stopped"


def test_status_of_all_runs_still_lists_them_when_vessl_is_out_of_reach(launched, api, project, private_home):
    """A live run is `unknown` with a warning; a run that ended is listed as its record says, not asked again."""
    live = launched[1].run_id
    registry = Registry(project)
    was = registry.get(live).state
    registry.update(live, state=RunState.RUNNING)  # as far as its record knows
    try:
        done = run_vessl("status", api=api, project=project, home=private_home, VESSL_API_HOST="http://127.0.0.1:9")
    finally:
        registry.update(live, state=was)
    assert done.returncode == 0, done.stderr
    states = {row[0]: row[3] for row in (line.split() for line in done.stdout.splitlines()[1:])}
    assert states.pop(live) == "unknown"
    assert states and set(states.values()) <= {"finished", "stopped", "failed"}
    (warning,) = done.stderr.splitlines()
    assert warning.startswith(f"warning: {live}: ") and "cannot reach the VESSL API" in warning


def test_platform_secrets_are_references_and_need_no_values(api, project, private_home):
    no_values = {name: None for name in SECRETS}
    done = run_vessl("recipe", "rho1", "--target", "vessl", "--override", REPO, "--run-id", "rho1-platform",
                     api=api, project=project, home=private_home, **no_values)
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load(api.created_specs[-1])["env"]["HF_TOKEN"] == {"secret": "HF_TOKEN"}


@pytest.mark.parametrize("changes, expected", [
    ({"VESSL_ACCESS_TOKEN": "wrong"}, "error: VESSL is not configured: Expired. Please renew your access token: "
                                      "set VESSL_ACCESS_TOKEN, VESSL_DEFAULT_ORGANIZATION, VESSL_DEFAULT_PROJECT "
                                      "(environment or .env), or run `vessl configure`"),
    ({"VESSL_ACCESS_TOKEN": None}, "error: VESSL is not configured: No access token found: set VESSL_ACCESS_TOKEN"),
    ({"VESSL_DEFAULT_ORGANIZATION": "acne"}, "error: VESSL is not configured: Invalid organization acne: set "),
    ({"VESSL_DEFAULT_PROJECT": "nope"}, 'error: VESSL is not configured: Invalid project "nope": set '),
    ({"VESSL_API_HOST": "http://127.0.0.1:9"}, "error: VESSL sign-in failed: cannot reach the VESSL API"),
])
def test_missing_or_wrong_configuration_is_one_line(api, project, private_home, changes, expected):
    before = len(api.created_specs)
    done = run_vessl("recipe", "rho1", "--target", "vessl", "--override", REPO, api=api, project=project,
                     home=private_home, **changes)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith(expected)
    assert len(api.created_specs) == before


def test_a_cluster_vessl_does_not_know_is_refused_with_its_reason(api, project, private_home):
    done = run_vessl("recipe", "rho1", "--target", "vessl", "--override", REPO, "--override",
                     "resources.vessl.cluster=vessl-aws-seoul", api=api, project=project, home=private_home)
    assert done.returncode == 2
    assert done.stderr.strip() == ("error: VESSL refused the run: vessl-aws-seoul cluster does not exist! "
                                   "Please select among ['vessl-gcp-oregon'].")


def test_the_placeholder_repository_is_refused_before_anything_is_sent(api, project, private_home):
    sent = len(api.requests)
    done = run_vessl("recipe", "rho1", "--target", "vessl", api=api, project=project, home=private_home)
    assert done.stderr.strip().startswith("error: recipes/rho1.yaml: code.repo: VESSL clones the code from git")
    assert len(api.requests) == sent


def test_without_the_vessl_extra_the_error_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "vessl", None)  # what `import vessl` meets where the extra is not installed
    plan = plan_launch("rho1", target="vessl", project_dir=copy_real_recipes(tmp_path / "p", ("rho1",)),
                       run_id="r", overrides=[REPO])
    record = RunRecord(run_id="r", recipe="rho1", target="vessl", state=RunState.LAUNCHING, started=0.0, store="",
                       local_dir="", tracking_uri="", project=str(tmp_path))
    with pytest.raises(LaunchError, match=r"^the vessl SDK is not installed: `pip install -e '.\[vessl\]'`"):
        vessl.launch(plan, "document", ResolvedSecrets({}), record)


# --- launch pipeline on VESSL: each stage waits for the last; verifiable starts from this pipeline's critic ----

def finished_critic(store: Path, run_id: str, best: int) -> None:
    """What a critic job leaves in the store: a final checkpoint (manifest last) and the pointer to its best."""
    for step in (best, best + 4):
        (store / run_id / f"step-{step:08d}").mkdir(parents=True)
        manifest = Manifest(step=step, world_size=1, final=step == best + 4)
        (store / run_id / f"step-{step:08d}" / "MANIFEST.json").write_bytes(manifest.to_json())
    (store / run_id / "BEST.json").write_text(json.dumps({"step": best}))


@pytest.fixture
def platform(api, tmp_path):
    """The fake VESSL runs each job at once: it completes, and a critic leaves its checkpoints (unless told not
    to). A newer-looking critic run from elsewhere sits in the store, which the pipeline must not take."""
    store = tmp_path / "store"
    finished_critic(store, "critic-29990101-000000-ffff", best=8)
    runs = {"critics_checkpoint": True}

    def run_job(spec: str) -> str:
        run_id = yaml.safe_load(spec)["env"][RUN_ID_ENV]
        if run_id.startswith("critic-") and runs["critics_checkpoint"]:
            finished_critic(store, run_id, best=4)
        return "completed"

    api.on_create = run_job
    yield store, runs
    api.on_create = None


def test_a_pipeline_on_vessl_runs_its_stages_in_order_from_its_own_critic(api, project, private_home, platform):
    store, _ = platform
    before = len(api.created_specs)
    done = run_vessl("pipeline", "wmtp", "--target", "vessl", "--override", REPO, "--override",
                     f"train.checkpoint.uri={store}", api=api, project=project, home=private_home)
    assert done.returncode == 0, done.stderr
    specs = [yaml.safe_load(spec) for spec in api.created_specs[before:]]
    run_ids = [spec["env"][RUN_ID_ENV] for spec in specs]
    assert [run_id.split("-")[0] for run_id in run_ids] == ["critic", "verifiable", "baseline", "rho1"]
    shipped = from_shipped(specs[1]["env"][RECIPE_ENV], RECIPE_ENV)
    assert shipped.overrides[-1] == f"train.verifiable.critic_checkpoint={store}/{run_ids[0]}/step-00000004"


def test_a_pipeline_stops_when_its_critic_left_no_checkpoint(api, project, private_home, platform):
    store, runs = platform
    runs["critics_checkpoint"] = False
    before = len(api.created_specs)
    done = run_vessl("pipeline", "wmtp", "--target", "vessl", "--override", REPO, "--override",
                     f"train.checkpoint.uri={store}", api=api, project=project, home=private_home)
    assert done.returncode == 2
    (critic,) = [yaml.safe_load(spec)["env"][RUN_ID_ENV] for spec in api.created_specs[before:]]
    assert done.stderr.strip() == (f"error: recipes/verifiable.yaml: train.verifiable.critic_checkpoint: critic "
                                   f"run {critic} of this pipeline finished without a complete final checkpoint "
                                   f"and a BEST.json in {store}")


def test_a_second_attempt_of_a_run_live_on_vessl_is_refused(launched, api, project, private_home):
    _, record, _ = launched
    run = record.handle["vessl_run"]
    api.set_status(run, "running")
    sent = len(api.created_specs)
    try:
        done = run_vessl("recipe", "rho1", "--target", "vessl", "--override", REPO, "--override",
                         "secrets_mode=inline", "--run-id", record.run_id, api=api, project=project, home=private_home)
    finally:
        api.set_status(run, "completed")
    assert (done.returncode, done.stderr.strip()) == (2, f"error: run {record.run_id} is live on vessl (running): "
                                                         f"stop it first (launch stop {record.run_id}) or follow it "
                                                         f"(launch logs {record.run_id} --follow)")
    assert len(api.created_specs) == sent


# --- a launch on a paid platform asks first --------------------------------------------------------------------

def test_answering_no_at_the_prompt_submits_nothing(api, project, private_home):
    sent = len(api.created_specs)
    code, shown = on_a_terminal(["recipe", "rho1", "--target", "vessl", "--override", REPO, "--run-id", "asked-no"],
                                "n", api=api, project=project, home=private_home)
    assert "store      s3://weighted-mtp-checkpoints/runs" in shown and "Launch? [y/N]" in shown
    assert (code, len(api.created_specs)) == (1, sent)
    assert "nothing launched" in shown


@pytest.mark.slow  # a launch driven through a pseudo-terminal: ~10 s of a CLI process
def test_answering_yes_at_the_prompt_submits_the_run(api, project, private_home):
    sent = len(api.created_specs)
    code, shown = on_a_terminal(["recipe", "rho1", "--target", "vessl", "--override", REPO, "--run-id", "asked-yes"],
                                "y", api=api, project=project, home=private_home)
    assert (code, len(api.created_specs)) == (0, sent + 1), shown
    assert yaml.safe_load(api.created_specs[-1])["env"][RUN_ID_ENV] == "asked-yes"


def test_without_a_terminal_and_without_yes_nothing_is_submitted(api, project, private_home):
    sent = len(api.created_specs)
    done = subprocess.run([launch_executable(), "recipe", "rho1", "--target", "vessl", "--override", REPO],
                          cwd=project, env=vessl_env(private_home, api), capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert (done.returncode, done.stderr.strip()) == (
        2, "error: a launch on vessl spends money: answer its prompt on a terminal, or pass --yes")
    assert len(api.created_specs) == sent


def test_a_pipeline_asks_once_for_all_its_jobs(api, project, private_home):
    sent = len(api.created_specs)
    code, shown = on_a_terminal(["pipeline", "wmtp", "--target", "vessl", "--override", REPO], "n", api=api,
                                project=project, home=private_home)
    assert "Launch 4 jobs on vessl, one after another (critic, verifiable, baseline, rho1)? [y/N]" in shown
    assert (code, len(api.created_specs)) == (1, sent)

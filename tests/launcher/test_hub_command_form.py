"""The New run form of a command recipe: a field per `config` key from its JSON Schema (or from the types its
values imply), the profiles as presets, and a bad value refused with the loader's one-line error."""

from __future__ import annotations

import re

import pytest

from hub_helpers import client_for, command_project


@pytest.fixture
def client(tmp_path):
    with client_for(command_project(tmp_path / "project")) as client:
        yield client


def field(html: str, key: str) -> str:
    """The field's input (or select, with its options) as the page renders it."""
    escaped = re.escape(key)
    found = re.search(rf'<select class="field" id="f-{escaped}".*?</select>|<input class="field" id="f-{escaped}"[^>]*>',
                      html, re.S)
    assert found, f"no field {key}"
    return found.group(0)


def options(select: str) -> list[str]:
    return re.findall(r'<option value="([^"]*)"', select)


def test_the_fields_come_from_the_config_schema(client):
    html = client.get("/new?recipe=script_schema&target=local").text
    keys = re.findall(r'<label for="f-([^"]+)">', html)
    assert keys[:8] == ["config.model.backbone", "config.model.freeze_backbone", "config.training.lr",
                        "config.training.max_epochs", "config.training.batch_size", "config.loss.temperature",
                        "config.loss.bits", "config.loss.normalize"]  # the schema's order, a `$ref` followed
    assert [key for key in keys[8:] if not key.startswith("train.checkpoint.")] == []  # then spottrain's own
    assert options(field(html, "config.model.backbone")) == ["small", "large"]
    assert options(field(html, "config.model.freeze_backbone")) == ["true", "false"]
    lr = field(html, "config.training.lr")
    assert 'value="0.001"' in lr and 'data-kind="float"' in lr and "Peak learning rate." in html
    epochs = field(html, "config.training.max_epochs")
    assert 'value="1"' in epochs and 'data-kind="int"' in epochs  # the local profile's value
    assert 'data-kind="yaml"' in field(html, "config.training.batch_size")  # an integer or a string
    temperature = field(html, "config.loss.temperature")
    assert 'placeholder="required: Softmax temperature of the contrastive loss."' in temperature
    assert 'data-kind="yaml"' in field(html, "config.loss.bits") and "[16, 32]" in html  # its default
    unset = field(html, "config.loss.normalize")  # not written: the select shows it unset, no override
    assert options(unset) == ["", "true", "false"] and re.search(r'<option value=""\s+selected>', unset)


def test_without_a_schema_the_fields_are_the_types_the_values_imply(client):
    html = client.get("/new?recipe=script_implied&target=local").text
    assert 'data-kind="float"' in field(html, "config.optim.lr")
    assert 'data-kind="int"' in field(html, "config.optim.warmup")
    assert 'value="micro"' in field(html, "config.data.name")  # the local profile's
    assert options(field(html, "config.data.shuffle")) == ["true", "false"]
    assert 'data-kind="yaml"' in field(html, "config.data.splits")


def test_the_profiles_are_presets_that_fill_the_fields(client):
    html = client.get("/new?recipe=script_schema&target=local").text
    profile = re.search(r'<select name="profile" id="profile".*?</select>', html, re.S).group(0)
    assert options(profile) == ["", "local", "colab"]
    assert re.search(r'<option value="local"\s+selected>', profile)
    colab = client.get("/new?recipe=script_schema&target=local&profile=colab").text
    assert 'value="15"' in field(colab, "config.training.max_epochs")
    assert re.search(r'<option value="true"\s+selected>', field(colab, "config.model.freeze_backbone"))


def test_a_changed_field_is_a_config_override_the_loader_checks(client):
    made = client.post("/api/runs", json={"recipe": "script_schema", "overrides": {"config.training.lr": "3e-4"}})
    assert made.status_code == 201, made.text
    draft = client.get(f"/new?draft={made.json()['id']}").text
    assert re.search(r'value="0.0003" data-base="0.001"', field(draft, "config.training.lr"))

    refused = client.post("/api/runs", json={"recipe": "script_schema", "overrides": {"config.training.lr": "fast"}})
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error == "--override: config.training.lr: expected a number, got 'fast'" and "\n" not in error
    assert refused.json()["fields"] == {"config.training.lr": "expected a number, got 'fast'"}
    unknown = client.post("/api/runs", json={"recipe": "script_implied", "overrides": {"config.optim.lrr": 1}})
    assert unknown.status_code == 400
    assert unknown.json()["error"].startswith("--override: config.optim.lrr: unknown key (expected one of: lr, warmup)")
    assert len(client.get("/api/runs").json()) == 1


def test_a_stopped_command_run_is_cloned_with_one_config_value_changed_and_compares_by_it(client, tmp_path):
    """Stop, Resume, Clone and Compare go through the operations as for every run: a command run's clone with
    another temperature differs from it in exactly that key."""
    from launcher.registry import Registry, RunRecord
    from spottrain_contract.job import RunState
    from spottrain_contract.recipe import load_recipe

    project = tmp_path / "project"
    shipped = load_recipe("script_schema", project_dir=project, profile="local").shipped()
    Registry(project).save(RunRecord(run_id="script-run", recipe="script_schema", target="local",
                                     state=RunState.STOPPED, started=0.0, store="", local_dir="", tracking_uri="",
                                     project=str(project), recipe_document=shipped, task="command"))
    page = client.get("/runs/script-run").text
    assert re.search(r'<button id="resume"\s*>', page) and re.search(r'<button id="clone"\s*>', page)
    assert re.search(r'<button id="stop"\s+disabled>', page)  # stopped already
    cloned = client.post("/api/runs/script-run/clone", json={"overrides": {"config.loss.temperature": "0.1"}})
    assert cloned.status_code == 201, cloned.text
    copy = cloned.json()["id"]
    form = client.get(f"/new?draft={copy}").text
    assert re.search(r'value="0.1" data-base="0.07"', field(form, "config.loss.temperature"))
    compared = client.get("/api/compare", params={"run": ["script-run", copy]}).json()
    assert compared["config_diff"] == {"config.loss.temperature": ["0.07", "0.1"]}

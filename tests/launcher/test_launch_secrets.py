"""Secrets at launch: resolved by name from the environment, then the project's .env; never echoed."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from launcher.errors import LaunchError
from launcher.secrets import MASK, MaskedSecrets, ResolvedSecrets, resolve_secrets

NAMES = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "HF_TOKEN")


def test_missing_secrets_are_all_listed_with_where_to_set_them(tmp_path):
    with pytest.raises(LaunchError) as caught:
        resolve_secrets(NAMES, tmp_path, environ={"MLFLOW_TRACKING_PASSWORD": "pw"})
    assert str(caught.value) == (f"missing secrets MLFLOW_TRACKING_USERNAME, HF_TOKEN: export them or add to "
                                 f"{tmp_path / '.env'} (names are listed in .env.example)")


def test_one_missing_secret_is_named_in_the_singular(tmp_path):
    with pytest.raises(LaunchError) as caught:
        resolve_secrets(["HF_TOKEN"], tmp_path, environ={})
    assert str(caught.value) == (f"missing secret HF_TOKEN: export it or add to {tmp_path / '.env'} "
                                 f"(names are listed in .env.example)")


def test_a_name_missing_from_both_environment_and_env_file_is_reported(tmp_path):
    (tmp_path / ".env").write_text("HF_TOKEN=hf-from-file\n")
    with pytest.raises(LaunchError, match=r"^missing secret MLFLOW_TRACKING_USERNAME: "):
        resolve_secrets(["HF_TOKEN", "MLFLOW_TRACKING_USERNAME"], tmp_path, environ={})


def test_an_empty_value_copied_from_env_example_counts_as_missing(tmp_path):
    (tmp_path / ".env").write_text("HF_TOKEN=\nMLFLOW_TRACKING_PASSWORD=pw\n")
    with pytest.raises(LaunchError, match=r"^missing secret HF_TOKEN: "):
        resolve_secrets(["HF_TOKEN", "MLFLOW_TRACKING_PASSWORD"], tmp_path, environ={"HF_TOKEN": ""})


def test_values_come_from_the_project_env_file(tmp_path):
    (tmp_path / ".env").write_text('HF_TOKEN=hf-from-file\nMLFLOW_TRACKING_PASSWORD="p#ss word \'quoted\'"\n')
    resolved = resolve_secrets(["HF_TOKEN", "MLFLOW_TRACKING_PASSWORD"], tmp_path, environ={})
    assert resolved.as_dict() == {"HF_TOKEN": "hf-from-file", "MLFLOW_TRACKING_PASSWORD": "p#ss word 'quoted'"}


def test_the_environment_wins_over_the_env_file(tmp_path):
    (tmp_path / ".env").write_text("HF_TOKEN=hf-from-file\n")
    assert resolve_secrets(["HF_TOKEN"], tmp_path, environ={"HF_TOKEN": "hf-from-env"}).value("HF_TOKEN") \
        == "hf-from-env"


def test_os_environ_is_read_when_no_environ_is_given(tmp_path, monkeypatch):
    monkeypatch.setenv("SPOTTRAIN_TEST_SECRET", "from-os-environ")
    assert resolve_secrets(["SPOTTRAIN_TEST_SECRET"], tmp_path).value("SPOTTRAIN_TEST_SECRET") == "from-os-environ"


def test_resolved_secrets_keep_the_order_of_the_names(tmp_path):
    environ = {name: f"value-{i}" for i, name in enumerate(reversed(NAMES))}
    assert resolve_secrets(NAMES, tmp_path, environ=environ).names == NAMES


def test_the_repr_of_resolved_secrets_shows_names_only():
    assert repr(ResolvedSecrets({"HF_TOKEN": "hf-very-secret"})) == "ResolvedSecrets(HF_TOKEN)"


def test_masked_secrets_read_as_the_mask():
    assert [MaskedSecrets(NAMES).value(name) for name in NAMES] == [MASK] * len(NAMES)


SECRET = st.text(min_size=1).filter(lambda v: "\x00" not in v).map(lambda v: "sEcReT-" + v)


@settings(max_examples=100, deadline=None)
@given(from_env=SECRET, from_file=SECRET)
def test_the_missing_secrets_message_never_contains_a_value(tmp_path_factory, from_env, from_file):
    project = tmp_path_factory.mktemp("project")
    quoted = from_file.replace("\\", "\\\\").replace("'", "\\'")
    (project / ".env").write_text(f"HF_TOKEN='{quoted}'\n", encoding="utf-8")
    with pytest.raises(LaunchError) as caught:
        resolve_secrets(["MLFLOW_TRACKING_PASSWORD", "HF_TOKEN", "AWS_SECRET_ACCESS_KEY"], project,
                        environ={"MLFLOW_TRACKING_PASSWORD": from_env})
    message = str(caught.value)
    assert "sEcReT-" not in message and from_env not in message and from_file not in message

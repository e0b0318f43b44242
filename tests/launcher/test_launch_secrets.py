"""Secrets at launch: resolved by name from the environment, then the project's .env; never echoed."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings, strategies as st

from launcher.errors import LaunchError
from launcher.secrets import MASK, MaskedSecrets, ResolvedSecrets, mask_text, resolve_secrets

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


# --- .env values arrive byte-exact; the file's permissions are checked --------------------------------------------

@pytest.mark.parametrize(("line", "value"), [
    ("HF_TOKEN='abc${x}def'", "abc${x}def"),  # no interpolation of ${...}
    ("HF_TOKEN='${only}'", "${only}"),  # not reported missing
    ('HF_TOKEN="a$HOME b"', "a$HOME b"),
    ("HF_TOKEN='line1\rline2'", "line1\rline2"),  # a bare CR stays a CR
    ("HF_TOKEN='two\nlines'", "two\nlines"),
])
def test_env_file_values_arrive_byte_exact(tmp_path, line, value):
    env_file = tmp_path / ".env"
    env_file.write_bytes(line.encode() + b"\n")
    env_file.chmod(0o600)
    assert resolve_secrets(["HF_TOKEN"], tmp_path, environ={}).value("HF_TOKEN") == value


def test_an_env_file_readable_by_others_is_warned_about_once(tmp_path, capsys):
    env_file = tmp_path / ".env"
    env_file.write_text("HF_TOKEN=abc\n")
    env_file.chmod(0o644)
    resolve_secrets(["HF_TOKEN"], tmp_path, environ={})
    resolve_secrets(["HF_TOKEN"], tmp_path, environ={})
    warnings = capsys.readouterr().err.splitlines()
    assert warnings == [f"warning: {env_file} holds secrets and is readable by group or others (mode 0644): "
                        f"chmod 600 {env_file}"]


def test_a_private_env_file_is_not_warned_about(tmp_path, capsys):
    (tmp_path / ".env").write_text("HF_TOKEN=abc\n")
    (tmp_path / ".env").chmod(0o600)
    resolve_secrets(["HF_TOKEN"], tmp_path, environ={})
    assert capsys.readouterr().err == ""


# --- platform text is masked line by line and piece by piece -------------------------------------------------------

def test_every_line_of_a_multi_line_secret_is_masked():
    secret = "first-line-of-key\nsecond-line-of-key"
    echoed = "invalid env value: first-line-of-key (field HF_TOKEN)"
    assert mask_text(echoed, [secret]) == f"invalid env value: {MASK} (field HF_TOKEN)"


@settings(max_examples=200, deadline=None)
@given(secret=st.text(min_size=4, max_size=40), start=st.integers(0, 40), length=st.integers(4, 40),
       before=st.text(max_size=20), after=st.text(max_size=20))
def test_no_piece_of_four_or_more_characters_of_a_secret_survives_masking(secret, start, length, before, after):
    piece = secret[start:start + length]
    assume(len(piece) >= 4 and "*" not in secret)
    masked = mask_text(before + piece + after, [secret])
    assert piece not in masked

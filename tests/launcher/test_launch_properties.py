"""Property tests: any secret value, any text, lands in a rendered document intact and changes nothing else."""

from __future__ import annotations

from functools import cache

import pytest
import yaml
from hypothesis import given, settings, strategies as st

from launch_helpers import PROJECT_DIR, copy_real_recipes, plan_launch, render_for_display
from launcher.process_env import environment
from launcher.secrets import MASK, ResolvedSecrets
from launcher.targets import get_target, skypilot, vessl
from launcher.yaml_safe import yaml_value

PROPERTY = settings(max_examples=200, deadline=None)

NASTY = [
    "", " ", "'", '"', "''", '"\'"', "\\", "\\n", "\n", "\n\n", "a\n", "a\nb", "a\n\n", " a\nb", "a\nb ", "\ta\nb",
    "line one\nline two\n", "{{ secret }}", "{% raw %}", "${HOME}", "$(id)", "`id`", "| cat", "|", "|-", ">", "&",
    "&anchor", "*alias", "!tag", "!!python/object:os.system", ": ", "key: value", "- ", "- item", "? x", "#", " #x",
    "a # comment", "...", "---", "a\n---\nb", "a\n...\n", "%YAML 1.2", "@", "null", "~", "true", "no", "0x1F",
    "1e3", "010", ".inf", "[a, b]", "{a: b}", "é", "日本語", "😀", "\u2028", "\u0085", "\ufeff", "\x00", "\x07",
    "\x1b[31m", "\r\n", "\r", "\x7f", "a" * 300, "\n".join(["x"] * 50),
]
ANY_TEXT = st.one_of(st.text(), st.sampled_from(NASTY),
                     st.lists(st.one_of(st.sampled_from(NASTY), st.text(max_size=4)), max_size=6).map("".join))

# Values long and marked enough that "the value is not in the document" means something.
MARKER = "zQ7sEcReT"
MARKED = ANY_TEXT.map(lambda text: f"{MARKER}{text}{MARKER}")


# --- VESSL, secrets_mode=inline: the values are in the document handed to VESSL ---------------------------------

NAMES = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
         "HF_TOKEN")  # what recipes/_base.yaml names
SECRET_VALUES = st.fixed_dictionaries({name: ANY_TEXT for name in NAMES})


@cache
def inline_plan():
    return plan_launch("baseline", target="vessl", project_dir=PROJECT_DIR, overrides=["secrets_mode=inline"],
                       run_id="property-run")


def render_inline(values: dict) -> str:
    return vessl.render(inline_plan(), ResolvedSecrets(values))


@cache
def benign() -> dict:
    return yaml.safe_load(render_inline({name: "benign" for name in NAMES}))


def test_the_inline_plan_has_the_secrets_under_test():
    assert (inline_plan().recipe.secrets, inline_plan().recipe.secrets_mode) == (list(NAMES), "inline")


@PROPERTY
@given(SECRET_VALUES)
def test_vessl_inline_secret_parses_back_identical(values):
    env = yaml.safe_load(render_inline(values))["env"]
    assert {name: env[name].encode("utf-8") for name in NAMES} == {k: v.encode("utf-8") for k, v in values.items()}


@PROPERTY
@given(SECRET_VALUES)
def test_vessl_inline_secret_leaves_the_document_structure_unchanged(values):
    document = yaml.safe_load(render_inline(values))
    document["env"].update({name: "benign" for name in NAMES})
    assert document == benign()


@PROPERTY
@given(SECRET_VALUES)
def test_vessl_inline_document_validates_whatever_the_secret(values):
    assert vessl.validate(render_inline(values)) is None  # validate raises LaunchError on any violation


# --- the display render: values may sit in the environment, they never reach what a person sees ---------------

@pytest.fixture(scope="module")
def display_project(tmp_path_factory):
    project = copy_real_recipes(tmp_path_factory.mktemp("display"), names=("baseline",))
    (project / ".env").write_text(f"HF_TOKEN={MARKER}-from-dotenv-{MARKER}\n")
    return project




ENV_SAFE = MARKED.filter(lambda v: "\x00" not in v)


@settings(max_examples=100, deadline=None)
@given(value=ENV_SAFE, target=st.sampled_from(["vessl", "skypilot"]))
def test_display_render_never_shows_a_secret_value(display_project, value, target):
    with environment({"MLFLOW_TRACKING_PASSWORD": value, "AWS_SECRET_ACCESS_KEY": value}):
        plan, document = render_for_display("baseline", target=target, project_dir=display_project,
                                            overrides=["secrets_mode=inline"], run_id="display-run")
    shown = plan.summary(get_target(target).describe(plan.recipe)) + "\n" + document
    assert MARKER not in shown and value not in shown


def test_display_render_of_inline_secrets_shows_the_mask(display_project, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", f"{MARKER}-from-env")
    _, document = render_for_display("baseline", target="vessl", project_dir=display_project,
                                     overrides=["secrets_mode=inline"], run_id="display-run")
    env = yaml.safe_load(document)["env"]
    assert {name: env[name] for name in NAMES} == {name: MASK for name in NAMES}


# --- SkyPilot: the task file names secrets, the values travel through SkyPilot's API ----------------------------

SKY_PROPERTY = settings(max_examples=100, deadline=None)  # the task file never reads a value: fewer suffice
MARKED_VALUES = st.fixed_dictionaries({name: MARKED for name in NAMES})


@cache
def sky_plan():
    return plan_launch("baseline", target="skypilot", project_dir=PROJECT_DIR, run_id="property-run")


def render_sky(values: dict) -> str:
    return skypilot.render(sky_plan(), ResolvedSecrets(values))


@SKY_PROPERTY
@given(MARKED_VALUES)
def test_skypilot_document_never_contains_a_secret_value(values):
    document = render_sky(values)
    assert MARKER not in document and not [v for v in values.values() if v in document]


@SKY_PROPERTY
@given(MARKED_VALUES)
def test_skypilot_document_lists_secrets_by_name_with_null_values(values):
    config = yaml.safe_load(render_sky(values))
    assert config["secrets"] == {name: None for name in NAMES}


@SKY_PROPERTY
@given(MARKED_VALUES)
def test_skypilot_secrets_are_not_in_envs(values):
    config = yaml.safe_load(render_sky(values))
    assert set(config["envs"]) & set(NAMES) == set()


# --- the `yaml` filter itself ------------------------------------------------------------------------------------

LEAVES = st.one_of(ANY_TEXT, st.integers(), st.booleans(), st.none())
VALUES = st.recursive(LEAVES, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(ANY_TEXT, inner, max_size=4)),
                      max_leaves=12)

# (template, what it must load as): the value at key `k` whose key sits at column 0, 2 and 4 (a list item),
# with sibling keys before and after it at the same level and above it.
CONTEXTS = {
    0: ("first: 1\nk: {v}\nlast: [2]\n",
        lambda v: {"first": 1, "k": v, "last": [2]}),
    2: ("first: 1\nouter:\n  before: b\n  k: {v}\n  after: a\nlast: 2\n",
        lambda v: {"first": 1, "outer": {"before": "b", "k": v, "after": "a"}, "last": 2}),
    4: ("run:\n  - workdir: /w\n    k: {v}\n    after: a\n  - command: c\nlast: 2\n",
        lambda v: {"run": [{"workdir": "/w", "k": v, "after": "a"}, {"command": "c"}], "last": 2}),
}


@pytest.mark.parametrize("indent", sorted(CONTEXTS), ids=lambda i: f"indent{i}")
@PROPERTY
@given(value=VALUES)
def test_yaml_value_embeds_any_value_exactly_and_keeps_its_siblings(indent, value):
    template, expected = CONTEXTS[indent]
    document = template.replace("{v}", yaml_value(value, indent))
    assert yaml.safe_load(document) == expected(value)

"""The loop reads a task only through the `Task` protocol: every built-in task declares each member itself, and a
plug-in task written before a member was declared gets that member's documented default from `create_task`."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from spottrain.tasks import LEARNING_RATE_METRIC, Task, create_task
from spottrain_contract.plugins import load_object
from spottrain_contract.tasks import TASKS, TaskSpec

MEMBERS = sorted(set(Task.__annotations__) | {name for name, value in vars(Task).items()
                                              if callable(value) and not name.startswith("_")})


@pytest.mark.parametrize("name", sorted(name for name, spec in TASKS.builtin.items() if spec.implementation))
def test_a_built_in_task_declares_every_member_of_the_protocol(name):  # (the command task's is the team's script)
    implementation = load_object(TASKS.get(name).implementation)
    assert [member for member in MEMBERS if not hasattr(implementation, member)] == []


class EarlyPlugin:
    """A plug-in task as written before `learning_rate_metric` and `run_tags` were members of `Task`."""

    def __init__(self, train, ranks, files):
        pass


def test_a_plug_in_task_without_the_later_members_gets_their_documented_defaults(monkeypatch):
    monkeypatch.setitem(TASKS.builtin, "early", TaskSpec(options="unused:Options",
                                                          implementation=f"{__name__}:EarlyPlugin"))
    task = create_task(SimpleNamespace(task="early", train=None), ranks=None, files=None)
    assert (task.learning_rate_metric, dict(task.run_tags)) == (LEARNING_RATE_METRIC, {})

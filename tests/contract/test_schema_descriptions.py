"""Every setting a recipe can hold says what it is: the New run form, `launch list` readers and the schema docs
show each field's description, so none may be empty."""

from __future__ import annotations

import typing

from pydantic import BaseModel

from spottrain_contract.tasks import TASKS, recipe_model


def _models(annotation, found: dict) -> None:
    """Every pydantic model in `annotation` (inside Optional, Union, lists, dicts, Annotated), and theirs."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation not in found:
            found[annotation] = None
            for field in annotation.model_fields.values():
                _models(field.annotation, found)
        return
    for argument in typing.get_args(annotation):
        _models(argument, found)


def test_every_field_of_every_tasks_recipe_has_a_description():
    found: dict = {}
    for task in TASKS.names():
        _models(recipe_model(task), found)
    assert len(found) > 10  # the walk reached the nested settings
    missing = sorted(f"{model.__module__}.{model.__qualname__}.{name}" for model in found
                     for name, field in model.model_fields.items() if not (field.description or "").strip())
    assert missing == []

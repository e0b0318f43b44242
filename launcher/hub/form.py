"""The New run form, generated from the recipe schema: one field per `train` setting of the recipe's task, with
its type, the schema's default, its description and its choices (the pydantic model is the one place that
documents each key), and the value the chosen recipe and profile give it."""

from __future__ import annotations

import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from spottrain_contract.recipe import load_recipe
from spottrain_contract.tasks import recipe_model


@dataclass(frozen=True)
class FormField:
    key: str  # dotted, as an override writes it: train.optim.lr
    kind: str  # int, float, bool, choice, text, yaml (a list or mapping written in YAML flow style)
    value: str  # what the recipe (+ profile, + the draft's overrides) gives it, as typed in the input
    base: str  # the same without the draft's overrides: a field differing from it is an override
    default: Optional[str]  # the schema's default, None where the key is required
    description: str
    choices: tuple[str, ...] = ()
    required: bool = False

    @property
    def requirement(self) -> str:
        """What a required field asks for, as its input's placeholder and its `required` mark say it: `required:
        <its description>` (or its kind, where it has none); "" for a field that has a default."""
        if not self.required:
            return ""
        return f"required: {self.description or f'a {self.kind} value'}"


def _unwrap(annotation) -> tuple[Any, bool]:
    """(the annotation without Optional/Annotated, whether None is allowed)."""
    optional = False
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            optional = optional or len(args) < len(typing.get_args(annotation))
            if len(args) != 1:
                return annotation, optional
            annotation = args[0]
        else:
            return annotation, optional


def as_input(value: Any) -> str:
    """A setting as a person types it (and an override carries it): YAML reads it back the same."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return str(value)


def _kind(annotation) -> tuple[str, tuple[str, ...]]:
    if typing.get_origin(annotation) is typing.Literal:
        return "choice", tuple(str(a) for a in typing.get_args(annotation))
    if annotation is bool:
        return "bool", ("true", "false")
    if annotation is int:
        return "int", ()
    if annotation is float:
        return "float", ()
    if annotation is str:
        return "text", ()
    return "yaml", ()


def _walk(model: type[BaseModel], prefix: str, current: dict, base: dict) -> list[FormField]:
    fields = []
    for name, info in model.model_fields.items():
        key = f"{prefix}.{name}"
        annotation, optional = _unwrap(info.annotation)
        here, there = (current or {}).get(name), (base or {}).get(name)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            fields += _walk(annotation, key, here if isinstance(here, dict) else {},
                            there if isinstance(there, dict) else {})
            continue
        kind, choices = _kind(annotation)
        if kind == "bool" and optional:
            choices = ("", *choices)
        default = info.default
        has_default = default is not PydanticUndefined or info.default_factory is not None
        if info.default_factory is not None:
            default = info.default_factory()
        fields.append(FormField(key=key, kind=kind, value=as_input(here), base=as_input(there),
                                default=as_input(default) if has_default else None,
                                description=info.description or "", choices=choices,
                                required=not has_default and not optional))
    return fields


def train_fields(project_dir: Path, recipe: str, profile: Optional[str],
                 overrides: list[str]) -> tuple[str, list[FormField]]:
    """(the recipe's task, one field per `train` setting). Raises the loader's error for a bad recipe."""
    loaded = load_recipe(recipe, project_dir=project_dir, profile=profile, overrides=overrides)
    base = load_recipe(recipe, project_dir=project_dir, profile=profile) if overrides else loaded
    train_model = recipe_model(loaded.recipe.task).model_fields["train"].annotation
    current = loaded.recipe.model_dump(mode="json")["train"]
    return loaded.recipe.task, _walk(train_model, "train", current, base.recipe.model_dump(mode="json")["train"])

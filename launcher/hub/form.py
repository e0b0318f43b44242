"""The New run form, generated from the recipe's schemas: one field per `train` setting of the recipe's task (the
pydantic model is the one place that documents each key) and, for a command recipe, per `config` key (its JSON
Schema), each with its type, the schema's default, its description and its choices, and the value the chosen
recipe and profile give it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from launcher.hub.form_settings import NO_DEFAULT, Setting, model_settings, schema_settings
from spottrain_contract.command import CommandRecipe, config_schema
from spottrain_contract.recipe import load_recipe, recipe_path
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


def as_input(value: Any) -> str:
    """A setting as a person types it (and an override carries it): YAML reads it back the same."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return str(value)


def _walk(settings: dict[str, Setting], prefix: str, current: dict, base: dict) -> list[FormField]:
    """The one walker: a field per key of `settings` (into each section), valued from `current` and `base`."""
    fields = []
    for name, setting in settings.items():
        key = f"{prefix}.{name}"
        here, there = (current or {}).get(name), (base or {}).get(name)
        if setting.children is not None:
            fields += _walk(setting.children, key, here if isinstance(here, dict) else {},
                            there if isinstance(there, dict) else {})
            continue
        choices = tuple(as_input(choice) for choice in setting.choices)
        if choices and "" not in choices and (here is None or setting.kind == "bool" and setting.optional):
            choices = ("", *choices)  # unset: offered where it may be, or is (a select shows what it is)
        fields.append(FormField(key=key, kind=setting.kind, value=as_input(here), base=as_input(there),
                                default=None if setting.default is NO_DEFAULT else as_input(setting.default),
                                description=setting.description, choices=choices, required=setting.required))
    return fields


def recipe_fields(project_dir: Path, recipe: str, profile: Optional[str],
                  overrides: list[str]) -> tuple[str, list[FormField]]:
    """(the recipe's task, its fields): a command recipe's `config` keys from its JSON Schema (the file it names,
    else the types its values imply), then one field per `train` setting. Raises the loader's error for a bad
    recipe."""
    loaded = load_recipe(recipe, project_dir=project_dir, profile=profile, overrides=overrides)
    base = load_recipe(recipe, project_dir=project_dir, profile=profile) if overrides else loaded
    sections = [("train", model_settings(recipe_model(loaded.recipe.task).model_fields["train"].annotation))]
    if isinstance(base.recipe, CommandRecipe):
        schema = config_schema(base.recipe, recipe_path(project_dir, recipe), base.recipe.config)
        sections.insert(0, ("config", schema_settings(schema)))
    current, written = loaded.recipe.model_dump(mode="json"), base.recipe.model_dump(mode="json")
    return loaded.recipe.task, [field for name, settings in sections
                                for field in _walk(settings, name, current[name], written[name])]

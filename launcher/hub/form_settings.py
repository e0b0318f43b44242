"""What the New run form knows of each key before any value is filled in, read from the schema that documents it:
a pydantic model (a recipe's `train` section) or a JSON Schema (a command recipe's `config`). Both give the same
`Setting`s, so one walker (`launcher.hub.form`) builds the fields of either."""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any, Optional

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

NO_DEFAULT = object()  # a key whose schema gives no default (None is a default: unset)


@dataclass(frozen=True)
class Setting:
    """One key: its kind (int, float, bool, choice, text, yaml), what it is, its choices (values as the recipe
    writes them), its default, whether None is allowed, whether it must be set; `children`: a section's keys."""

    kind: str = "yaml"
    description: str = ""
    choices: tuple[Any, ...] = ()
    default: Any = NO_DEFAULT
    optional: bool = False
    required: bool = False
    children: Optional[dict[str, "Setting"]] = None


# --- pydantic models -------------------------------------------------------------------------------------

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


_PYTHON_KINDS = {bool: "bool", int: "int", float: "float", str: "text"}


def _model_kind(annotation) -> tuple[str, tuple[Any, ...]]:
    if typing.get_origin(annotation) is typing.Literal:
        return "choice", typing.get_args(annotation)
    kind = _PYTHON_KINDS.get(annotation, "yaml") if isinstance(annotation, type) else "yaml"
    return kind, (True, False) if kind == "bool" else ()


def model_settings(model: type[BaseModel]) -> dict[str, Setting]:
    """Each field of `model` (a nested model: a section), as its annotation, default and description say."""
    settings = {}
    for name, info in model.model_fields.items():
        annotation, optional = _unwrap(info.annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            settings[name] = Setting(children=model_settings(annotation))
            continue
        kind, choices = _model_kind(annotation)
        has_default = info.default is not PydanticUndefined or info.default_factory is not None
        default = info.default_factory() if info.default_factory is not None else info.default
        settings[name] = Setting(kind, info.description or "", choices, default if has_default else NO_DEFAULT,
                                 optional, required=not has_default and not optional)
    return settings


# --- JSON Schema -----------------------------------------------------------------------------------------

_JSON_KINDS = {"integer": "int", "number": "float", "boolean": "bool", "string": "text"}


def _resolved(node: Any, root: dict) -> dict:
    """`node` with a local `$ref` (`#/$defs/Optim`) followed, its own keys kept; a reference elsewhere: as is."""
    if not isinstance(node, dict):
        return {}
    ref = node.get("$ref")
    if not (isinstance(ref, str) and ref.startswith("#/")):
        return node
    target: Any = root
    for part in ref[2:].split("/"):
        target = target.get(part, {}) if isinstance(target, dict) else {}
    return {**_resolved(target, root), **{key: value for key, value in node.items() if key != "$ref"}}


def _json_types(node: dict, root: dict) -> list[str]:
    """The JSON types `node` allows: its `type`, or those of its `anyOf`/`oneOf` options."""
    if "type" in node:
        return [node["type"]] if isinstance(node["type"], str) else list(node["type"])
    options = node.get("anyOf") or node.get("oneOf") or ()
    return [kind for option in options for kind in _json_types(_resolved(option, root), root)]


def _json_kind(node: dict, allowed: list[str]) -> tuple[str, tuple[Any, ...]]:
    if "enum" in node:
        return "choice", tuple(node["enum"])
    if len(allowed) == 1 and allowed[0] in _JSON_KINDS:
        kind = _JSON_KINDS[allowed[0]]
        return kind, (True, False) if kind == "bool" else ()
    return ("float", ()) if sorted(allowed) == ["integer", "number"] else ("yaml", ())


def schema_settings(schema: dict, root: Optional[dict] = None) -> dict[str, Setting]:
    """Each property of an object schema (an object with properties of its own: a section), as its type, enum,
    default, description (or title) and its parent's `required` say."""
    root = schema if root is None else root
    required = set(schema.get("required") or ())
    settings = {}
    for name, raw in (schema.get("properties") or {}).items():
        node = _resolved(raw, root)
        allowed = _json_types(node, root)
        if node.get("properties"):
            settings[name] = Setting(children=schema_settings(node, root))
            continue
        kind, choices = _json_kind(node, [t for t in allowed if t != "null"])
        has_default = "default" in node
        settings[name] = Setting(kind, node.get("description") or node.get("title") or "", choices,
                                 node["default"] if has_default else NO_DEFAULT, "null" in allowed,
                                 required=name in required and not has_default)
    return settings

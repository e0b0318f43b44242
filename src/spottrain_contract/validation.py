"""Turn a pydantic ValidationError into (dotted key, what was expected): the parts of a one-line error."""

from __future__ import annotations

import types
import typing
from typing import Any, Optional

from pydantic import BaseModel, ValidationError

from spottrain_contract.schema import FieldProblem

_KINDS = {
    "int": "an integer", "float": "a number", "bool": "true or false", "string": "a string",
    "dict": "a mapping", "model": "a mapping", "model_attributes": "a mapping", "list": "a list",
    "tuple": "a list",
}


def describe_validation_errors(exc: ValidationError, model: type[BaseModel]) -> list[tuple[str, str]]:
    """Every distinct problem as (dotted key, what was expected), in the order pydantic found them."""
    return list(dict.fromkeys(_describe(error, model) for error in exc.errors(include_url=False)))


def _describe(error: dict, model: type[BaseModel]) -> tuple[str, str]:
    loc = [str(part) for part in error["loc"]]
    kind = error["type"]
    if "[key]" in loc:
        at = loc.index("[key]")
        return ".".join(loc[:at]), _reason(error)
    key = ".".join(loc)
    if kind == "extra_forbidden":
        allowed = _fields_at(model, loc[:-1])
        hint = f" (expected one of: {', '.join(allowed)})" if allowed else ""
        return key, f"unknown key{hint}"
    if kind == "missing":
        return key, "required key is missing"
    problem = (error.get("ctx") or {}).get("error")
    if isinstance(problem, FieldProblem):
        return ".".join(filter(None, [key, problem.key])), str(problem)
    return key, _reason(error)


def _reason(error: dict) -> str:
    kind, got = error["type"], error.get("input")
    if kind == "value_error":
        return str(error["ctx"]["error"])
    if kind == "literal_error":
        return f"expected {error['ctx']['expected']}, got {got!r}"
    if kind in ("too_short", "too_long"):
        return f"expected {error['ctx'].get('max_length') or error['ctx'].get('min_length')} items, got {got!r}"
    base = kind.split("_")[0] if not kind.startswith("model_attributes") else "model_attributes"
    if base in _KINDS:
        return f"expected {_KINDS[base]}, got {got!r}"
    return f"{error['msg']}, got {got!r}"


def _fields_at(model: type[BaseModel], loc: list[str]) -> list[str]:
    """Names of the keys allowed at `loc` (walking models, optionals and dict values)."""
    annotation: Any = model
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if part not in annotation.model_fields:
                return []
            annotation = annotation.model_fields[part].annotation
        elif typing.get_origin(annotation) is dict:
            annotation = typing.get_args(annotation)[1]
        else:
            return []
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []


def _unwrap(annotation: Any) -> Optional[Any]:
    if typing.get_origin(annotation) is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _unwrap(options[0]) if len(options) == 1 else annotation
    return annotation

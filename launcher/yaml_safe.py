"""The one Jinja filter every template value goes through: a YAML node that parses back to exactly the value.

A secret or an override may hold any characters (quotes, newlines, `{{ }}`, `${…}`, `|`, `&`, YAML indicators).
Emitting it through PyYAML's own emitter, never by string pasting, means it can neither change the document's
structure nor come back different. Strings are double-quoted, or a literal block when they span lines and
PyYAML deems the block safe, so shell scripts stay readable in a dry run.
"""

from __future__ import annotations

import yaml


class _Dumper(yaml.SafeDumper):
    pass


def _represent_str(dumper: yaml.SafeDumper, value: str):
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if _fits_literal_block(value) else '"')


def _fits_literal_block(value: str) -> bool:
    """Multi-line text with no edge whitespace and at most one final newline: the block needs neither an
    indentation indicator nor keep-chomping (which ends a top-level dump with a `...` document marker).
    PyYAML itself still falls back to double quotes when a block cannot hold the text (trailing spaces, …)."""
    body = value[:-1] if value.endswith("\n") else value
    return "\n" in body and body == body.strip()


_Dumper.add_representer(str, _represent_str)


def yaml_value(value, indent: int = 0) -> str:
    """Render `value` to follow `key: ` in a template, where the key starts at column `indent`.

    The value is dumped under a one-key mapping so block scalars and nested mappings get indentation relative to
    a key at column 0; continuation lines are then shifted to the template key's column. Empty lines are left
    empty so a kept trailing newline in a block scalar stays exactly as dumped.
    """
    text = yaml.dump({"v": value}, Dumper=_Dumper, default_flow_style=False, allow_unicode=False,
                     sort_keys=False, width=float("inf"))
    body = text[len('"v":'):-1]
    pad = " " * indent
    first, *rest = body.split("\n")
    return "\n".join([first[1:] if first.startswith(" ") else first, *[pad + line if line else line for line in rest]])

"""Load a recipe: read → merge `extends` → apply a profile, a sweep's cell, the `--override`s → validate.

Every value remembers which file (or override) set it, so a validation error names the file the user has to
edit. The launcher ships the resolved document with the job (`shipped`); the trainer validates that document
with the same models (`from_shipped`), so the node trains exactly what the dry run showed.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from spottrain_contract.errors import RecipeError, UserError
from spottrain_contract.command import CommandRecipe, config_problems, config_schema
from spottrain_contract.schema import FieldProblem, Recipe
from spottrain_contract.search import budget_value
from spottrain_contract.sweep import Axes, Cell, cell_job_name, cell_named
from spottrain_contract.tasks import TASKS, recipe_model
from spottrain_contract.validation import describe_validation_errors

RECIPES_DIR = "recipes"
OVERRIDE_SOURCE = "--override"


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads `5e-5` as a string; recipes mean the number, as YAML 1.2 and Python do."""


class _ShippedLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """`_Loader` on libyaml where PyYAML has it (~7x faster): a shipped recipe is written by `shipped`, not by a
    person, and read again by every listing of its run (`launch status`, the hub)."""


for _loader in (_Loader, _ShippedLoader):
    _loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"),
    )


@dataclass(frozen=True)
class LoadedRecipe:
    """A validated recipe and how it was asked for: the file, the profile and the overrides."""

    recipe: Recipe
    name: str
    relpath: str  # e.g. recipes/baseline.yaml, relative to the project directory
    profile: Optional[str] = None
    overrides: tuple[str, ...] = ()
    resolved: dict[str, Any] = field(default_factory=dict, repr=False)  # the merged document, profiles applied
    changes: tuple[str, ...] = ()  # a resume allowed to change settings: `key: old → new`, each
    cell: Optional[Cell] = None  # the sweep's cell this run trains (spottrain_contract.sweep)
    replaced: dict[str, Any] = field(default_factory=dict, repr=False)  # each override's key → the value it replaced

    def as_written(self, key: str, now: Any) -> Any:
        """The value of `key` before the overrides (`now` where none replaced it)."""
        before = self.replaced.get(key)
        return now if before is None else before

    def shipped(self) -> str:
        """The resolved document as YAML text, with where it came from: what a launch hands to the job. A job
        trains one run: the recipe's profiles and sweep stay behind (its cell, if any, is in the origin)."""
        document = {key: value for key, value in self.resolved.items() if key not in NOT_SHIPPED}
        origin = {"name": self.name, "file": self.relpath, "profile": self.profile, "overrides": list(self.overrides)}
        if self.cell is not None:
            origin["cell"] = self.cell.as_origin()
        if self.changes:
            origin["changes"] = list(self.changes)
        return yaml.safe_dump({SHIPPED_ORIGIN: origin, **document}, sort_keys=False, allow_unicode=False,
                              width=10**6)


SHIPPED_ORIGIN = "resolved_from"  # in a shipped recipe: the file, profile, cell and overrides it was resolved from
NOT_SHIPPED = ("profiles", "sweep", "search")  # ways to resolve a recipe, not settings of the one run a job trains


def from_shipped(text: str, source: str) -> LoadedRecipe:
    """A recipe a launch resolved and shipped (`LoadedRecipe.shipped`), validated again; `source` names where it
    was read from in errors."""
    try:
        document = yaml.load(text, Loader=_ShippedLoader)
    except yaml.YAMLError as exc:
        raise RecipeError(source, "", f"invalid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(document, dict) or not isinstance(document.get(SHIPPED_ORIGIN), dict):
        raise RecipeError(source, SHIPPED_ORIGIN, "expected a recipe resolved by `launch` (it names its origin)")
    origin = document.pop(SHIPPED_ORIGIN)
    recipe = _validate(document, {}, source)
    cell = Cell.from_origin(origin["cell"]) if origin.get("cell") else None
    return LoadedRecipe(recipe=recipe, name=origin["name"], relpath=origin["file"], profile=origin.get("profile"),
                        overrides=tuple(origin.get("overrides") or ()), resolved=document,
                        changes=tuple(origin.get("changes") or ()), cell=cell)


def flatten(value, prefix: str = "") -> dict[str, str]:
    """Nested settings → dotted keys, as a user writes an override (`train.optim.lr`)."""
    if isinstance(value, dict):
        flat = {}
        for key, child in value.items():
            flat.update(flatten(child, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: str(value)}


def settings_of(recipe: Recipe) -> dict[str, str]:
    """Every setting of a validated recipe, flattened (defaults filled in; profiles and sweeps are not settings)."""
    return flatten(recipe.model_dump(mode="json", exclude=set(NOT_SHIPPED)))


# Where a run trains and on how many devices, not what it trains: a resume may change these freely as long as
# the global batch is kept (elastic resume: gradient accumulation follows the ranks)
CAPACITY_KEYS = ("resources.gpus", "resources.nodes", "resources.accelerator", "resources.vessl.preset",
                 "train.batch.grad_accum")


def setting_changes(before: Recipe, after: Recipe) -> list[str]:
    """`key: old → new` for each training setting that differs between two recipes, sorted by key. A change of
    capacity that keeps the global batch is not one (see `capacity_changes`)."""
    keep = capacity_kept(before, after)
    return [line for key, line in _differences(before, after) if not (keep and _is_capacity(key))]


def capacity_changes(before: Recipe, after: Recipe) -> list[str]:
    """`key: old → new` for each capacity setting a resume changes while keeping the global batch (none where it
    does not keep it: those are `setting_changes`)."""
    if not capacity_kept(before, after):
        return []
    return [line for key, line in _differences(before, after) if _is_capacity(key)]


def capacity_kept(before: Recipe, after: Recipe) -> bool:
    return before.effective_batch == after.effective_batch


def _is_capacity(key: str) -> bool:
    return any(key == capacity or key.startswith(f"{capacity}.") for capacity in CAPACITY_KEYS)


def _differences(before: Recipe, after: Recipe) -> list[tuple[str, str]]:
    old, new = settings_of(before), settings_of(after)
    return [(key, f"{key}: {old.get(key, '-')} → {new.get(key, '-')}") for key in sorted(set(old) | set(new))
            if old.get(key) != new.get(key)]


def find_project_dir(start: Optional[Path] = None) -> Path:
    """The nearest directory (from `start`, default the cwd, upward) that holds `recipes/`."""
    if os.environ.get("LAUNCH_PROJECT_DIR"):
        return Path(os.environ["LAUNCH_PROJECT_DIR"]).resolve()
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / RECIPES_DIR).is_dir():
            return candidate
    raise UserError(f"no {RECIPES_DIR}/ directory in {here} or any parent: run launch inside a project")


def recipe_names(project_dir: Path) -> list[str]:
    """Launchable recipes: every `recipes/*.yaml` not starting with `_` (those are shared defaults)."""
    return sorted(p.stem for p in (project_dir / RECIPES_DIR).glob("*.yaml") if not p.name.startswith("_"))


def recipe_path(project_dir: Path, name: str) -> Path:
    """Resolve a recipe name (`baseline`) or path (`recipes/baseline.yaml`); suggest the closest name."""
    as_path = Path(name)
    if as_path.suffix in (".yaml", ".yml"):
        path = as_path if as_path.is_absolute() else project_dir / as_path
        if not path.is_file():
            raise UserError(f"{name}: no such recipe file")
        return path
    path = project_dir / RECIPES_DIR / f"{name}.yaml"
    if path.is_file() and not name.startswith("_"):
        return path
    known = recipe_names(project_dir)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise UserError(f"unknown recipe '{name}': {hint}known recipes: {', '.join(known)}")


def load_recipe(name: str, *, project_dir: Path, profile: Optional[str] = None,
                overrides: Iterable[str] = (), cell: Union[str, Cell, None] = None) -> LoadedRecipe:
    """`cell`: one cell of the recipe's sweep, resolved after the profile (see `sweep`): a grid cell's name, or a
    `Cell` (a trial its search sampled: `spottrain_contract.search`)."""
    project_dir = project_dir.resolve()
    path = recipe_path(project_dir, name).resolve()
    display = _display(path, project_dir)
    document, sources = _read_with_extends(path, project_dir, chain=())

    if profile is not None:
        profiles = document.get("profiles") or {}
        if profile not in profiles:
            raise RecipeError(display, f"profiles.{profile}",
                              f"no such profile (this recipe has: {', '.join(profiles) or 'none'})")
        entries = profiles[profile]
        if not isinstance(entries, dict):
            raise RecipeError(sources.get(f"profiles.{profile}", display), f"profiles.{profile}",
                              "expected a mapping of dotted keys to values")
        for key, value in entries.items():  # an entry is blamed on the file that wrote it, maybe the parent
            where = sources.get(f"profiles.{profile}.{key}") or sources.get(f"profiles.{profile}", display)
            if key == "sweep":  # a profile's grid replaces the recipe's (tiny models standing in for real ones)
                document.pop("sweep", None)
            _set_dotted(document, sources, str(key), value, f"{where} (profile {profile})")

    written_config = copy.deepcopy(document.get("config"))  # a command recipe's: the types its overrides keep
    chosen = _apply_cell(document, sources, display, cell) if cell is not None else None
    overrides, replaced = tuple(overrides), {}
    for text in overrides:
        key, value = parse_override(text)
        replaced.setdefault(key, _get_dotted(document, key))
        _set_dotted(document, sources, key, value, OVERRIDE_SOURCE)

    recipe = _validate(document, sources, display)
    if isinstance(recipe, CommandRecipe):
        _check_config(recipe, path, written_config, sources, display)
    if recipe.search is not None:
        _check_search(recipe, document, sources, display)
    return LoadedRecipe(recipe=recipe, name=path.stem, relpath=_display(path, project_dir), profile=profile,
                        overrides=overrides, resolved=document, cell=chosen, replaced=replaced)


class _SweepOnly(BaseModel):
    """The `sweep:` section alone, validated before a cell is taken from it (the rest waits for the cell)."""

    model_config = ConfigDict(extra="ignore")
    sweep: Axes = {}


def _apply_cell(document: dict, sources: dict[str, str], display: str, asked: Union[str, Cell]) -> Cell:
    """Set the cell's overrides, each blamed on the entry that wrote it (`recipes/x.yaml (sweep.lr.lr_1e4)`), a
    sampled trial's drawn values on the search's space; the run is named for its cell: a job name of its own
    (`<name>-<cell>`), the cell as its MLflow run name."""
    try:
        axes = _SweepOnly.model_validate({"sweep": document.get("sweep") or {}}).sweep
    except ValidationError as exc:
        raise _recipe_error(exc, _SweepOnly, sources, display) from None
    try:
        cell = cell_named(axes, asked) if isinstance(asked, str) else asked
        for axis, entry in cell.entries.items():
            if entry not in axes.get(axis, {}):
                raise ValueError(f"cell {cell.name}: no entry {entry!r} in axis {axis!r}")
    except ValueError as exc:
        raise RecipeError(display, "sweep", str(exc)) from None
    named = f"{display} (sweep cell {cell.name})"
    if isinstance(document.get("name"), str):  # a recipe without one is told so by the validation
        _set_dotted(document, sources, "name", cell_job_name(document["name"], cell.name), named)
    _set_dotted(document, sources, "mlflow.run_name", cell.name, named)
    from_entries = set()
    for axis, entry in cell.entries.items():
        where = f"{sources.get(f'sweep.{axis}.{entry}', display)} (sweep.{axis}.{entry})"
        for key, value in axes[axis][entry].items():
            _set_dotted(document, sources, key, value, where)
            from_entries.add(key)
    for key, value in cell.overrides.items():
        if key not in from_entries:
            _set_dotted(document, sources, key, value, f"{sources.get('search', display)} (search.space.{key}, "
                                                       f"{cell.name})")
    return cell


def _check_search(recipe: Recipe, document: dict, sources: dict[str, str], display: str) -> None:
    """What the search needs of the recipe it explores: cells to explore, and a budget key the recipe sets to a
    number above the first rung."""
    search, where = recipe.search, sources.get("search", display)
    if search.method != "grid" and not recipe.sweep and not search.space:
        raise RecipeError(where, "search", "nothing to explore: add sweep axes, or a space with trials")
    if search.budget is None:
        return
    full = budget_value(document, search.budget)
    if full is None:
        raise RecipeError(where, "search.budget", f"{search.budget} is not a number this recipe sets (expected "
                                                  f"the key that grows, e.g. train.max_steps or train.epochs)")
    if search.min_budget is not None and search.min_budget >= full:
        raise RecipeError(where, "search.min_budget", f"{search.min_budget:g} is not below the full budget "
                                                      f"({search.budget} = {full:g})")


def _validate(document: dict, sources: dict[str, str], display: str) -> Recipe:
    """The typed recipe for the document's task; errors name the file that set the offending key."""
    task = document.get("task")
    if task is None and "pipeline" in document:
        raise RecipeError(sources.get("pipeline", display), "pipeline",
                          "renamed to `task` (what the stage trains; `launch pipeline` runs stages in sequence)")
    if not isinstance(task, str):
        reason = "required key is missing" if task is None else f"expected a task name, got {task!r}"
        raise RecipeError(display, "task", f"{reason} (known tasks: {', '.join(TASKS.names())})")
    try:
        model = recipe_model(task)
    except UserError as exc:
        raise RecipeError(_blame(sources, "task", display), "task", str(exc)) from None
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise _recipe_error(exc, model, sources, display) from None


def _check_config(recipe: CommandRecipe, path: Path, written: Any, sources: dict[str, str], display: str) -> None:
    """A command recipe's `config` against its schema; each problem blamed on what set its key."""
    try:
        problems = config_problems(recipe.config, config_schema(recipe, path, written))
    except FieldProblem as exc:
        raise RecipeError(_blame(sources, exc.key, display), exc.key, str(exc)) from None
    if problems:
        first, *more = [RecipeError(_blame(sources, key, display), key, reason) for key, reason in problems]
        raise RecipeError(first.source, first.key, first.reason, also=tuple(more))


def _recipe_error(exc: ValidationError, model, sources: dict[str, str], display: str) -> RecipeError:
    """Every problem pydantic found, each blamed on the file (or entry, or override) that set its key."""
    first, *more = [RecipeError(_blame(sources, key, display), key, reason)
                    for key, reason in describe_validation_errors(exc, model)]
    return RecipeError(first.source, first.key, first.reason, also=tuple(more))


def parse_override(text: str) -> tuple[str, Any]:
    """`train.optim.lr=5e-5` → ("train.optim.lr", 5e-05); values are typed as YAML would type them."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise RecipeError(OVERRIDE_SOURCE, text, "expected dotted.key=value, e.g. train.optim.lr=5e-5")
    if raw == "":
        return key, ""
    try:
        return key, yaml.load(raw, Loader=_Loader)
    except yaml.YAMLError:
        return key, raw


def _read_with_extends(path: Path, project_dir: Path, chain: tuple[Path, ...]):
    display = _display(path, project_dir)
    if path in chain:
        cycle = " → ".join(_display(p, project_dir) for p in (*chain, path))
        raise RecipeError(_display(chain[-1], project_dir), "extends", f"cycle: {cycle}")
    document = _read_yaml(path, display)
    parent_name = document.pop("extends", None)
    document_sources = _sources_of(document, display)
    if parent_name is None:
        return document, document_sources
    if not isinstance(parent_name, str):
        raise RecipeError(display, "extends", f"expected a file name, got {parent_name!r}")
    parent_path = (path.parent / parent_name).resolve()
    if not parent_path.is_file():
        raise RecipeError(display, "extends", f"no such file {parent_name!r} next to this recipe")
    merged, sources = _read_with_extends(parent_path, project_dir, (*chain, path))
    _deep_merge(merged, document)
    sources.update(document_sources)
    return merged, sources


def _read_yaml(path: Path, display: str) -> dict:
    try:
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except UnicodeDecodeError as exc:
        line = exc.object[:exc.start].count(b"\n") + 1
        raise RecipeError(display, "", f"not UTF-8 text at line {line}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "document"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(display, "", f"invalid YAML at {where}: {problem}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise RecipeError(display, "", f"expected a mapping at the top level, got {type(document).__name__}")
    return document


def _sources_of(node: Any, source: str, prefix: str = "") -> dict[str, str]:
    """Every dotted key (leaves and the mappings above them) → the file that set it."""
    sources = {}
    if isinstance(node, dict):
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            sources[dotted] = source
            sources.update(_sources_of(value, source, dotted + "."))
    return sources


def _deep_merge(base: dict, update: dict) -> None:
    """Mappings merge key by key; anything else (lists included) is replaced."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value


def _get_dotted(document: dict, key: str) -> Any:
    node: Any = document
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _set_dotted(document: dict, sources: dict, key: str, value: Any, source: str) -> None:
    node = document
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise RecipeError(source, ".".join(parts[: depth + 1]),
                              f"is a value ({child!r}), cannot set {key} inside it")
        node = child
    if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
        _deep_merge(node[parts[-1]], value)
    else:
        node[parts[-1]] = value
    sources[key] = source
    sources.update(_sources_of(value, source, key + "."))


def _blame(sources: dict[str, str], key: str, default: str) -> str:
    """The source of the deepest prefix of `key` that some file set; the recipe itself for missing keys."""
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in sources:
            in_a_list = all(part.isdigit() for part in parts[end:])  # an item of a list that file wrote
            set_there = end == len(parts) or in_a_list or sources[prefix] == OVERRIDE_SOURCE
            return sources[prefix] if set_there else default
    return default


def _display(path: Path, project_dir: Path) -> str:
    try:
        return str(path.resolve().relative_to(project_dir))
    except ValueError:
        return str(path)

"""The operations: every action a user takes, one function each, with a typed request and a typed result.

The two faces sit on these and hold no logic of their own: the `launch` CLI (click: parse, call, print) and the
hub (FastAPI: route, call, serialise). Each opens one `Workspace` (the project and its run database) and passes
it in. A rule written here (what a resume takes, which profile is the default, how two runs differ) is the same
for both faces.

- plan and launch: `prepare` (a run or a sweep, planned and rendered: the dry run), `submit`, `follow`,
  `outcome`, `launch_sweep`, `resume`, a pipeline's `pipeline_requests`/`launch_stage`/`wait_for`
- drafts: `save_draft`, `launch_draft`, `create`, `clone`
- runs: `status`, `logs`, `stop`, `run`, `listing`, `metric_histories`, `system_histories`, `checkpoints`,
  `ledger`, `RunWatch` (a run's stream)
- sweeps a search explores: `start_search`, `search_report`, `stop_search`, `resume_search`, `adopt_orphans` (the
  hub's controllers)
- compare: `compare_runs`, `compare_page`, `compare_sweep`
- weights: `plan_job` (eval, predict), `plan_adapter_eval`
- models: `register`, `models`, `set_model_alias`, `resolve_model` (models:/NAME@ALIAS to a run and checkpoint)
- recipes: `recipes`, `check`, `render`, `doctor_checks`, `recipe_choices`, `form_fields`
"""

from launcher.errors import LaunchError, RunNotFound, UserError
from launcher.external_runs import ExternalRunDetail, ExternalRuns, ExternalRunsView
from launcher.operations.comparing import (ComparePage, SweepComparison, compare_page, compare_runs, compare_sweep,
                                           compare_text, is_sweep, plot_runs)
from launcher.operations.drafts import clone, create, draft_entry, launch_draft, override_list, save_draft
from launcher.operations.jobs import PlannedJob, plan_adapter_eval, plan_job
from launcher.operations.models import (RegisterRequest, models, register, registration_of, resolve as resolve_model,
                                       set_model_alias)
from launcher.operations.launching import (Outcome, Planned, PlannedSweep, Submitted, confirm_needed, follow,
                                           launch_sweep, launch_stage, outcome, pipeline_requests, prepare, resume,
                                           submit)
from launcher.operations.recipes import (RecipeChoices, check, doctor_checks, names as recipe_names, pipelines,
                                         recipe_choices, recipe_table, recipes, render, targets)
from launcher.operations.runs import (PAGE_SIZE, Listing, StatusReport, checkpoints, ledger, listing, logs,
                                      metric_histories, run, run_names, status, stop, system_histories,
                                      wait_for, wait_for_ledger_reads, window)
from launcher.operations.sweeping import (SearchStarted, adopt_orphans, keep_sweeps_controlled, record_search,
                                          resume_search, search_report, searched_sweeps, start_search,
                                          stop_search)
from launcher.operations.watching import RunWatch
from launcher.operations.workspace import Workspace
from launcher.plan import code_version
from launcher.requests import (AdapterEvalRequest, DependencyLookup, DraftRequest, JobKind, LaunchRequest,
                               WeightsJobRequest)

__all__ = [
    "AdapterEvalRequest", "ComparePage", "DependencyLookup", "DraftRequest", "ExternalRunDetail", "ExternalRuns",
    "ExternalRunsView", "JobKind", "LaunchError", "LaunchRequest", "Listing", "Outcome", "PAGE_SIZE", "Planned",
    "PlannedJob", "PlannedSweep", "RecipeChoices", "RegisterRequest", "RunNotFound", "RunWatch", "SearchStarted",
    "StatusReport",
    "Submitted", "SweepComparison", "UserError", "WeightsJobRequest", "Workspace", "check", "checkpoints", "clone",
    "code_version", "compare_page", "compare_runs", "compare_sweep", "compare_text", "confirm_needed", "create",
    "doctor_checks", "draft_entry", "follow", "is_sweep", "launch_draft", "launch_stage", "launch_sweep", "ledger",
    "listing", "logs", "metric_histories", "models", "outcome", "override_list", "pipeline_requests", "pipelines",
    "plan_adapter_eval", "plan_job", "plot_runs", "prepare", "recipe_choices", "recipe_names", "recipe_table",
    "recipes", "register", "registration_of", "render", "resolve_model", "resume", "resume_search", "run",
    "run_names", "save_draft", "search_report", "set_model_alias", "start_search", "status", "stop", "stop_search",
    "submit", "system_histories", "targets", "wait_for", "adopt_orphans", "keep_sweeps_controlled", "record_search", "searched_sweeps",
    "wait_for_ledger_reads", "window",
]

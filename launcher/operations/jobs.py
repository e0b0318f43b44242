"""Jobs that use a run's trained weights instead of training: `launch eval RUN` (the task's test metrics),
`launch eval --lora-path DIR` (an adapter trained anywhere) and `launch predict RUN INPUT...`. Each is planned
here and submitted like a run (`launching.submit`)."""

from __future__ import annotations

from dataclasses import dataclass

from launcher.display import masked_document
from launcher.operations.launching import Planned
from launcher.operations.workspace import Workspace
from launcher.requests import AdapterEvalRequest, JobKind, LaunchRequest, WeightsJobRequest
from launcher.weights import existing_inputs, input_paths, plan_adapter_evaluation, plan_weights_job, trained_on


@dataclass(frozen=True)
class PlannedJob:
    planned: Planned
    says: str  # what the job does, one line: `evaluating run R (best checkpoint) on local as job J`


def plan_job(ws: Workspace, request: WeightsJobRequest) -> PlannedJob:
    """A one-GPU job on the run's weights, with the settings the run was launched with (on its target unless the
    request names another; inputs are paths there)."""
    target = request.target or trained_on(ws.registry, request.run_id, request.kind)
    arguments = ["--checkpoint", request.checkpoint]
    if request.kind is JobKind.PREDICT:
        arguments += [*(["--out", *input_paths([request.out], target)] if request.out else []),
                      *existing_inputs(request.inputs, target, "predict")]
    plan = plan_weights_job(ws.registry, request.run_id, request.kind, arguments, target, request.overrides,
                            dict(request.options))
    doing = "evaluating" if request.kind is JobKind.EVAL else "predicting with"
    return PlannedJob(Planned(plan, masked_document(plan)),
                      f"{doing} run {request.run_id} ({request.checkpoint} checkpoint) on {plan.target} as job "
                      f"{plan.run_id}")


def plan_adapter_eval(ws: Workspace, request: AdapterEvalRequest) -> PlannedJob:
    """A one-GPU job judging an adapter trained anywhere on the recipe's base model and test data."""
    launch = LaunchRequest(request.recipe, request.target, overrides=request.overrides)
    plan = plan_adapter_evaluation(ws.project_dir, launch, request.adapter, request.output_dir, dict(request.options))
    return PlannedJob(Planned(plan, masked_document(plan)),
                      f"evaluating adapter {request.adapter} on {plan.recipe.train.model.id} on {plan.target} as job "
                      f"{plan.run_id}")

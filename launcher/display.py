"""The render a person sees: secrets masked, validated like the real one. Never handed to a platform (the runner
renders again with the real secrets), so a masked placeholder cannot reach a job."""

from __future__ import annotations

from launcher.plan import LaunchPlan
from launcher.secrets import MaskedSecrets
from launcher.targets import get_target


def masked_document(plan: LaunchPlan) -> str:
    target = get_target(plan.target)
    document = target.render(plan, MaskedSecrets(target.secret_names(plan.recipe)))
    target.validate(document)
    return document

"""The options of the Weighted-MTP family (seed 004): what `baseline`, `critic`, `verifiable` and `rho1` train.

Each stage's options model holds the multi-token model and the code-solution data every stage reads, plus its
own section; `tasks.recipe_model` puts them beside the common `train` keys, so a recipe writes
`train.model.path`, `train.data.train` and `train.critic.loss_type` (PIPELINES.md has the math).
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import AfterValidator, Field, model_validator

from spottrain_contract.schema import FieldProblem, PositiveInt, Strict, above, between, fraction
from spottrain_contract.stage_inputs import stage_input


class MtpModel(Strict):
    """A Hugging Face causal LM with multi-token heads (PIPELINES.md, "The model")."""

    path: str = Field(description="Local path of a Hugging Face causal LM, or 'micro' for the tiny in-code model.")
    n_future_tokens: Annotated[int, between(1, 8)] = Field(4, description="Number of MTP heads.")
    init: Literal["pretrained", "random"] = Field(
        "pretrained", description="'random' trains from scratch: weights initialised from `seed` with the "
                                  "architecture of path/config.json (benchmarks, pretraining).")


class CodeData(Strict):
    """Code-solution records (Alpaca prompt, the solution is the response)."""

    train: str = Field(description="JSONL of {instruction, input, output, task_id, is_correct, metadata}, "
                                   "or 'generated' for the small shipped set.")
    val: Optional[str] = Field(None, description="Validation JSONL (default: a split of train).")
    max_length: Annotated[int, between(16, 131072)] = Field(2048, description="Tokens per sample after truncation.")
    n_samples: Optional[PositiveInt] = Field(None, description="Use at most this many training samples.")
    val_samples: PositiveInt = Field(512, description="Validation samples evaluated at most.")


class CriticOptions(Strict):
    loss_type: Literal["mse", "pairwise"] = Field(description="λ-return regression or pairwise ranking.")
    lam: Annotated[float, between(0, 1)] = Field(1.0, description="λ of the λ-return.")
    gamma: Annotated[float, between(0, 1)] = Field(1.0, description="Discount γ of the λ-return (1: none).")


class VerifiableOptions(Strict):
    critic_stage: str = Field("critic", description="Recipe whose best checkpoint initialises the value head.")
    critic_checkpoint: Optional[str] = stage_input(
        stage_option="critic_stage",
        description="Explicit critic checkpoint (path or URI); resolved from the store when unset.")
    beta: Annotated[float, above(0)] = Field(0.9, description="Temperature of the exponential TD weights.")
    value_coef: Annotated[float, between(0, 1e3)] = Field(
        0.5, description="Weight of the value head's λ-return regression loss added to the weighted CE.")
    weight_clip: tuple[float, float] = Field((0.1, 5.0), description="[w_min, w_max] of the token weights.")
    lam: Annotated[float, between(0, 1)] = Field(0.95, description="λ of the advantages (GAE) and λ-returns.")
    gamma: Annotated[float, between(0, 1)] = Field(1.0, description="Discount γ of the TD errors (1: none).")
    ema_momentum: Annotated[float, between(0, 1)] = Field(
        0.1, description="Weight of each batch in the running mean and std that whiten the advantages.")

    @model_validator(mode="after")
    def _clip_ordered(self):
        low, high = self.weight_clip
        if not 0 <= low <= high:
            raise FieldProblem("weight_clip", f"expected 0 ≤ min ≤ max, got [{low}, {high}]")
        return self


class Rho1Options(Strict):
    reference_model: str = Field(description="Frozen reference model path, or 'micro'.")
    k_percent: Annotated[float, AfterValidator(fraction)] = Field(0.6, description="Fraction of tokens kept, in (0, 1].")
    selection: Literal["hard", "soft"] = Field(
        "hard", description="'hard' keeps the tokens of the top k_percent excess loss; 'soft' weights each by "
                            "σ((excess − threshold)/temperature).")
    temperature: Annotated[float, above(0)] = Field(1.0, description="Soft selection temperature.")


class BaselineStage(Strict):
    """Stage 1: correct solutions only, every token weighted 1."""

    model: MtpModel = Field(description="The model trained.")
    data: CodeData = Field(description="The training and validation data.")


class CriticStage(BaselineStage):
    """Stage 2: a value head on the frozen trunk learns P(correct) per token."""

    critic: CriticOptions = Field(description="The critic's own settings: its loss and λ-return.")


class VerifiableStage(BaselineStage):
    """Stage 3: tokens weighted by the critic's TD errors."""

    verifiable: VerifiableOptions = Field(description="The stage's own settings: the critic it starts from, "
                                                      "the TD-error token weights and the value loss.")


class Rho1Stage(BaselineStage):
    """Stage 4: tokens selected by their excess loss over a frozen reference model."""

    rho1: Rho1Options = Field(description="The stage's own settings: the reference model and the token "
                                      "selection.")

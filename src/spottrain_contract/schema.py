"""The common recipe model: where a stage runs and the training settings every task shares.

What a task trains (its model, data and loss options) is the task's own options model, registered by name in
`spottrain_contract.tasks` and merged into `train` for the recipe's `task` (see `tasks.recipe_model`). Pure
pydantic: the launcher and the trainer on the nodes validate with the same models. Unknown keys are rejected
everywhere except in free-form maps (env, tags, volumes, profiles).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from spottrain_contract.registration import Registration
from spottrain_contract.search import Search
from spottrain_contract.sweep import Axes

# Accelerator names SkyPilot's catalogues use; its schema accepts any string, so a typo would only fail at
# provisioning time, after a long wait.
ACCELERATORS = (
    "A100", "A100-80GB", "A10", "A10G", "A40", "B200", "GB200", "H100", "H100-MEGA", "H200", "K80", "L4", "L40",
    "L40S", "M60", "P100", "P4", "RTX4090", "RTX6000", "RTXPRO6000", "T4", "V100", "V100-32GB", "MI300X",
)
RECOVERY_STRATEGIES = ("EAGER_NEXT_REGION", "FAILOVER")

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_JOB_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


def between(lo: float, hi: float):
    def check(value):
        if not lo <= value <= hi:
            raise ValueError(f"expected {lo}–{hi}, got {value}")
        return value

    return AfterValidator(check)


def above(lo: float):
    def check(value):
        if not value > lo:
            raise ValueError(f"expected > {lo}, got {value}")
        return value

    return AfterValidator(check)


def _matching(pattern: re.Pattern, what: str):
    def check(value: str):
        if not pattern.match(value):
            raise ValueError(f"expected {what}, got {value!r}")
        return value

    return AfterValidator(check)


def _one_of(choices: tuple[str, ...]):
    def check(value: str):
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return value

    return AfterValidator(check)


def _with_scheme(schemes: tuple[str, ...]):
    def check(value: str):
        if not value.startswith(schemes):
            raise ValueError(f"expected a URI starting with {' or '.join(schemes)}, got {value!r}")
        return value

    return AfterValidator(check)


def fraction(value: float) -> float:
    if not 0 < value <= 1:
        raise ValueError(f"expected a fraction in (0, 1], got {value}")
    return value


def _absolute_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"expected an absolute path, got {value!r}")
    return value


def _as_text(value: Any) -> Any:
    """Environment values and tags are strings on every platform; YAML may have typed them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, (int, float)) else value


Text = Annotated[str, BeforeValidator(_as_text)]
EnvName = Annotated[str, _matching(_ENV_NAME, "an environment variable name")]
AbsolutePath = Annotated[str, AfterValidator(_absolute_path)]
PositiveInt = Annotated[int, between(1, 10**9)]


class FieldProblem(ValueError):
    """A cross-field check that fails: `key` is dotted, relative to the model that raised it."""

    def __init__(self, key: str, reason: str):
        super().__init__(reason)
        self.key = key


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- where it runs -------------------------------------------------------------------------------------------


class Recovery(Strict):
    """How SkyPilot brings a managed job back after a preemption or a failure."""

    strategy: Annotated[str, _one_of(RECOVERY_STRATEGIES)] = Field(
        "EAGER_NEXT_REGION", description="SkyPilot recovery strategy after a spot preemption.")
    max_restarts_on_errors: Annotated[int, between(0, 100)] = Field(
        3, description="Restarts allowed when the job itself fails (not counting preemptions).")


class VesslResources(Strict):
    cluster: str = Field(description="VESSL cluster name, e.g. vessl-gcp-oregon.")
    preset: Union[str, dict[str, str]] = Field(
        description="VESSL resource preset, e.g. gpu-a100-large-spot; or one per capacity candidate "
                    "(`{\"A100-80GB:4\": gpu-a100-large-spot, \"A100-80GB:2\": gpu-a100-medium-spot}`): a VESSL run "
                    "takes one preset, that of the first candidate (resources.candidates, in order) that has one.")

    def preset_for(self, candidates: list[str]) -> Optional[str]:
        """The preset a run of these candidates gets (None: the mapping names none of them)."""
        if isinstance(self.preset, str):
            return self.preset
        return next((self.preset[c] for c in candidates if c in self.preset), None)


def _one_or_more(validator: AfterValidator, integers: bool = False):
    """A value or a non-empty list of values, each checked by `validator` (capacity a platform may offer); runs
    before pydantic's own checks, so the integer check is made here too."""

    def check(value):
        values = value if isinstance(value, list) else [value]
        if not values:
            raise ValueError("expected a value or a non-empty list of them, got []")
        for one in values:
            if integers and (isinstance(one, bool) or not isinstance(one, int)):
                raise ValueError(f"expected an integer, got {one!r}")
            validator.func(one)
        return value

    return BeforeValidator(check)


class Resources(Strict):
    """`accelerator` and `gpus` may each list acceptable values, in order of preference: a spot recovery then
    takes whichever combination exists (more GPUs first, then the types in order), and the run resumes on it with
    the same global batch (see `spottrain.elastic`)."""

    accelerator: Annotated[Union[str, list[str]], _one_or_more(_one_of(ACCELERATORS))] = Field(
        description="GPU type, e.g. A100-80GB, or acceptable types in order of preference.")
    gpus: Annotated[Union[int, list[int]], _one_or_more(between(1, 8), integers=True)] = Field(
        description="GPUs per node (torchrun starts one rank per GPU present), or acceptable counts in order of "
                    "preference, e.g. [4, 2]; the first sets the global batch.")
    nodes: Annotated[int, between(1, 64)] = Field(1, description="Number of nodes.")
    spot: bool = Field(True, description="Use spot instances (the job is recovered after a preemption).")
    disk_gb: Annotated[int, between(50, 65536)] = Field(500, description="Boot disk size per node.")
    price_per_hour: Optional[Annotated[float, above(0)]] = Field(
        None, description="Dollars per hour of one node as this recipe asks for it (its accelerator × gpus, the "
                          "first of each where they list several; spot or on-demand as `spot` says), as a price "
                          "page gives it. A run's dollars are its ledger's device-hours at this price ÷ gpus: used "
                          "where SkyPilot's catalog cannot price the run (not on SkyPilot, or no catalog on this "
                          "machine); unset there, the run's dollars are unknown.")
    recovery: Recovery = Field(default_factory=Recovery, description="How SkyPilot brings the job back after a "
                                                                     "preemption or a failure.")
    vessl: Optional[VesslResources] = Field(None, description="Cluster and preset when launched on VESSL.")

    @property
    def gpu_counts(self) -> list[int]:
        return self.gpus if isinstance(self.gpus, list) else [self.gpus]

    @property
    def accelerators(self) -> list[str]:
        return self.accelerator if isinstance(self.accelerator, list) else [self.accelerator]

    @property
    def preferred_gpus(self) -> int:
        return self.gpu_counts[0]

    @property
    def shape(self) -> str:
        """`4× A100-80GB`, or `4 or 2× A100-80GB or A100` for capacity lists."""
        return f"{' or '.join(map(str, self.gpu_counts))}× {' or '.join(self.accelerators)}"

    @property
    def candidates(self) -> list[str]:
        """`TYPE:GPUS` per node a platform may provision, in order of preference: more GPUs first."""
        return [f"{accelerator}:{gpus}" for gpus in self.gpu_counts for accelerator in self.accelerators]


class Volume(Strict):
    """A named storage mounted on the nodes; what backs it differs per target."""

    mount: AbsolutePath = Field(description="Where the volume appears on the node.")
    read_only: bool = Field(False, description="Mount read-only (models, datasets).")
    skypilot: Optional[Annotated[str, _with_scheme(("s3://", "gs://", "r2://", "cos://", "https://"))]] = Field(
        None, description="Bucket URI that backs the volume on SkyPilot.")
    vessl: Optional[Annotated[str, _with_scheme(("volume://", "s3://", "gs://", "hf://"))]] = Field(
        None, description="VESSL import source, e.g. volume://weighted-mtp-models.")


class Code(Strict):
    repo: str = Field(description="Git repository VESSL clones the code from, e.g. github.com/org/repo.")
    ref: Optional[str] = Field(None, description="Branch, tag or commit to check out (default: the remote's HEAD).")
    workdir: AbsolutePath = Field("/workspace/code", description="Where the code lives on the node.")


class MLflowSettings(Strict):
    tracking_uri: Optional[str] = Field(
        None, description="Tracking server URL; unset means a local SQLite store in the run directory. "
                          "Credentials come from the MLFLOW_TRACKING_USERNAME/PASSWORD secrets.")
    experiment: str = Field(description="Experiment name, e.g. weighted-mtp/production.")
    run_name: str = Field(description="Run name shown in the MLflow UI.")
    tags: dict[str, Text] = Field(default_factory=dict,
                                 description="Extra tags; task, gpu, gpus and nodes are added by the trainer.")


# --- what it trains -----------------------------------------------------------------------------------------


class Batch(Strict):
    per_gpu: Annotated[int, between(1, 4096)] = Field(description="Micro-batch size per GPU.")
    grad_accum: Annotated[int, between(1, 4096)] = Field(1, description="Gradient accumulation steps.")


class Optim(Strict):
    lr: Annotated[float, above(0)] = Field(description="Peak learning rate (AdamW).")
    weight_decay: Annotated[float, between(0, 1)] = Field(0.0, description="AdamW's decoupled weight decay.")
    betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW's (β1, β2).")
    grad_clip: Annotated[float, between(0, 1e6)] = Field(1.0, description="Gradient norm clip; 0 disables it.")


class Schedule(Strict):
    warmup_ratio: Annotated[float, between(0, 1)] = Field(0.03, description="Fraction of steps of linear warmup.")
    decay: Literal["cosine", "linear", "constant"] = Field(
        "cosine", description="Shape of the learning rate after the warmup, down to min_lr_ratio × lr.")
    min_lr_ratio: Annotated[float, between(0, 1)] = Field(
        0.0, description="The learning rate at the end of the decay, as a fraction of the peak.")


class Cadence(Strict):
    """How often something happens in the loop: every N optimizer steps, or every N epochs (a task whose epochs
    are its natural unit, like the ranker's); one of the two, never both."""

    every_steps: Optional[PositiveInt] = None
    every_epochs: Optional[PositiveInt] = None

    @model_validator(mode="after")
    def _one_unit(self):
        both = {"every_steps", "every_epochs"} <= self.model_fields_set
        if both and self.every_steps is not None and self.every_epochs is not None:
            raise FieldProblem("every_epochs", f"set every_steps or every_epochs, not both (got every_steps "
                                               f"{self.every_steps} and every_epochs {self.every_epochs}): "
                                               f"set the other to null")
        if self.every_steps is None and self.every_epochs is None:
            raise FieldProblem("every_steps", "required: how often (every_steps, or every_epochs)")
        return self

    def in_steps(self, steps_per_epoch: int) -> int:
        """The interval in optimizer steps, for a run of `steps_per_epoch` steps an epoch."""
        return self.every_epochs * steps_per_epoch if self.every_epochs is not None else self.every_steps


class Checkpoint(Cadence):
    uri: str = Field(description="Durable store: s3://bucket/prefix, or a local directory.")
    local_dir: str = Field(description="Where each rank writes its shards before upload.")
    every_steps: Optional[PositiveInt] = Field(None, description="Save every N optimizer steps.")
    every_epochs: Optional[PositiveInt] = Field(None, description="Save every N epochs (instead of every_steps).")
    keep: PositiveInt = Field(3, description="Newest complete intermediate checkpoints kept (best and final always).")
    best_metric: str = Field("val/loss", description="Metric that picks the best checkpoint.")
    best_mode: Literal["min", "max"] = Field("min", description="Whether the best checkpoint has the lowest "
                                                                "(min) or the highest (max) best_metric.")
    endpoint_url: Optional[str] = Field(None, description="S3-compatible endpoint (MinIO, R2, ...).")


class DeepSpeedSettings(Strict):
    zero_stage: Annotated[int, between(0, 3)] = Field(2, description="DeepSpeed ZeRO stage: 0 none; 1 "
                                                                      "optimizer states, 2 and gradients, 3 and "
                                                                      "parameters sharded across ranks.")
    precision: Literal["bf16", "fp16", "fp32"] = Field("bf16", description="Training precision.")


class Performance(Strict):
    """How fast the same training runs on a GPU; none of these changes what is trained. Measured on an H100 in
    the README's benchmarks (`bench/gpu.py`)."""

    attention: Literal["sdpa", "flash_attention_2", "flash_attention_3", "eager"] = Field(
        "sdpa", description="Attention kernel (transformers' attn_implementation); flash_attention_* needs the "
                            "flash-attn package on the node.")
    fused_optimizer: bool = Field(True, description="torch's fused AdamW kernel on a GPU (the CPU keeps the "
                                                    "default implementation).")
    activation_checkpointing: bool = Field(False, description="Recompute each decoder layer in the backward "
                                                              "pass: less memory for longer sequences or "
                                                              "larger micro-batches, ~30% more compute.")
    compile: bool = Field(False, description="torch.compile each decoder layer (off until measured for your "
                                             "model: the first steps pay the compilation).")
    prefetch_steps: Annotated[int, between(0, 8)] = Field(
        1, description="Steps of micro-batches prepared ahead on a background thread (pinned memory on a GPU).")


class Evaluation(Cadence):
    every_steps: Optional[PositiveInt] = Field(500, description="Evaluate every N optimizer steps (and at the "
                                                                "end), unless every_epochs is set.")
    every_epochs: Optional[PositiveInt] = Field(None, description="Evaluate every N epochs (and at the end).")


class EarlyStopping(Strict):
    """Stop once the run's best metric (`checkpoint.best_metric`, in `checkpoint.best_mode`) has not improved
    for `patience` evaluations in a row; the run then ends as if at its last step (final checkpoint, export)."""

    patience: PositiveInt = Field(description="Evaluations without improvement before the run stops.")
    min_delta: Annotated[float, between(0, 1e9)] = Field(
        0.0, description="An improvement smaller than this does not count.")


class Train(Strict):
    """What every task shares; the task's own options sit beside these keys. Any key can be overridden as
    `train.a.b=value`."""

    batch: Batch = Field(description="Batch size per GPU and gradient accumulation.")
    epochs: Annotated[float, above(0)] = Field(description="Passes over the training set (may be fractional).")
    max_steps: Optional[PositiveInt] = Field(None, description="Stop after this many optimizer steps.")
    seed: int = Field(42, description="Seed of the initialisation, data order and sampling.")
    log_every_steps: PositiveInt = Field(10, description="Log the training metrics every N optimizer steps.")
    optim: Optim = Field(description="The optimizer (AdamW).")
    schedule: Schedule = Field(default_factory=Schedule, description="The learning-rate schedule.")
    checkpoint: Checkpoint = Field(description="Where and how often checkpoints are saved, and which is best.")
    deepspeed: DeepSpeedSettings = Field(default_factory=DeepSpeedSettings,
                                         description="DeepSpeed's ZeRO stage and precision.")
    performance: Performance = Field(default_factory=Performance, description="How fast the same training runs "
                                                                             "on a GPU (nothing trained changes).")
    eval: Evaluation = Field(default_factory=Evaluation, description="How often the validation set is evaluated.")
    early_stopping: Optional[EarlyStopping] = Field(None, description="Stop when the best metric stops "
                                                                      "improving (off when unset).")


class Recipe(Strict):
    """One training stage: where it runs and what it trains."""

    name: Annotated[str, _matching(_JOB_NAME, "lowercase letters, digits and dashes")] = Field(
        description="Job name on every target.")
    description: str = Field("", description="What the stage is for, in a line (a VESSL run's description; "
                                              "unset: <task> stage from <recipe>).")
    task: str = Field(description="What the stage trains: a registered task (`launch list` shows them).")
    image: str = Field(description="Container image, e.g. pytorch/pytorch:2.5.1-cuda12.4-cudnn9-devel.")
    resources: Resources = Field(description="The machines: accelerator, GPUs, nodes, spot, disk, recovery.")
    code: Code = Field(description="Where the code comes from on the node.")
    volumes: dict[str, Volume] = Field(default_factory=dict, description="Storage mounted on the nodes, by name "
                                                                         "(models, datasets).")
    env: dict[EnvName, Text] = Field(default_factory=dict, description="Plain environment variables.")
    secrets: list[EnvName] = Field(default_factory=list, description="Names of secrets taken from the "
                                   "environment or .env at launch; values never enter a file or a log.")
    secrets_mode: Literal["platform", "inline"] = Field(
        "platform", description="VESSL only: 'platform' references VESSL's stored secrets; 'inline' passes the "
                                "values from .env at launch through a private temporary file.")
    setup: str = Field("pip install -e '.[node]'", description="Shell run once per node before training (the "
                       "`node` extra: the trainer and the contract, none of the launcher's dependencies).")
    mlflow: MLflowSettings = Field(description="Where the run's metrics are tracked.")
    train: Train = Field(description="What is trained and how: the settings every task shares and the task's "
                                     "own options.")
    # written `register:`; named otherwise here, since a field called `register` inherits ABCMeta.register as
    # its default in every subclass pydantic makes (each task's recipe model)
    registration: Optional[Registration] = Field(
        None, alias="register", description="Register the run's model in the MLflow Model Registry when it "
                                            "finishes (launch models lists it).")
    profiles: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Named sets of dotted overrides, e.g. local: {train.max_steps: 40}.")
    sweep: Axes = Field(
        default_factory=dict,
        description="Axes of a sweep: axis name -> entry name -> dotted overrides, e.g. lr: {lr_1e4: "
                    "{train.optim.lr: 1.0e-4}, lr_3e4: {train.optim.lr: 3.0e-4}}. A launch runs one job per cell "
                    "of the grid (every combination of one entry per axis, axes in the order written), named by "
                    "its entries joined by `__` (lr_1e4__seed_1); a cell applies after the profile and before "
                    "--override. Axis and entry names: lowercase letters and digits with single '.', '_' or '-' "
                    "between them. The recipe as written must be valid too (what no cell changes). Empty: one "
                    "run.")
    search: Optional[Search] = Field(
        None, description="How the sweep is explored (spottrain_contract.search): grid (every cell to the end) or "
                          "asha, hyperband or median, which stop losing cells early, judged by an MLflow metric "
                          "against a growing budget; optionally trials sampled from a space of distributions.")

    @property
    def world_size(self) -> int:
        """The ranks the recipe asks for (its preferred GPUs × nodes): the global batch is computed with it."""
        return self.resources.preferred_gpus * self.resources.nodes

    @property
    def effective_batch(self) -> int:
        return self.train.batch.per_gpu * self.train.batch.grad_accum * self.world_size

    def grad_accum_on(self, gpus: int, nodes: Optional[int] = None) -> Optional[int]:
        """The gradient accumulation that keeps the global batch on `gpus` per node (and `nodes`, default the
        recipe's) (None if none does)."""
        ranks = self.train.batch.per_gpu * gpus * (nodes if nodes is not None else self.resources.nodes)
        return self.effective_batch // ranks if self.effective_batch % ranks == 0 else None

    @model_validator(mode="after")
    def _every_capacity_keeps_the_global_batch(self):
        for gpus in self.resources.gpu_counts[1:]:
            if self.grad_accum_on(gpus) is None:
                raise FieldProblem("resources.gpus", f"{gpus} GPUs per node cannot keep the global batch of "
                                                     f"{self.effective_batch} with train.batch.per_gpu "
                                                     f"{self.train.batch.per_gpu}: drop {gpus}, or change per_gpu")
        return self

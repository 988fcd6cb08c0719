"""Typed run configuration: schema, YAML loading with ``_base_`` inheritance, overrides.

A run is described by one YAML file that may inherit from others and by dotted
command-line overrides. Loading resolves everything into a :class:`Config`
(pydantic v2, every section ``extra="forbid"``, strict types), remembering for
every key the file and line (or the override) that set it, so that an unknown
key, a wrong type or an impossible combination is reported as::

    invalid config (1 problem):
      train.stages.main.lr: expected a number, got 'fast' (str) (set in configs/a.yaml, line 12)

File semantics:

* ``_base_: path`` or ``_base_: [path, ...]`` at the top of a file names the
  files it inherits from, relative to the including file. Bases are merged left
  to right, then the file itself on top. Inheritance is recursive; a cycle is an
  error.
* Merging is deep for mappings; lists and scalars replace. A mapping that
  contains ``_delete_: true`` replaces the inherited mapping instead of merging
  into it.
* YAML anchors and merge keys (``<<: *defaults``) work inside one file, e.g. to
  share settings between training stages.
* Floats may be written ``5e-6`` (YAML 1.2 style) as well as ``5.0e-6``.

Overrides are ``dotted.key=value`` strings; the value is parsed as YAML
(``train.stages.main.milestones=[30,50]``, ``data.root=null``). A path element
that meets a list is a list index (``data.image_size.0=256``). An override
replaces whatever is at its path (mappings are not merged).

Methods add their own typed section with :func:`register_method_schema`.
"""

from __future__ import annotations

import copy
import difflib
import importlib
import os
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

__all__ = [
    "AugmentConfig",
    "Config",
    "ConfigError",
    "ConfigFieldError",
    "ConfigIssue",
    "DATASET_FOLDERS",
    "DATA_ENV_VAR",
    "DataConfig",
    "EvalConfig",
    "IMAGE_DATASETS",
    "LogConfig",
    "MethodConfig",
    "ModelConfig",
    "RerankConfig",
    "StageConfig",
    "TrainConfig",
    "VIDEO_DATASETS",
    "VideoConfig",
    "apply_overrides",
    "cfg_to_yaml",
    "config_from_dict",
    "dump_config",
    "get_method_schema",
    "load_config",
    "parse_override",
    "register_method_schema",
    "registered_method_schemas",
    "resolve_data_root",
]

# --------------------------------------------------------------------------- constants

DATA_ENV_VAR = "VIREID_DATA"
"""Environment variable holding the folder that contains the dataset folders (architecture.md §4)."""

DATASET_FOLDERS: dict[str, str] = {
    "sysu": "SYSU-MM01",
    "regdb": "RegDB",
    "llcm": "LLCM",
    "vcm": "HITSZ-VCM",
    "bupt": "BUPTCampus",
}
"""Folder name of each dataset under ``$VIREID_DATA`` (the release folder names, datasets.md)."""

IMAGE_DATASETS = ("sysu", "regdb", "llcm")
VIDEO_DATASETS = ("vcm", "bupt")

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
"""Pixel mean used by OpenAI CLIP preprocessing (open_clip ``OPENAI_DATASET_MEAN``)."""
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
"""Pixel std used by OpenAI CLIP preprocessing (open_clip ``OPENAI_DATASET_STD``)."""

DEFAULT_WARMUP_FACTOR = 0.01
"""Warm-up start as a fraction of the base lr when neither factor nor start lr is given
(CSDN stage 3, methods.md: "warm-up 10 epochs from ×0.01")."""

BASE_KEY = "_base_"
DELETE_KEY = "_delete_"
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_STAGE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Path_ = tuple[str | int, ...]


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config: dotted key, what is wrong, where the key was set."""

    key: str
    message: str
    source: str

    def __str__(self) -> str:
        where = f" (set in {self.source})" if self.source else ""
        key = self.key or "<root>"
        return f"{key}: {self.message}{where}"


class ConfigError(ValueError):
    """An invalid configuration: names the key, the file (or override) and what was expected."""

    def __init__(self, message: str, issues: Sequence[ConfigIssue] = ()):
        super().__init__(message)
        self.issues: list[ConfigIssue] = list(issues)

    @classmethod
    def from_issues(cls, issues: Sequence[ConfigIssue]) -> ConfigError:
        noun = "problem" if len(issues) == 1 else "problems"
        lines = [f"invalid config ({len(issues)} {noun}):"]
        lines += [f"  {issue}" for issue in issues]
        return cls("\n".join(lines), issues)


class ConfigFieldError(ValueError):
    """Raise from a ``model_validator`` to blame one field of the model being checked.

    The reported key is then ``<model path>.<field>`` instead of the model's path;
    method schemas may use it too.
    """

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


# --------------------------------------------------------------------------- helpers


def _as_tuple(value: Any) -> Any:
    """YAML has no tuples: accept a list where the schema wants a fixed-length tuple."""
    return tuple(value) if isinstance(value, list) else value


def _strict_model_config(**extra: Any) -> ConfigDict:
    return ConfigDict(extra="forbid", strict=True, validate_assignment=True, **extra)


Prob = Annotated[float, Field(ge=0.0, le=1.0)]
PositiveFloat = Annotated[float, Field(gt=0.0)]


class _Section(BaseModel):
    model_config = _strict_model_config()


# --------------------------------------------------------------------------- data


class VideoConfig(_Section):
    """Frame sampling of tracklets (video datasets only; ignored for image datasets).

    Names follow datasets.md: HITSZ-VCM trains with restricted random sampling
    (``rrs``: one random frame per chunk) and tests with the first frame of each
    chunk; BUPTCampus trains with sorted random indices and tests with evenly
    spaced (floored linspace) frames; ``dense`` averages all consecutive T-frame clips.
    """

    num_frames: int = Field(
        10, ge=1, description="T, frames per training clip (X-ReID: 10, VLD/LSMRL: 6)."
    )
    test_num_frames: int | None = Field(
        None, ge=1, description="T at test time; null = same as num_frames."
    )
    train_sampling: Literal["rrs", "random_sorted"] = Field(
        "rrs", description="Training frame sampling: rrs (HITSZ-VCM) or random_sorted (BUPTCampus)."
    )
    test_sampling: Literal["first_of_chunk", "evenly", "dense"] = Field(
        "first_of_chunk",
        description="Test sampling: first_of_chunk (HITSZ-VCM), evenly (BUPTCampus), dense (all clips).",
    )

    @property
    def frames_at_test(self) -> int:
        """T used at test time."""
        return self.test_num_frames if self.test_num_frames is not None else self.num_frames


class AugmentConfig(_Section):
    """Training augmentation (methods.md: pad 10, random crop, flip, erasing, modality tricks)."""

    pad: int = Field(
        10, ge=0, description="Zero padding before the random crop back to image_size."
    )
    flip_prob: Prob = Field(0.5, description="Probability of a horizontal flip.")
    random_erasing_prob: Prob = Field(0.5, description="Probability of random erasing.")
    channel_erasing: bool = Field(
        False, description="Erase with per-channel random values (CSDN 'channel random erasing')."
    )
    channel_exchange: bool = Field(
        False, description="Extra visible view with one random channel or gray (CSDN)."
    )
    adaptive_gray_prob: Prob = Field(
        0.0, description="Probability of adaptive gray on infrared images (CSDN: 0.5)."
    )
    mean: Annotated[tuple[float, float, float], BeforeValidator(_as_tuple)] = Field(
        CLIP_MEAN, description="Normalisation mean (RGB), CLIP's by default."
    )
    std: Annotated[
        tuple[PositiveFloat, PositiveFloat, PositiveFloat], BeforeValidator(_as_tuple)
    ] = Field(CLIP_STD, description="Normalisation std (RGB), CLIP's by default.")


class DataConfig(_Section):
    """Dataset, input size, batch composition and loading."""

    name: Literal["sysu", "regdb", "llcm", "vcm", "bupt"] = Field(
        ..., description="Dataset: sysu, regdb, llcm (images) or vcm, bupt (video)."
    )
    root: str | None = Field(
        None,
        description=f"Dataset folder; null = ${DATA_ENV_VAR}/<release folder name> (see resolve_data_root).",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Loader/protocol options, checked by the dataset loader "
        "(e.g. mode, trial, trials, official_drop, min_seq_len).",
    )
    image_size: Annotated[tuple[int, int], BeforeValidator(_as_tuple)] = Field(
        (288, 144), description="Input size [height, width] (methods.md: 288x144 everywhere)."
    )
    video: VideoConfig = Field(default_factory=VideoConfig, description="Tracklet frame sampling.")
    augment: AugmentConfig = Field(
        default_factory=AugmentConfig, description="Training augmentation."
    )
    identities_per_batch: int = Field(8, ge=1, description="P: identities per batch.")
    instances_per_identity: int = Field(
        4, ge=1, description="K: images (or clips) per identity and per modality in a batch."
    )
    workers: int = Field(4, ge=0, description="DataLoader worker processes (0 = main process).")
    pin_memory: bool = Field(True, description="Pin host memory (only used with an accelerator).")
    skip_bad_images: bool = Field(
        False, description="Skip unreadable images with a warning and a count instead of failing."
    )

    @field_validator("image_size")
    @classmethod
    def _positive_size(cls, value: tuple[int, int]) -> tuple[int, int]:
        if value[0] < 1 or value[1] < 1:
            raise ValueError(f"height and width must be >= 1, got {list(value)}")
        return value

    @property
    def is_video(self) -> bool:
        """True for tracklet datasets (HITSZ-VCM, BUPTCampus)."""
        return self.name in VIDEO_DATASETS


def resolve_data_root(data: DataConfig, environ: Mapping[str, str] | None = None) -> Path:
    """Folder of the dataset: ``data.root`` if set, else ``$VIREID_DATA/<release folder>``.

    ``~`` and environment variables in ``data.root`` are expanded. The folder is
    not checked here (the loader does that, showing the expected layout).
    """
    env = os.environ if environ is None else environ
    if data.root is not None:
        return Path(os.path.expandvars(os.path.expanduser(data.root)))
    base = env.get(DATA_ENV_VAR)
    if not base:
        raise ConfigError(
            f"data.root: not set and ${DATA_ENV_VAR} is not defined; set data.root=/path/to/"
            f"{DATASET_FOLDERS[data.name]} or export {DATA_ENV_VAR}=/folder/containing/"
            f"{DATASET_FOLDERS[data.name]}"
        )
    return Path(os.path.expanduser(base)) / DATASET_FOLDERS[data.name]


# --------------------------------------------------------------------------- model


class ModelConfig(_Section):
    """CLIP backbone and its adaptations (architecture.md, models/clip.py)."""

    backbone: str = Field(
        "ViT-B-16",
        min_length=1,
        description="open_clip architecture name (ViT-B-16, RN50) or a tiny test variant.",
    )
    weights: str | None = Field(
        None, description="Local weight file (OpenAI archive, open_clip checkpoint or safetensors)."
    )
    pretrained: str | None = Field(
        None,
        description="Pretrained tag (e.g. 'openai') fetched only by the explicit weights verb; "
        "never downloaded implicitly.",
    )
    last_stride: int = Field(1, ge=1, description="Stride of the last ResNet stage (ReID: 1).")
    patch_stride: int | None = Field(
        None, ge=1, description="ViT patch-embedding stride; null = patch size (no overlap)."
    )
    camera_embedding: bool = Field(False, description="Learned per-camera token embedding (SIE).")
    camera_embedding_scale: float = Field(
        1.0, description="Coefficient of the camera embedding (X-ReID: 1.0)."
    )
    frozen: list[str] = Field(
        default_factory=list,
        description="Named parts frozen for the whole run (e.g. patch_embed, text_encoder).",
    )

    @model_validator(mode="after")
    def _one_weight_source(self) -> ModelConfig:
        if self.weights is not None and self.pretrained is not None:
            raise ConfigFieldError(
                "pretrained",
                "give either model.weights (a local file) or model.pretrained (a tag), not both",
            )
        return self


# --------------------------------------------------------------------------- method


class MethodConfig(_Section):
    """Method section when no schema is registered for the method: ``name`` and free ``params``.

    A method registers its own schema with :func:`register_method_schema`; the
    section is then validated against it instead.
    """

    name: str = Field(
        ..., min_length=1, description="Method name (e.g. clipreid, csdn, xreid, lsmrl)."
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Free options, only for methods without a registered schema.",
    )


_METHOD_SCHEMAS: dict[str, type[BaseModel]] = {}
_CONFIG_CLASSES: dict[str, type[Config]] = {}


def register_method_schema(name: str, schema: type[BaseModel], *, replace: bool = False) -> None:
    """Make ``method:`` sections with ``name: <name>`` validate against ``schema``.

    ``schema`` must be a pydantic model with ``extra="forbid"`` and a ``name``
    field (subclassing :class:`MethodConfig` gives both; a ``params`` field is then
    still allowed unless the subclass removes it). Registering the same class
    twice is a no-op; a different class under a taken name needs ``replace=True``.
    """
    if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
        raise TypeError(f"method schema for {name!r} must be a pydantic BaseModel subclass")
    if schema.model_config.get("extra") != "forbid":
        raise TypeError(
            f"method schema {schema.__name__} for {name!r} must set model_config extra='forbid' "
            "(subclass vireid.config.MethodConfig)"
        )
    if "name" not in schema.model_fields:
        raise TypeError(f"method schema {schema.__name__} for {name!r} must have a 'name' field")
    current = _METHOD_SCHEMAS.get(name)
    if current is schema:
        return
    if current is not None and not replace:
        raise ValueError(
            f"method {name!r} already has schema {current.__name__}; pass replace=True to change it"
        )
    _METHOD_SCHEMAS[name] = schema
    _CONFIG_CLASSES.pop(name, None)


def get_method_schema(name: str) -> type[BaseModel] | None:
    """The schema registered for method ``name``, or None."""
    return _METHOD_SCHEMAS.get(name)


def registered_method_schemas() -> dict[str, type[BaseModel]]:
    """A copy of the method-name -> schema registry."""
    return dict(_METHOD_SCHEMAS)


def _import_method_registry() -> None:
    """Import ``vireid.methods`` (if it exists) so that methods register their schemas."""
    try:
        importlib.import_module("vireid.methods")
    except ModuleNotFoundError as exc:
        if exc.name not in ("vireid.methods",):
            raise


# --------------------------------------------------------------------------- train


class StageConfig(_Section):
    """One training stage: length, optimiser, schedule and an optional batch override."""

    epochs: int = Field(..., ge=0, description="Epochs of this stage (0 skips it).")
    optimizer: Literal["adam", "adamw", "sgd"] = Field("adam", description="Optimiser.")
    lr: PositiveFloat = Field(..., description="Base learning rate.")
    weight_decay: float = Field(5e-4, ge=0.0, description="Weight decay.")
    weight_decay_bias: float | None = Field(
        None, ge=0.0, description="Weight decay of biases and norms; null = weight_decay."
    )
    bias_lr_factor: PositiveFloat = Field(
        1.0, description="LR multiplier for biases (CLIP-ReID style)."
    )
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum.")
    betas: Annotated[tuple[float, float], BeforeValidator(_as_tuple)] = Field(
        (0.9, 0.999), description="Adam/AdamW betas."
    )
    lr_multipliers: dict[str, PositiveFloat] = Field(
        default_factory=dict,
        description="LR multiplier per parameter-group name defined by the method "
        "(e.g. new_modules: 10, prompts: 25, classifiers: 2).",
    )
    scheduler: Literal["multistep", "cosine", "constant"] = Field(
        "multistep", description="LR schedule after warm-up."
    )
    schedule_by: Literal["epoch", "step"] = Field(
        "epoch", description="Update the schedule once per epoch or at every step."
    )
    milestones: list[int] = Field(
        default_factory=list, description="multistep: epochs at which lr is multiplied by gamma."
    )
    gamma: PositiveFloat = Field(0.1, description="multistep: decay factor.")
    min_lr: float = Field(0.0, ge=0.0, description="cosine: final learning rate.")
    warmup_epochs: int = Field(0, ge=0, description="Linear warm-up epochs.")
    warmup_factor: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description=f"Warm-up start as a fraction of lr; null = warmup_start_lr or {DEFAULT_WARMUP_FACTOR}.",
    )
    warmup_start_lr: float | None = Field(
        None, gt=0.0, description="Warm-up start lr (alternative to warmup_factor)."
    )
    identities_per_batch: int | None = Field(
        None, ge=1, description="P for this stage; null = data.identities_per_batch."
    )
    instances_per_identity: int | None = Field(
        None, ge=1, description="K for this stage; null = data.instances_per_identity."
    )
    batch_size: int | None = Field(
        None, ge=1, description="Batch size for stages over cached features (e.g. prompt learning)."
    )

    @model_validator(mode="after")
    def _check_schedule(self) -> StageConfig:
        if self.warmup_epochs > self.epochs:
            raise ConfigFieldError(
                "warmup_epochs", f"must be <= epochs ({self.epochs}), got {self.warmup_epochs}"
            )
        for previous, current in zip(self.milestones, self.milestones[1:]):
            if current <= previous:
                raise ConfigFieldError(
                    "milestones", f"must be strictly increasing, got {self.milestones}"
                )
        for milestone in self.milestones:
            if not 0 < milestone < self.epochs:
                raise ConfigFieldError(
                    "milestones",
                    f"each milestone must be in 1..{self.epochs - 1} (epochs={self.epochs}), "
                    f"got {milestone}",
                )
        if self.scheduler == "cosine" and self.min_lr > self.lr:
            raise ConfigFieldError("min_lr", f"must be <= lr ({self.lr}), got {self.min_lr}")
        if self.warmup_factor is not None and self.warmup_start_lr is not None:
            raise ConfigFieldError(
                "warmup_start_lr", "give either warmup_factor or warmup_start_lr, not both"
            )
        if self.warmup_start_lr is not None and self.warmup_start_lr > self.lr:
            raise ConfigFieldError(
                "warmup_start_lr", f"must be <= lr ({self.lr}), got {self.warmup_start_lr}"
            )
        for index, beta in enumerate(self.betas):
            if not 0.0 <= beta < 1.0:
                raise ConfigFieldError("betas", f"beta{index + 1} must be in [0, 1), got {beta}")
        return self

    @property
    def warmup_start(self) -> float:
        """Learning rate at the first warm-up step."""
        if self.warmup_start_lr is not None:
            return self.warmup_start_lr
        factor = self.warmup_factor if self.warmup_factor is not None else DEFAULT_WARMUP_FACTOR
        return self.lr * factor


class LogConfig(_Section):
    """Run logging."""

    jsonl: bool = Field(True, description="Write metrics.jsonl in the run folder.")
    tensorboard: bool = Field(False, description="Write TensorBoard events (needs tensorboard).")
    every_steps: int = Field(50, ge=1, description="Log training losses every N steps.")
    progress: bool = Field(True, description="Show a progress bar.")


class TrainConfig(_Section):
    """Training loop: stages and engine switches."""

    stages: dict[str, StageConfig] = Field(
        default_factory=dict,
        description="Training stages in order, by name (the method says which names it expects).",
    )
    amp: bool = Field(False, description="Automatic mixed precision.")
    amp_dtype: Literal["bf16", "fp16"] = Field("bf16", description="AMP dtype.")
    compile: bool = Field(False, description="torch.compile the model.")
    clip_grad_norm: PositiveFloat | None = Field(
        None, description="Clip the global gradient norm to this value; null = no clipping."
    )
    eval_every: int = Field(0, ge=0, description="Evaluate every N epochs (0 = only at the end).")
    checkpoint_every: int = Field(
        1, ge=0, description="Checkpoint every N epochs (0 = only at the end of each stage)."
    )
    checkpoint_every_steps: int | None = Field(
        None, ge=1, description="Also checkpoint every N steps (mid-epoch); null = off."
    )
    keep_epoch_checkpoints: bool = Field(
        False, description="Keep a copy of every periodic checkpoint (not only last.pt)."
    )
    resume: str | None = Field(None, description="Checkpoint to resume from; null = fresh run.")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps.")
    deterministic: bool = Field(False, description="Request deterministic kernels (slower).")
    max_steps: int | None = Field(
        None, ge=1, description="Stop each stage after this many steps (smoke runs); null = no cap."
    )
    log: LogConfig = Field(default_factory=LogConfig, description="Logging.")

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if not _DEVICE_RE.match(value):
            raise ValueError(f"expected auto, cpu, mps, cuda or cuda:N, got {value!r}")
        return value

    @field_validator("stages")
    @classmethod
    def _check_stage_names(cls, value: dict[str, StageConfig]) -> dict[str, StageConfig]:
        for name in value:
            if not _STAGE_RE.match(name):
                raise ValueError(f"stage name {name!r} must be an identifier (letters, digits, _)")
        return value


# --------------------------------------------------------------------------- eval


class RerankConfig(_Section):
    """k-reciprocal re-ranking (Zhong et al., CVPR 2017; usual defaults k1=20, k2=6, lambda=0.3)."""

    enabled: bool = Field(False, description="Apply re-ranking to the distance matrix.")
    k1: int = Field(20, ge=1, description="k1 (k-reciprocal neighbours).")
    k2: int = Field(6, ge=1, description="k2 (local query expansion).")
    lambda_value: Prob = Field(0.3, description="Weight of the original distance.")

    @model_validator(mode="after")
    def _check_k(self) -> RerankConfig:
        if self.k2 > self.k1:
            raise ConfigFieldError("k2", f"must be <= k1 ({self.k1}), got {self.k2}")
        return self


class EvalConfig(_Section):
    """Evaluation (the protocol itself, trials and directions, comes from data.options)."""

    batch_size: int = Field(64, ge=1, description="Images (or clips) per forward pass.")
    flip_test: bool = Field(False, description="Also embed the horizontally flipped input.")
    flip_fusion: Literal["mean", "concat"] = Field(
        "mean", description="How flip features combine: mean, or concat (CSDN)."
    )
    distance: Literal["cosine", "euclidean"] = Field("cosine", description="Distance for ranking.")
    splits: list[str] | None = Field(
        None, description="Names of the evaluation splits to run; null = all of the protocol."
    )
    rerank: RerankConfig = Field(default_factory=RerankConfig, description="Re-ranking.")


# --------------------------------------------------------------------------- root


class Config(_Section):
    """A complete, validated run configuration."""

    name: str = Field("run", description="Run name (folder under output_dir).")
    seed: int = Field(0, ge=0, description="Global random seed.")
    output_dir: str = Field("runs", description="Folder that receives run folders.")
    data: DataConfig = Field(..., description="Dataset and loading.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="Backbone.")
    method: MethodConfig = Field(..., description="Method and its options.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Training.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Evaluation.")

    _sources: dict[Path_, str] = PrivateAttr(default_factory=dict)
    _default_source: str = PrivateAttr(default="<dict>")

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError(
                f"must be a plain folder name (letters, digits, '.', '_', '-'), got {value!r}"
            )
        return value

    def __eq__(self, other: object) -> bool:  # provenance is not part of the value
        if not isinstance(other, Config):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    # -- convenience -------------------------------------------------------

    @property
    def run_dir(self) -> Path:
        """``output_dir/name``."""
        return Path(self.output_dir) / self.name

    def stage(self, name: str) -> StageConfig:
        """The settings of training stage ``name`` (error naming ``train.stages`` if absent)."""
        if name not in self.train.stages:
            raise self.error(
                "train.stages",
                f"stage {name!r} is missing; configured stages: {list(self.train.stages) or 'none'}",
            )
        return self.train.stages[name]

    def batch_composition(self, stage: str) -> tuple[int, int]:
        """(P, K) for ``stage``: its override, else the data section's."""
        settings = self.stage(stage)
        identities = settings.identities_per_batch or self.data.identities_per_batch
        instances = settings.instances_per_identity or self.data.instances_per_identity
        return identities, instances

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuild through validation: the per-method Config subclass is created at run
        # time, so pickle (DataLoader workers, spawn) must not look it up by name.
        return (_rebuild_config, (self.to_dict(), dict(self._sources), self._default_source))

    def to_dict(self) -> dict[str, Any]:
        """Plain (JSON/YAML-safe) dict of the resolved config, e.g. for checkpoints."""
        return self.model_dump(mode="json")

    def source_of(self, key: str | Sequence[str | int]) -> str:
        """File and line (or override) that set ``key`` (dotted), or its nearest parent."""
        path = _split_key(key) if isinstance(key, str) else tuple(key)
        return _lookup_source(self._sources, path, self._default_source)

    def error(self, key: str, message: str) -> ConfigError:
        """A :class:`ConfigError` about ``key`` naming where it was set.

        For checks that need data, e.g. the sampler finding fewer images per
        identity than ``data.instances_per_identity``: ``raise cfg.error(key, msg)``.
        """
        return ConfigError.from_issues([ConfigIssue(key, message, self.source_of(key))])


def _config_class(method_name: Any) -> type[Config]:
    """Config class whose ``method`` field uses the schema registered for ``method_name``."""
    if not isinstance(method_name, str):
        return Config
    if method_name not in _METHOD_SCHEMAS:
        _import_method_registry()
    schema = _METHOD_SCHEMAS.get(method_name)
    if schema is None:
        return Config
    cls = _CONFIG_CLASSES.get(method_name)
    if cls is None:
        cls = create_model(
            f"Config_{re.sub(r'[^0-9A-Za-z_]', '_', method_name)}",
            __base__=Config,
            method=(schema, Field(..., description=f"Options of method {method_name!r}.")),
        )
        _CONFIG_CLASSES[method_name] = cls
    return cls


# --------------------------------------------------------------------------- YAML reading


class _Loader(yaml.SafeLoader):
    """Safe loader that also reads ``5e-6`` / ``1e5`` as floats (YAML 1.2 style)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _display_path(path: Path) -> str:
    """The path relative to the working folder when it lies inside it, else absolute."""
    absolute = Path(os.path.normpath(path.absolute()))
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)


def _parse_yaml(text: str, origin: str) -> tuple[Any, dict[Path_, str]]:
    """Parse YAML text; also return ``path -> "origin, line N"`` for every mapping key and list item."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
        sources: dict[Path_, str] = {}
        if node is not None:
            _record_lines(loader, node, data, (), origin, sources)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: not valid YAML:\n{exc}") from None
    finally:
        loader.dispose()
    return data, sources


def _record_lines(
    loader: _Loader, node: yaml.Node, value: Any, path: Path_, origin: str, out: dict[Path_, str]
) -> None:
    if isinstance(node, yaml.MappingNode) and isinstance(value, dict):
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            key = loader.construct_object(key_node)
            if key not in value:
                continue
            child = (*path, key)
            out[child] = f"{origin}, line {key_node.start_mark.line + 1}"
            _record_lines(loader, value_node, value[key], child, origin, out)
    elif isinstance(node, yaml.SequenceNode) and isinstance(value, list):
        for index, (item_node, item) in enumerate(zip(node.value, value)):
            child = (*path, index)
            out[child] = f"{origin}, line {item_node.start_mark.line + 1}"
            _record_lines(loader, item_node, item, child, origin, out)


def _read_config_file(path: Path) -> tuple[dict[str, Any], dict[Path_, str]]:
    origin = _display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{origin}: cannot read config file ({exc.strerror or exc})") from None
    data, sources = _parse_yaml(text, origin)
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{origin}: a config file must be a mapping of keys, got {type(data).__name__}"
        )
    for key in data:
        if not isinstance(key, str):
            raise ConfigError(f"{origin}: top-level key {key!r} must be a string")
    return data, sources


# --------------------------------------------------------------------------- merging


def _strip_delete(value: Any) -> Any:
    """Deep copy of ``value`` without ``_delete_`` markers."""
    if isinstance(value, dict):
        return {k: _strip_delete(v) for k, v in value.items() if k != DELETE_KEY}
    if isinstance(value, list):
        return [_strip_delete(v) for v in value]
    return copy.deepcopy(value)


def _has_prefix(path: Path_, prefix: Path_) -> bool:
    return path[: len(prefix)] == prefix


def _replace_sources(
    sources: dict[Path_, str], prefix: Path_, new_sources: Mapping[Path_, str]
) -> None:
    for key in [k for k in sources if _has_prefix(k, prefix)]:
        del sources[key]
    for key, where in new_sources.items():
        if _has_prefix(key, prefix):
            sources[key] = where


def _merge(
    base: dict[str, Any],
    base_sources: dict[Path_, str],
    child: Mapping[str, Any],
    child_sources: Mapping[Path_, str],
    path: Path_ = (),
) -> None:
    """Deep-merge ``child`` into ``base`` in place, keeping ``base_sources`` in step."""
    for key, value in child.items():
        if key == DELETE_KEY:
            continue
        here = (*path, key)
        current = base.get(key)
        merge_dicts = (
            isinstance(value, dict)
            and isinstance(current, dict)
            and value.get(DELETE_KEY) is not True
        )
        if merge_dicts:
            if here in child_sources:
                base_sources[here] = child_sources[here]
            _merge(current, base_sources, value, child_sources, here)
        else:
            base[key] = _strip_delete(value)
            _replace_sources(base_sources, here, child_sources)


def _load_tree(path: Path, stack: tuple[Path, ...]) -> tuple[dict[str, Any], dict[Path_, str]]:
    """Read ``path`` and its bases recursively; return merged data and key sources."""
    real = path.resolve()
    if real in stack:
        chain = " -> ".join(_display_path(p) for p in (*stack, real))
        raise ConfigError(f"{BASE_KEY} inheritance cycle: {chain}")
    data, sources = _read_config_file(path)
    origin = _display_path(path)
    bases = data.pop(BASE_KEY, None)
    sources = {k: v for k, v in sources.items() if k[:1] != (BASE_KEY,)}
    if bases is None:
        bases = []
    elif isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) and b for b in bases):
        raise ConfigError(
            f"{origin}: {BASE_KEY} must be a file path or a list of file paths, got {bases!r}"
        )
    merged: dict[str, Any] = {}
    merged_sources: dict[Path_, str] = {}
    for base in bases:
        base_path = Path(os.path.expanduser(base))
        if not base_path.is_absolute():
            base_path = path.parent / base_path
        if not base_path.is_file():
            raise ConfigError(
                f"{origin}: base config {base!r} not found (looked for {_display_path(base_path)})"
            )
        base_data, base_sources = _load_tree(base_path, (*stack, real))
        _merge(merged, merged_sources, base_data, base_sources)
    _merge(merged, merged_sources, data, sources)
    return merged, merged_sources


# --------------------------------------------------------------------------- overrides


def _split_key(key: str) -> tuple[str, ...]:
    return tuple(key.split("."))


def parse_override(text: str) -> tuple[tuple[str, ...], Any]:
    """Split ``a.b.c=value`` into the key path and the YAML-parsed value."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value (e.g. train.stages.main.lr=5e-6)")
    key, raw = text.split("=", 1)
    key = key.strip()
    parts = _split_key(key)
    if not key or any(not part for part in parts):
        raise ConfigError(f"override {text!r}: malformed key {key!r}")
    if parts[0] == BASE_KEY or DELETE_KEY in parts:
        raise ConfigError(f"override {text!r}: {parts[0]!r} can only be used in config files")
    try:
        value = yaml.load(raw, Loader=_Loader) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from None
    return parts, value


def apply_overrides(
    data: dict[str, Any], sources: dict[Path_, str], overrides: Iterable[str]
) -> None:
    """Apply dotted overrides to ``data`` in place and record them in ``sources``."""
    for text in overrides:
        parts, value = parse_override(text)
        origin = f"override {text!r}"
        node: Any = data
        path: list[str | int] = []
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            step: str | int = part
            if isinstance(node, list):
                if not re.fullmatch(r"-?\d+", part):
                    raise ConfigError(
                        f"{origin}: {'.'.join(map(str, path))} is a list; expected an index, got {part!r}"
                    )
                step = int(part)
                if not -len(node) <= step < len(node):
                    raise ConfigError(
                        f"{origin}: index {step} out of range for "
                        f"{'.'.join(map(str, path))} (length {len(node)})"
                    )
                step = step % len(node)
            elif not isinstance(node, dict):
                raise ConfigError(
                    f"{origin}: {'.'.join(map(str, path))} is a {type(node).__name__}, "
                    f"it has no key {part!r}"
                )
            path.append(step)
            if last:
                node[step] = value
            else:
                if isinstance(node, dict) and (step not in node or node[step] is None):
                    node[step] = {}
                node = node[step]
        target = tuple(path)
        _replace_sources(sources, target, {})
        sources[target] = origin


# --------------------------------------------------------------------------- validation


def _lookup_source(sources: Mapping[Path_, str], path: Path_, default: str) -> str:
    """Source of ``path`` or of its nearest recorded parent (digit strings may be list indices)."""
    as_index = tuple(int(p) if isinstance(p, str) and p.isdigit() else p for p in path)
    for end in range(len(path), 0, -1):
        where = sources.get(tuple(path[:end]), sources.get(as_index[:end]))
        if where is not None:
            return where
    return default


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated and Optional wrappers from a type annotation."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _model_at(root: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The pydantic model class that owns the last element of ``loc``."""
    current: Any = root
    for part in loc[:-1]:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
            continue
        origin = typing.get_origin(current)
        args = typing.get_args(current)
        if origin is dict and len(args) == 2:
            current = args[1]
        elif origin in (list, tuple) and args:
            current = args[0]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


_TYPE_WORDS = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
    "tuple_type": "a list",
}


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe_error(error: Mapping[str, Any], root: type[BaseModel]) -> tuple[tuple, str]:
    """(location, readable message) for one pydantic error."""
    loc = tuple(error["loc"])
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        owner = _model_at(root, loc)
        allowed = sorted(owner.model_fields) if owner is not None else []
        message = "unknown key"
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        if close:
            message += f" (did you mean {close[0]!r}?)"
        if allowed:
            message += f"; allowed keys here: {', '.join(allowed)}"
        return loc, message
    if kind == "missing":
        return loc, "required key is missing"
    if kind == "value_error" and isinstance(ctx.get("error"), ConfigFieldError):
        field_error = ctx["error"]
        return (*loc, field_error.field), str(field_error)
    if kind in _TYPE_WORDS:
        return (
            loc,
            f"expected {_TYPE_WORDS[kind]}, got {_short_repr(value)} ({type(value).__name__})",
        )
    if kind == "literal_error":
        return loc, f"expected one of {ctx.get('expected')}, got {_short_repr(value)}"
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    elif message.startswith("Input should be"):
        message = "expected" + message[len("Input should be") :] + f", got {_short_repr(value)}"
    return loc, message


def _validate(data: Mapping[str, Any], sources: Mapping[Path_, str], default_source: str) -> Config:
    method_section = data.get("method")
    method_name = method_section.get("name") if isinstance(method_section, Mapping) else None
    cls = _config_class(method_name)
    try:
        cfg = cls.model_validate(data)
    except ValidationError as exc:
        issues = []
        for error in exc.errors():
            loc, message = _describe_error(error, cls)
            if (
                error["type"] == "extra_forbidden"
                and loc[:1] == ("method",)
                and len(loc) == 2
                and cls is Config
                and isinstance(method_name, str)
            ):
                known = ", ".join(sorted(_METHOD_SCHEMAS)) or "none"
                message += (
                    f" (method {method_name!r} has no registered schema, so only 'name' and "
                    f"'params' are accepted; methods with schemas: {known})"
                )
            where = _lookup_source(sources, loc, default_source)
            issues.append(ConfigIssue(".".join(map(str, loc)), message, where))
        raise ConfigError.from_issues(issues) from None
    cfg._sources = dict(sources)
    cfg._default_source = default_source
    return cfg


def _rebuild_config(data: dict[str, Any], sources: dict[Path_, str], default_source: str) -> Config:
    """Unpickling hook of :class:`Config`."""
    return _validate(data, sources, default_source)


def config_from_dict(data: Mapping[str, Any], source: str = "<dict>") -> Config:
    """Validate a plain dict (e.g. from a checkpoint) into a :class:`Config`.

    ``source`` is named in error messages. ``_base_`` is not allowed here.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: a config must be a mapping, got {type(data).__name__}")
    if BASE_KEY in data:
        raise ConfigError(f"{source}: {BASE_KEY} is only allowed in config files")
    return _validate(_strip_delete(dict(data)), {}, source)


def load_config(path: str | os.PathLike[str], overrides: Iterable[str] = ()) -> Config:
    """Load a YAML config with its ``_base_`` chain, apply overrides and validate.

    If no file sets ``name``, the run is named after the file (its stem).
    Raises :class:`ConfigError` naming the key and the file or override for
    any unknown key, wrong type or violated constraint.
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config file not found: {_display_path(file)}")
    data, sources = _load_tree(file, ())
    apply_overrides(data, sources, list(overrides))
    if "name" not in data:
        data["name"] = file.stem
        sources[("name",)] = f"{_display_path(file)} (file name)"
    return _validate(data, sources, _display_path(file))


# --------------------------------------------------------------------------- dumping


def cfg_to_yaml(cfg: Config) -> str:
    """The resolved config as YAML (no ``_base_``); :func:`load_config` reads it back equal."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None, width=100)


def dump_config(cfg: Config, path: str | os.PathLike[str]) -> Path:
    """Write :func:`cfg_to_yaml` to ``path`` atomically (temp file + rename); return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(target.name + ".tmp")
    temporary.write_text(cfg_to_yaml(cfg), encoding="utf-8")
    os.replace(temporary, target)
    return target

"""The configuration schema: one typed, strict pydantic section per concern.

Every section forbids unknown keys and checks its types (``strict``); a
:class:`Config` remembers, for every key, the file and line (or the override)
that set it (:meth:`Config.source_of`), so that checks made later, with the
data at hand, still name where a value came from (:meth:`Config.error`).
Reading YAML files into a :class:`Config` is :mod:`vireid.config.loading`;
each method's own section is a schema in :mod:`vireid.config.methods`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

DATA_ENV_VAR = "VIREID_DATA"
"""Environment variable holding the folder that contains the dataset folders (docs/datasets.md#dataset-roots)."""

DATASET_FOLDERS: dict[str, str] = {
    "sysu": "SYSU-MM01",
    "regdb": "RegDB",
    "llcm": "LLCM",
    "vcm": "HITSZ-VCM",
    "bupt": "BUPTCampus",
}
"""Folder name of each dataset under ``$VIREID_DATA`` (the release folder names, docs/datasets.md#dataset-roots)."""

IMAGE_DATASETS = ("sysu", "regdb", "llcm")
VIDEO_DATASETS = ("vcm", "bupt")

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
"""Pixel mean used by OpenAI CLIP preprocessing (open_clip ``OPENAI_DATASET_MEAN``)."""
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
"""Pixel std used by OpenAI CLIP preprocessing (open_clip ``OPENAI_DATASET_STD``)."""

DEFAULT_WARMUP_FACTOR = 0.01
"""Warm-up start as a fraction of the base lr when neither factor nor start lr is given
(CSDN stage 3, docs/methods.md#csdn-csdn: 10 warm-up epochs from ×0.01)."""

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

    Names follow docs/protocols.md#frame-sampling-for-tracklets: HITSZ-VCM trains with restricted random sampling
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
    """Training augmentation (docs/methods.md#notation-and-shared-settings: pad 10, random crop, flip, erasing, modality tricks)."""

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
        (288, 144), description="Input size [height, width] (288x144 everywhere, docs/methods.md#notation-and-shared-settings)."
    )
    interpolation: Literal["bicubic", "bilinear", "lanczos"] = Field(
        "bicubic", description="Resize filter of the training and test transforms (CSDN code: "
        "PIL Lanczos; X-ReID code: bilinear; CLIP-ReID code: bicubic)."
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
    """CLIP backbone and its adaptations (docs/architecture.md#models-and-losses, models/clip.py)."""

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
        description="Pretrained tag: 'synthetic' = the small CLIPs shipped in the package "
        "(synth-vit-p8, synth-rn; no download), or an open_clip tag (e.g. 'openai') fetched "
        "through open_clip only when given here.",
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
    keep_best: bool = Field(
        False,
        description="REPRODUCTION ONLY: copy the checkpoint of the best Rank-1 to "
        "checkpoints/best.pt at every evaluation (train.eval_every). The evaluation is the "
        "TEST set, so this is model selection on the test set (the CSDN and X-ReID code).",
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
        from vireid.config.loading import _rebuild_config

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



def _split_key(key: str) -> tuple[str, ...]:
    return tuple(key.split("."))


def _lookup_source(sources: Mapping[Path_, str], path: Path_, default: str) -> str:
    """Source of ``path`` or of its nearest recorded parent (digit strings may be list indices)."""
    as_index = tuple(int(p) if isinstance(p, str) and p.isdigit() else p for p in path)
    for end in range(len(path), 0, -1):
        where = sources.get(tuple(path[:end]), sources.get(as_index[:end]))
        if where is not None:
            return where
    return default

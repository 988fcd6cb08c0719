"""Contrastive pretraining of a CLIP on captioned synthetic people (visible images only).

The recipe is CLIP's (Radford et al., 2021, "Learning Transferable Visual Models From
Natural Language Supervision"), at toy scale:

* symmetric InfoNCE over the batch: cross-entropy of image->text and text->image
  logits, averaged; logits scaled by a learnable temperature initialised at 1/0.07
  and clamped at 100 (open_clip ``ClipLoss``; the clamp as in open_clip's training
  loop, ``logit_scale.clamp_(0, math.log(100))``);
* AdamW with beta2 0.98, eps 1e-6 and weight decay 0.2 (CLIP paper, section 2.5 and
  table 20), no decay on gains, biases and the temperature (open_clip ``main.py``);
* linear warm-up then cosine decay to zero (open_clip ``scheduler.cosine_lr``).

Each step draws ``batch_size`` distinct identities of the pretraining population,
one of their images, and one caption of it (:func:`~vireid.data.synthetic.captions.caption`),
so a batch holds no two pictures of one person. Augmentation: horizontal flip, and a
grey-scale copy with a caption free of colour words (a grey photograph shows no
colour; CLIP's web data holds such photos too). Everything a step draws comes from a
generator seeded by (seed, step): a resumed run makes the same steps as an
uninterrupted one, and a seed fixes the result on one machine.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from vireid.data.synthetic.captions import caption
from vireid.data.synthetic.people import TAG_CLIP_PRETRAIN, make_rng
from vireid.data.transforms import GRAY_WEIGHTS
from vireid.engine.checkpoint import atomic_save
from vireid.files import atomic_path, write_sha256
from vireid.models.synthetic import PRETRAIN_IMAGE_SIZE, SYNTHETIC_TAG

from .data import Population, normalize, render_population

FORMAT = "vireid-synthetic-clip"
"""``format`` entry of the metadata of a weight file written by :func:`write_weights`."""

_STEP_STREAM = 1000  # keeps the per-step draws apart from the population's identities


@dataclass
class Recipe:
    """Everything that determines a pretraining run (stored in the weight file)."""

    backbone: str
    seed: int = 0
    num_ids: int = 4000
    images_per_id: int = 4
    image_size: tuple[int, int] = PRETRAIN_IMAGE_SIZE
    steps: int = 600
    batch_size: int = 256
    lr: float = 1e-3
    warmup_steps: int = 50
    weight_decay: float = 0.2
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    gray_prob: float = 0.2
    flip_prob: float = 0.5
    colour_prob: float = 0.6
    keep_prob: float = 0.75
    quick_gelu: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.image_size = tuple(int(v) for v in self.image_size)  # type: ignore[assignment]
        self.betas = tuple(float(v) for v in self.betas)  # type: ignore[assignment]
        checks = {
            "num_ids": self.num_ids >= 2, "images_per_id": self.images_per_id >= 1,
            "steps": self.steps >= 1, "batch_size": 2 <= self.batch_size <= self.num_ids,
            "lr": self.lr > 0, "warmup_steps": 0 <= self.warmup_steps,
            "weight_decay": self.weight_decay >= 0,
            "gray_prob": 0 <= self.gray_prob <= 1, "flip_prob": 0 <= self.flip_prob <= 1,
            "colour_prob": 0 <= self.colour_prob <= 1, "keep_prob": 0 < self.keep_prob <= 1,
            "image_size": len(self.image_size) == 2 and min(self.image_size) > 0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            values = ", ".join(f"{k}={getattr(self, k)!r}" for k in bad)
            raise ValueError(f"invalid pretraining recipe: {values} (batch_size must lie in "
                             "2..num_ids: a batch holds distinct identities)")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["image_size"] = list(self.image_size)
        out["betas"] = list(self.betas)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown recipe keys: {', '.join(unknown)}")
        return cls(**data)


def learning_rate(recipe: Recipe, step: int) -> float:
    """Linear warm-up to ``lr`` over ``warmup_steps``, then cosine to 0 (open_clip ``cosine_lr``)."""
    if step < recipe.warmup_steps:
        return recipe.lr * (step + 1) / recipe.warmup_steps
    span = max(recipe.steps - recipe.warmup_steps, 1)
    return 0.5 * (1.0 + math.cos(math.pi * (step - recipe.warmup_steps) / span)) * recipe.lr


def clip_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of matching rows (CLIP; open_clip ``ClipLoss`` on one device)."""
    image = F.normalize(image, dim=-1)
    text = F.normalize(text, dim=-1)
    logits = logit_scale.exp() * image @ text.t()
    labels = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """open_clip ``main.py``: no decay for 1-d tensors, norms, biases and the temperature."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        exclude = param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name \
            or "logit_scale" in name
        (no_decay if exclude else decay).append(param)
    return [{"params": no_decay, "weight_decay": 0.0},
            {"params": decay, "weight_decay": weight_decay}]


def make_batch(
    recipe: Recipe, population: Population, step: int, tokenizer
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The images (normalised float), token ids and captions of ``step``."""
    rng = make_rng(recipe.seed, TAG_CLIP_PRETRAIN, _STEP_STREAM, step)
    ids = rng.choice(recipe.num_ids, size=recipe.batch_size, replace=False)
    which = rng.integers(recipe.images_per_id, size=recipe.batch_size)
    index = torch.as_tensor(ids * recipe.images_per_id + which)
    images = population.images["visible"][index].float()
    views = population.views["visible"]
    gray = torch.as_tensor(rng.random(recipe.batch_size) < recipe.gray_prob)
    flip = torch.as_tensor(rng.random(recipe.batch_size) < recipe.flip_prob)
    texts = [
        caption(population.attrs[int(i)], rng, views[int(j)],
                colour_prob=0.0 if bool(g) else recipe.colour_prob, keep_prob=recipe.keep_prob)
        for i, j, g in zip(ids, index, gray)
    ]
    if gray.any():
        weights = torch.tensor(GRAY_WEIGHTS).view(1, 3, 1, 1)
        luma = (images[gray] * weights).sum(1, keepdim=True).expand(-1, 3, -1, -1)
        images[gray] = luma
    images[flip] = images[flip].flip(-1)
    tokens = tokenizer(texts)
    length = int(tokens.argmax(dim=-1).max()) + 1  # up to the longest caption's end token
    return normalize(images.round().clamp(0, 255)), tokens[:, :length], texts


def _load_checkpoint(path: Path, recipe: Recipe) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume from at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"cannot read the checkpoint {path}: {error}") from error
    if not isinstance(state, dict) or not {"recipe", "step", "model", "optimizer"} <= set(state):
        raise ValueError(f"{path} is not a checkpoint of `vireid clip pretrain`")
    stored = state["recipe"]
    differ = sorted(k for k in set(stored) | set(recipe.to_dict())
                    if stored.get(k) != recipe.to_dict().get(k))
    if differ:
        details = "; ".join(f"{k}: checkpoint {stored.get(k)!r}, now {recipe.to_dict().get(k)!r}"
                            for k in differ)
        raise ValueError(f"the checkpoint {path} was made with another recipe ({details})")
    return state


def pretrain(
    recipe: Recipe,
    out: str | Path,
    *,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    checkpoint_every: int = 50,
    progress: bool = True,
    log: str | Path | None = None,
) -> dict[str, Any]:
    """Pretrain ``recipe.backbone`` and write fp16 safetensors weights to ``out``.

    ``checkpoint`` (default ``OUT.ckpt``) is written every ``checkpoint_every`` steps
    (atomically); ``resume=True`` continues from it (the recipe must be the same).
    ``log``: a JSON-lines file with the loss, temperature and learning rate of every
    step. Returns a summary (steps, losses, seconds, output path).
    """
    from vireid.models.clip import get_tokenizer
    from vireid.models.factory import build_clip

    out = Path(out)
    if out.suffix != ".safetensors":
        raise ValueError(f"--out must be a .safetensors file, got {out}")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"the folder of --out does not exist: {out.parent}")
    checkpoint = Path(checkpoint) if checkpoint is not None else out.with_name(out.name + ".ckpt")
    started, cpu_started = time.perf_counter(), time.process_time()
    torch.manual_seed(recipe.seed)
    model = build_clip(recipe.backbone, recipe.image_size, quick_gelu=recipe.quick_gelu)
    optimizer = torch.optim.AdamW(_param_groups(model, recipe.weight_decay), lr=recipe.lr,
                                  betas=recipe.betas, eps=recipe.eps)
    first = 0
    if resume:
        state = _load_checkpoint(checkpoint, recipe)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        first = int(state["step"])
    population = render_population(
        seed=recipe.seed, stream=TAG_CLIP_PRETRAIN, num_ids=recipe.num_ids,
        images_per_id=recipe.images_per_id, image_size=recipe.image_size, progress=progress,
    )
    rendered = time.perf_counter() - started
    tokenizer = get_tokenizer(model.text.context_length)
    log_file = open(log, "a", encoding="utf-8") if log is not None else None
    losses: list[float] = []
    model.train()
    bar = tqdm(range(first, recipe.steps), initial=first, total=recipe.steps,
               desc=f"pretraining {recipe.backbone}", disable=not progress, mininterval=10.0)
    try:
        for step in bar:
            lr = learning_rate(recipe, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            images, tokens, _ = make_batch(recipe, population, step, tokenizer)
            loss = clip_loss(model.encode_image(images), model.encode_text(tokens),
                             model.logit_scale)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss {loss.item()} at step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            losses.append(loss.item())
            bar.set_postfix(loss=f"{losses[-1]:.3f}", scale=f"{model.logit_scale.exp().item():.1f}")
            if log_file is not None:
                log_file.write(json.dumps({
                    "step": step + 1, "loss": losses[-1], "lr": lr,
                    "logit_scale": model.logit_scale.exp().item(),
                    "seconds": round(time.perf_counter() - started, 1),
                }) + "\n")
                log_file.flush()
            done = step + 1
            if checkpoint_every and (done % checkpoint_every == 0 or done == recipe.steps):
                atomic_save({"recipe": recipe.to_dict(), "step": done, "model": model.state_dict(),
                             "optimizer": optimizer.state_dict()}, checkpoint)
    finally:
        if log_file is not None:
            log_file.close()
    seconds = time.perf_counter() - started
    summary = {
        "backbone": recipe.backbone, "steps": recipe.steps, "resumed_at": first,
        "first_loss": losses[0] if losses else None, "final_loss": losses[-1] if losses else None,
        "seconds": round(seconds, 1), "cpu_seconds": round(time.process_time() - cpu_started, 1),
        "render_seconds": round(rendered, 1),
        "threads": torch.get_num_threads(), "out": str(out),
    }
    write_weights(model, out, recipe, summary)
    return summary


def write_weights(model, out: str | Path, recipe: Recipe, summary: dict[str, Any]) -> Path:
    """Write ``model`` as fp16 safetensors under open_clip's key names (the layout
    :func:`vireid.models.weights.fetch_weights` writes), with a ``.sha256`` file beside
    it; the metadata holds the architecture config, the recipe and the run summary."""
    from safetensors.torch import save_file

    from vireid.models.factory import backbone_config
    from vireid.models.weights import to_open_clip_keys

    out = Path(out)
    tensors = {
        key: (value.half() if value.is_floating_point() else value).detach().contiguous().clone()
        for key, value in to_open_clip_keys(model.state_dict()).items()
    }
    metadata = {
        "format": FORMAT,
        "backbone": recipe.backbone,
        "pretrained": SYNTHETIC_TAG,
        "architecture": json.dumps(backbone_config(recipe.backbone), sort_keys=True),
        "image_size": json.dumps(list(recipe.image_size)),
        "quick_gelu": json.dumps(recipe.quick_gelu),
        "recipe": json.dumps(recipe.to_dict(), sort_keys=True),
        "summary": json.dumps({k: v for k, v in summary.items() if k != "out"}, sort_keys=True),
    }
    with atomic_path(out) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    write_sha256(out)
    return out


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of a weight file written by :func:`write_weights` (JSON values decoded)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weight file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
    except Exception as error:
        raise ValueError(f"cannot read safetensors file {path}: {error}") from error
    if raw.get("format") != FORMAT:
        raise ValueError(f"{path} was not written by `vireid clip pretrain` (no {FORMAT!r} "
                         "metadata); pass --backbone and --image-size for other CLIP files")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out

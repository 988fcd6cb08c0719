"""Zero-shot check of a CLIP on a held-out synthetic population, visible and infrared.

The population comes from the stream
:data:`~vireid.data.synthetic.people.TAG_CLIP_HELDOUT` (disjoint from the pretraining
people and from every benchmark); each identity has ``images_per_id`` visible and as
many infrared images, each with its own camera, pose and look. Three measures, each
for visible and infrared images separately and beside its chance level:

* **attribute queries** (:data:`~vireid.data.synthetic.captions.ATTRIBUTE_QUERIES`):
  rank every image by its similarity to the query text; average precision with the
  images of the identities the query describes as positives. Chance: the expected
  AP of a random ranking, the fraction of positives. Reported as the mean over the
  queries without colour words ("shape": garments, patterns, accessories, hair) and
  over the colour queries;
* **caption -> identity**: one caption per identity (every clause, colours named;
  and the same without colour words), ranked against each identity's mean image
  feature; Rank-1, Rank-5 and the mean reciprocal rank. Chance Rank-k: k / N;
* **infrared -> visible**: each infrared image ranked against the visible identities
  (mean features), Rank-1 (chance 1 / N): what a CLIP gives re-identification before
  any training.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from vireid.data.synthetic.captions import ATTRIBUTE_QUERIES, caption, describe
from vireid.data.synthetic.people import TAG_CLIP_HELDOUT, make_rng

from .data import Population, normalize, render_population

MODALITIES = ("visible", "infrared")


@torch.no_grad()
def _image_features(model, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    feats = [model.encode_image(normalize(images[i : i + batch_size]))
             for i in range(0, images.shape[0], batch_size)]
    return F.normalize(torch.cat(feats).float(), dim=-1)


@torch.no_grad()
def _text_features(model, texts: list[str]) -> torch.Tensor:
    return F.normalize(model.encode_text(model.tokenize(texts)).float(), dim=-1)


def average_precision(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """AP of the ranking by ``scores`` (descending) with ``positive`` (bool) targets."""
    order = torch.argsort(scores, descending=True, stable=True)
    hits = positive[order].float()
    if hits.sum() == 0:
        return float("nan")
    precision = hits.cumsum(0) / torch.arange(1, hits.numel() + 1)
    return float((precision * hits).sum() / hits.sum())


def _ranks(similarity: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1-based rank of ``target[i]`` in row ``i`` of ``similarity``; ties rank the
    target last among its equals (a constant model scores no hit)."""
    correct = similarity.gather(1, target.view(-1, 1))
    return (similarity >= correct).sum(1)


def _rank_metrics(ranks: torch.Tensor, count: int) -> dict[str, float]:
    return {
        "rank1": float((ranks <= 1).float().mean()),
        "rank5": float((ranks <= 5).float().mean()),
        "mrr": float((1.0 / ranks.float()).mean()),
        "chance_rank1": 1.0 / count,
        "chance_rank5": min(5.0 / count, 1.0),
        "chance_mrr": float((1.0 / torch.arange(1, count + 1)).mean()),
    }


def zeroshot(
    model,
    *,
    seed: int = 0,
    num_ids: int = 200,
    images_per_id: int = 4,
    batch_size: int = 128,
    population: Population | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Zero-shot retrieval figures of ``model`` (a :class:`~vireid.models.clip.ClipModel`)."""
    if population is None:
        population = render_population(
            seed=seed, stream=TAG_CLIP_HELDOUT, num_ids=num_ids, images_per_id=images_per_id,
            image_size=tuple(model.visual.image_size), modalities=MODALITIES, progress=progress,
        )
    count = len(population.attrs)
    if count < 2:
        raise ValueError(f"the zero-shot check needs at least 2 identities, got {count}")
    model.eval()
    descriptions = [describe(a) for a in population.attrs]
    labels = population.labels
    feats = {m: _image_features(model, population.images[m], batch_size) for m in MODALITIES}
    centroids = {
        m: F.normalize(feats[m].view(count, population.images_per_id, -1).mean(1), dim=-1)
        for m in MODALITIES
    }
    query_feats = _text_features(model, [q.text for q in ATTRIBUTE_QUERIES])
    captions = {
        "caption": [caption(a, make_rng(seed, TAG_CLIP_HELDOUT, 77, i), None,
                            colour_prob=1.0, keep_prob=1.0)
                    for i, a in enumerate(population.attrs)],
        "caption_no_colour": [caption(a, make_rng(seed, TAG_CLIP_HELDOUT, 78, i), None,
                                      colour_prob=0.0, keep_prob=1.0)
                              for i, a in enumerate(population.attrs)],
    }
    caption_feats = {k: _text_features(model, v) for k, v in captions.items()}
    target = torch.arange(count)

    result: dict[str, Any] = {
        "population": {"seed": seed, "identities": count,
                       "images_per_id": population.images_per_id,
                       "image_size": list(model.visual.image_size)},
    }
    for m in MODALITIES:
        per_query: dict[str, dict[str, float]] = {}
        for q, qf in zip(ATTRIBUTE_QUERIES, query_feats):
            positive_ids = torch.tensor([q.matches(d) for d in descriptions])
            positive = positive_ids[labels]
            if positive.all() or not positive.any():
                continue  # AP says nothing when every image, or none, is a positive
            per_query[q.name] = {"ap": average_precision(feats[m] @ qf, positive),
                                 "chance": float(positive.float().mean()), "colour": q.colour}
        groups = {}
        for label, colour in (("shape", False), ("colour", True)):
            chosen = [v for v in per_query.values() if v["colour"] == colour]
            groups[label] = {
                "mAP": sum(v["ap"] for v in chosen) / len(chosen) if chosen else float("nan"),
                "chance": sum(v["chance"] for v in chosen) / len(chosen) if chosen else float("nan"),
                "queries": len(chosen),
            }
        out: dict[str, Any] = {"attributes": groups, "per_query": per_query}
        for key, tf in caption_feats.items():
            out[f"{key}_to_identity"] = _rank_metrics(_ranks(tf @ centroids[m].t(), target), count)
        result[m] = out
    ir_to_vis = _ranks(feats["infrared"] @ centroids["visible"].t(), labels)
    result["infrared_to_visible"] = _rank_metrics(ir_to_vis, count)
    return result


def format_zeroshot(result: dict[str, Any]) -> str:
    """A plain-text table of :func:`zeroshot`'s result."""
    pop = result["population"]
    lines = [f"zero-shot on {pop['identities']} held-out identities x {pop['images_per_id']} "
             f"images per modality (seed {pop['seed']}, {pop['image_size'][0]}x"
             f"{pop['image_size'][1]})",
             f"{'':34s}{'visible':>10s}{'infrared':>10s}{'chance':>10s}"]

    def row(label: str, get, chance) -> None:
        values = "".join(f"{100 * get(result[m]):10.1f}" for m in MODALITIES)
        lines.append(f"{label:34s}{values}{100 * chance:10.1f}")

    for group in ("shape", "colour"):
        row(f"attribute queries ({group}) mAP", lambda r, g=group: r["attributes"][g]["mAP"],
            result["visible"]["attributes"][group]["chance"])
    for key, label in (("caption", "caption"), ("caption_no_colour", "caption, no colour")):
        for metric in ("rank1", "rank5"):
            row(f"{label} -> identity R{metric[-1]}",
                lambda r, k=key, mt=metric: r[f"{k}_to_identity"][mt],
                result["visible"][f"{key}_to_identity"][f"chance_{metric}"])
    cross = result["infrared_to_visible"]
    lines.append(f"{'infrared -> visible identity R1':34s}{'':10s}{100 * cross['rank1']:10.1f}"
                 f"{100 * cross['chance_rank1']:10.1f}")
    return "\n".join(lines)


def load_clip(
    weights: str | None = None,
    backbone: str | None = None,
    image_size: tuple[int, int] | None = None,
):
    """A CLIP for :func:`zeroshot`: from ``weights`` (a file of ``vireid clip pretrain``,
    whose metadata names the backbone and size; other CLIP files need ``backbone``), or
    from ``backbone``'s shipped ``synthetic`` weights. Both go through
    :func:`~vireid.models.clip.build_clip` and its weight loader."""
    from vireid.models.factory import build_clip
    from vireid.models.synthetic import PRETRAIN_IMAGE_SIZE, SYNTHETIC_TAG

    from .train import FORMAT, read_metadata

    if weights is None and backbone is None:
        raise ValueError("give --weights FILE or --backbone NAME (its shipped synthetic weights)")
    quick_gelu = True
    if weights is not None:
        meta: dict = {}
        if backbone is None:
            meta = read_metadata(weights)
        elif str(weights).endswith(".safetensors"):
            try:
                meta = read_metadata(weights)
            except ValueError as error:
                if FORMAT in str(error):
                    meta = {}
                else:
                    raise
        backbone = backbone or meta["backbone"]
        image_size = image_size or tuple(meta.get("image_size", PRETRAIN_IMAGE_SIZE))
        quick_gelu = bool(meta.get("quick_gelu", True))
        return build_clip(backbone, image_size, weights=weights, quick_gelu=quick_gelu)
    return build_clip(backbone, image_size or PRETRAIN_IMAGE_SIZE, pretrained=SYNTHETIC_TAG)

"""Ranked-list pictures and a self-contained HTML report of a trained model.

:func:`write_report` evaluates a model on its dataset's protocol and writes, into
one folder:

- ``report.html``: one file with no external resource: the run's description, the
  metrics table (mean and standard deviation over trials, per setting), the CMC
  curves as inline SVG, and for a sample of queries of each setting the query
  beside its top-K gallery items (green border: same identity, red: another),
  with the rank of the first correct match. Images are embedded as base64 JPEGs;
  every text that comes from data (file names, labels, names) is HTML-escaped.
- ``ranked_<setting>.png``: the same ranked lists as one picture per setting.
- ``metrics.json``: the evaluation summary.

Ranked lists follow the protocol: gallery items the protocol removes for a query
(e.g. SYSU-MM01 camera 2 for camera-3 queries) are not shown and not counted.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from vireid.data.io import ImageReadError, load_image
from vireid.data.protocols import get_rules, keep_pairs
from vireid.data.types import EvalSplit, Modality, ReIDData, Sample
from vireid.evaluation.evaluator import REPORTED_RANKS, select_splits, split_features, summarize
from vireid.evaluation.metrics import Metrics, compute_metrics

__all__ = ["RankedQuery", "cmc_svg", "ranked_grid", "ranked_lists", "write_report"]

RIGHT = (22, 163, 74)
"""Border colour of a gallery item of the query's identity (green)."""
WRONG = (220, 38, 38)
"""Border colour of a gallery item of another identity (red)."""
QUERY = (37, 99, 235)
"""Border colour of the query (blue)."""

TILE = (128, 64)
"""(height, width) of an image in the pictures (person crops are about 2:1)."""
BORDER = 4
LABEL = 14
"""Height of the text line under each tile in the PNG grids."""
SERIES = ("#2563eb", "#db2777", "#ea580c", "#0d9488", "#7c3aed", "#65a30d", "#475569")
"""Line colours of the CMC curves."""


@dataclass
class RankedQuery:
    """A query and its top-K gallery items after the protocol's keep rule."""

    query: Sample
    gallery: list[Sample]
    distances: list[float]
    correct: list[bool]
    first_correct: int | None
    """1-based rank of the first gallery item of the query's identity (None: none kept)."""
    kept: int
    """Gallery items the protocol keeps for this query."""


# --------------------------------------------------------------------------- ranking


def ranked_lists(distances: torch.Tensor, split: EvalSplit, queries: Sequence[int],
                 topk: int = 10) -> list[RankedQuery]:
    """Top-``topk`` of each query row ``queries`` of a (Q, G) distance matrix of ``split``."""
    rules = get_rules(split.protocol)
    g_ids = np.array([s.pid for s in split.gallery])
    g_cams = np.array([s.camera for s in split.gallery])
    out = []
    for qi in queries:
        q = split.query[qi]
        d = distances[qi].detach().cpu().double().numpy().copy()
        keep = keep_pairs(rules.exclusion, np.array(q.pid), np.array(q.camera), g_ids, g_cams)
        if keep is not None:
            d[~np.broadcast_to(keep, d.shape)] = np.inf
        order = np.argsort(d, kind="stable")
        kept = int(np.isfinite(d).sum())
        order = order[:kept]
        hits = np.flatnonzero(g_ids[order] == q.pid)
        top = order[:topk]
        out.append(RankedQuery(
            q, [split.gallery[i] for i in top], [float(d[i]) for i in top],
            [bool(g_ids[i] == q.pid) for i in top],
            int(hits[0]) + 1 if len(hits) else None, kept,
        ))
    return out


# --------------------------------------------------------------------------- pictures


def _first_frame(sample: Sample) -> str:
    return sample.frames[len(sample.frames) // 2] if sample.is_tracklet else sample.frames[0]


def thumbnail(sample: Sample, size: tuple[int, int] = TILE) -> Image.Image:
    """The sample's image (a tracklet: its middle frame) fitted into ``size`` (H, W) on grey;
    an unreadable file gives a grey tile crossed out."""
    height, width = size
    tile = Image.new("RGB", (width, height), (200, 200, 200))
    try:
        image = load_image(_first_frame(sample))
    except (ImageReadError, OSError):
        draw = ImageDraw.Draw(tile)
        draw.line([(0, 0), (width, height)], fill=(90, 90, 90), width=2)
        draw.line([(0, height), (width, 0)], fill=(90, 90, 90), width=2)
        return tile
    scale = min(width / image.width, height / image.height)
    new = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    image = image.resize(new, Image.BICUBIC)
    tile.paste(image, ((width - new[0]) // 2, (height - new[1]) // 2))
    return tile


def _bordered(image: Image.Image, colour: tuple[int, int, int]) -> Image.Image:
    out = Image.new("RGB", (image.width + 2 * BORDER, image.height + 2 * BORDER), colour)
    out.paste(image, (BORDER, BORDER))
    return out


def _font() -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=11)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def ranked_grid(rows: Sequence[RankedQuery], topk: int) -> Image.Image:
    """One picture: a row per query (blue border) followed by its top-K (green/red)."""
    font = _font()
    tile_w, tile_h = TILE[1] + 2 * BORDER, TILE[0] + 2 * BORDER
    gap = 12
    cell_w = tile_w + 4
    width = cell_w + gap + cell_w * topk + 4
    row_h = tile_h + 2 * LABEL + 6
    canvas = Image.new("RGB", (width, max(1, row_h * len(rows))), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(rows):
        y = r * row_h
        canvas.paste(_bordered(thumbnail(row.query), QUERY), (2, y))
        draw.text((2, y + tile_h + 1), f"q id {row.query.pid}", fill=(0, 0, 0), font=font)
        first = "none" if row.first_correct is None else str(row.first_correct)
        draw.text((2, y + tile_h + 1 + LABEL), f"1st hit {first}", fill=(0, 0, 0), font=font)
        for k, (sample, ok) in enumerate(zip(row.gallery, row.correct)):
            x = cell_w + gap + k * cell_w
            canvas.paste(_bordered(thumbnail(sample), RIGHT if ok else WRONG), (x, y))
            draw.text((x, y + tile_h + 1), f"{k + 1}: id {sample.pid}", fill=(0, 0, 0), font=font)
    return canvas


def _data_uri(image: Image.Image, fmt: str = "JPEG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, quality=88)
    mime = "image/jpeg" if fmt == "JPEG" else "image/png"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def cmc_svg(curves: dict[str, Sequence[float]], width: int = 560, height: int = 320) -> str:
    """CMC curves (fractions per rank, rank 1 first) as an inline SVG element."""
    left, right, top, bottom = 48, 16, 16, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    longest = max((len(c) for c in curves.values()), default=1)
    def x(rank: int) -> float:
        return left + (rank - 1) / max(1, longest - 1) * plot_w
    def y(value: float) -> float:
        return top + (1 - value) * plot_h
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="CMC curves">',
             f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>']
    for tick in range(0, 101, 20):
        ty = y(tick / 100)
        parts.append(f'<line x1="{left}" y1="{ty:.1f}" x2="{left + plot_w}" y2="{ty:.1f}" '
                     'stroke="#e5e7eb"/>')
        parts.append(f'<text x="{left - 6}" y="{ty + 4:.1f}" font-size="11" text-anchor="end" '
                     f'fill="#374151">{tick}%</text>')
    for rank in sorted({1, 5, 10, 15, 20, longest} & set(range(1, longest + 1))):
        tx = x(rank)
        parts.append(f'<line x1="{tx:.1f}" y1="{top + plot_h}" x2="{tx:.1f}" '
                     f'y2="{top + plot_h + 4}" stroke="#374151"/>')
        parts.append(f'<text x="{tx:.1f}" y="{top + plot_h + 16}" font-size="11" '
                     f'text-anchor="middle" fill="#374151">{rank}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" font-size="12" '
                 'text-anchor="middle" fill="#111827">rank</text>')
    parts.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" '
                 'stroke="#9ca3af"/>')
    for n, (name, curve) in enumerate(curves.items()):
        colour = SERIES[n % len(SERIES)]
        points = " ".join(f"{x(r):.1f},{y(float(v)):.1f}" for r, v in enumerate(curve, start=1))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" '
                     'stroke-width="2.5"/>')
        for r, v in enumerate(curve, start=1):
            parts.append(f'<circle cx="{x(r):.1f}" cy="{y(float(v)):.1f}" r="2.5" '
                         f'fill="{colour}"/>')
        ly = top + plot_h - 14 - 16 * (len(curves) - 1 - n)
        parts.append(f'<rect x="{left + plot_w - 190}" y="{ly - 9}" width="12" height="4" '
                     f'fill="{colour}"/>')
        parts.append(f'<text x="{left + plot_w - 172}" y="{ly - 3}" font-size="12" '
                     f'fill="#111827">{html.escape(str(name))}</text>')
    parts.append("</svg>")
    return "".join(parts)


# --------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#111827;
background:#f9fafb}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px}h3{font-size:15px;margin:18px 0 6px}
table{border-collapse:collapse;background:#fff}
td,th{border:1px solid #d1d5db;padding:4px 10px;text-align:right;font-size:13px}
th{background:#f3f4f6}td.l,th.l{text-align:left}
.meta td{text-align:left}.note{color:#4b5563;font-size:13px}
.row{display:flex;align-items:flex-start;gap:6px;margin:6px 0;padding:6px;background:#fff;
border:1px solid #e5e7eb}
.row figure{margin:0;text-align:center;font-size:11px;width:72px;overflow-wrap:anywhere}
.row figure.q{width:96px}.row img{display:block;border:4px solid;width:64px;height:128px;margin:auto}
.q img{border-color:#2563eb}.ok img{border-color:#16a34a}.bad img{border-color:#dc2626}
.sep{width:10px;border-left:2px dashed #9ca3af;align-self:stretch}
.hit{font-weight:600}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _describe(sample: Sample) -> str:
    path = sample.path
    if isinstance(path, tuple):
        return f"{path[0]} ... ({len(path)} frames)" if path else "(empty tracklet)"
    return str(path)


def _figure(sample: Sample, css: str, caption: str) -> str:
    uri = _data_uri(thumbnail(sample))
    title = _describe(sample)
    name = Path(_first_frame(sample)).name
    return (f'<figure class="{css}"><img src="{uri}" alt="{_e(name)}" title="{_e(title)}">'
            f"<figcaption>{caption}<br>{_e(name)}</figcaption></figure>")


def _row_html(row: RankedQuery) -> str:
    mod = Modality(int(row.query.modality)).name.lower()
    first = ("no correct match kept" if row.first_correct is None
             else f"first correct: rank {row.first_correct}")
    parts = ['<div class="row">',
             _figure(row.query, "q", f"query id {_e(row.query.pid)}<br>cam {_e(row.query.camera)}"
                     f" {_e(mod)}<br><span class=\"hit\">{_e(first)}</span>"),
             '<div class="sep"></div>']
    for k, (sample, dist, ok) in enumerate(zip(row.gallery, row.distances, row.correct), start=1):
        parts.append(_figure(sample, "ok" if ok else "bad",
                             f"#{k} id {_e(sample.pid)}<br>cam {_e(sample.camera)} "
                             f"d={dist:.3f}"))
    parts.append("</div>")
    return "".join(parts)


def _metrics_table(summary: dict) -> str:
    cols = [f"R{k}" for k in REPORTED_RANKS] + ["mAP", "mINP"]
    rows = ['<table><tr><th class="l">setting</th><th>trials</th>'
            + "".join(f"<th>{c}</th>" for c in cols) + "</tr>"]
    for key, group in summary.items():
        if key == "splits":
            continue
        mean, std = group["mean"], group["std"]
        cells = "".join(
            f"<td>{100 * mean[c]:.2f}"
            + (f" &plusmn; {100 * std[c]:.2f}" if len(group["trials"]) > 1 else "") + "</td>"
            for c in cols)
        rows.append(f'<tr><td class="l">{_e(key)}</td><td>{len(group["trials"])}</td>{cells}</tr>')
    rows.append("</table>")
    return "".join(rows)


def _slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()
    return slug or "split"


_TRIAL = re.compile(r"/?trial\d+$")


def _group_key(split: EvalSplit) -> str:
    setting = _TRIAL.sub("", split.name)
    return setting if split.direction in setting else f"{setting} {split.direction}".strip()


def write_report(
    model,
    data: ReIDData,
    out_dir: str | Path,
    *,
    splits: Sequence[str] | None = None,
    num_queries: int = 8,
    topk: int = 10,
    rerank: Any = None,
    seed: int = 0,
    batch_size: int | None = None,
    title: str | None = None,
) -> Path:
    """Evaluate ``model`` (a :class:`~vireid.retrieval.model.ReIDModel`) on ``data``'s
    splits (or those named in ``splits``) and write the report; returns the HTML path.

    ``num_queries`` queries per setting (drawn with ``seed`` from its first trial)
    are shown with their ``topk`` gallery items. ``rerank``: None/False, True or
    settings with ``k1``, ``k2``, ``lambda_value``.
    """
    from vireid.evaluation.rerank import rerank_distances

    if topk < 1 or num_queries < 0:
        raise ValueError(f"topk must be >= 1 and num_queries >= 0, got {topk}, {num_queries}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chosen = select_splits(data.splits, splits)
    pairs = split_features(lambda s: model.extract_samples(s, batch_size), chosen)
    use_rerank = rerank is not None and rerank is not False

    results: list[tuple[str, str, int, Metrics]] = []
    firsts: dict[str, tuple[EvalSplit, torch.Tensor]] = {}
    for split, (qf, gf) in zip(chosen, pairs):
        dist = rerank_distances(qf, gf, rerank) if use_rerank else 1.0 - qf @ gf.T
        metrics = compute_metrics(dist, [s.pid for s in split.query],
                                  [s.pid for s in split.gallery],
                                  [s.camera for s in split.query],
                                  [s.camera for s in split.gallery], split.protocol)
        results.append((split.name, split.direction, split.trial, metrics))
        firsts.setdefault(_group_key(split), (split, dist))
    summary = summarize(results)
    curves: dict[str, list[float]] = {}
    for (*_, metrics), split in zip(results, chosen):
        curves.setdefault(_group_key(split), []).append(metrics.cmc)
    mean_curves = {k: np.mean(np.stack(v), axis=0).tolist() for k, v in curves.items()}

    sections = []
    rng = random.Random(seed)
    for key, (split, dist) in firsts.items():
        picks = sorted(rng.sample(range(len(split.query)), min(num_queries, len(split.query))))
        rows = ranked_lists(dist, split, picks, topk)
        if not rows:
            continue
        png = f"ranked_{_slug(key)}.png"
        ranked_grid(rows, topk).save(out / png)
        found = [r.first_correct for r in rows if r.first_correct is not None]
        sections.append(
            f"<h3>{_e(key)} <span class=\"note\">({_e(split.name)}; {len(rows)} of "
            f"{len(split.query)} queries, drawn with seed {seed}; picture: "
            f'<a href="{_e(png)}">{_e(png)}</a>)</span></h3>'
            f'<p class="note">first correct match within the top {topk} for '
            f"{sum(1 for f in found if f <= topk)} of {len(rows)} shown queries</p>"
            + "".join(_row_html(r) for r in rows)
        )

    cfg = model.config
    rerank_text = "off"
    if use_rerank:
        get = (rerank.get if isinstance(rerank, dict)
               else (lambda k, d: getattr(rerank, k, d)) if rerank is not True else (lambda k, d: d))
        rerank_text = (f"k-reciprocal (k1={get('k1', 20)}, k2={get('k2', 6)}, "
                       f"lambda={get('lambda_value', 0.3)})")
    from vireid import __version__

    meta_rows = [
        ("checkpoint", str(model.checkpoint)), ("method", cfg.method.name),
        ("backbone", cfg.model.backbone), ("dataset", f"{data.name} ({data.root})"),
        ("input size", "x".join(str(v) for v in cfg.data.image_size)),
        ("samples", "tracklets" if model.is_video else "images"),
        ("re-ranking", rerank_text), ("distance", "cosine"),
        ("generated", datetime.datetime.now().isoformat(timespec="seconds")),
        ("vireid", __version__),
    ]
    meta_html = "".join(f'<tr><th class="l">{_e(k)}</th><td>{_e(v)}</td></tr>'
                        for k, v in meta_rows)
    heading = title or f"vireid report: {cfg.name}"
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(heading)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_e(heading)}</h1>"
        f'<table class="meta">{meta_html}</table>'
        "<h2>Metrics</h2>"
        '<p class="note">Percent; mean &plusmn; standard deviation over trials, under the '
        "dataset's evaluation protocol.</p>"
        f"{_metrics_table(summary)}"
        "<h2>CMC</h2>"
        f"{cmc_svg(mean_curves)}"
        "<h2>Ranked lists</h2>"
        '<p class="note">Query (blue) beside its top gallery items: green border = same '
        "identity, red = another identity; d = distance. Items the protocol removes for "
        "a query are not shown.</p>"
        + "".join(sections)
        + "</body></html>"
    )
    (out / "metrics.json").write_text(json.dumps(summary, indent=1, default=float))
    target = out / "report.html"
    target.write_text(page, encoding="utf-8")
    return target

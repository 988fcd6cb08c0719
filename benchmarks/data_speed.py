"""Data pipeline speed: decoded + augmented frames per second for ONE worker.

Writes its own JPEGs (smooth random pictures with pixel noise, 288x144 by default,
quality 90) into a temporary folder, then times with ``torch.set_num_threads(1)``
(a DataLoader worker runs single-threaded):

- ``decode_pil``: ``PIL.Image.open(...).convert("RGB")`` + tensor conversion;
- ``decode``: :func:`vireid.data.io.read_image_tensor` (the pipeline's decoder);
- ``augment_<recipe>``: the training transforms alone on decoded uint8 frames;
- ``end_to_end_<recipe>``: ``ImageDataset[i]`` = read + decode + training transforms;
- ``tracklet_video``: ``TrackletDataset[i]`` with RRS, T frames, ``video`` recipe,
  counted in frames.

Each figure is the median of ``--repeats`` passes over all files. The headline
``frames_per_s`` is ``end_to_end`` for ``--recipe`` (target: >= 1,000 per worker).
Prints one JSON object.

    python benchmarks/data_speed.py [--pipeline csdn_infrared] [--files 256] [--source 288x144]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time

import numpy as np
import PIL
import torch
import torchvision
from PIL import Image

from vireid.data.io import read_image_tensor
from vireid.data.loaders import ImageDataset, TrackletDataset
from vireid.data.transforms import build_transforms
from vireid.data.types import Modality, Sample

TARGET_FRAMES_PER_S = 1000


def _write_jpegs(folder: str, count: int, height: int, width: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        coarse = rng.integers(0, 256, (max(height // 16, 2), max(width // 16, 2), 3), dtype=np.uint8)
        picture = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR))
        noisy = picture.astype(np.int16) + rng.integers(-12, 13, picture.shape)
        path = os.path.join(folder, f"{i:05d}.jpg")
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def _rate(fn, items, repeats: int, per_item: int = 1) -> float:
    """Median items/s (times ``per_item``) over ``repeats`` passes, after one warm-up pass."""
    for item in items[: max(1, len(items) // 8)]:
        fn(item)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for item in items:
            fn(item)
        rates.append(len(items) * per_item / (time.perf_counter() - start))
    return statistics.median(rates)


def _decode_pil(path: str) -> torch.Tensor:
    with Image.open(path) as image:
        array = np.array(image.convert("RGB"))
    return torch.from_numpy(array).permute(2, 0, 1)


PIPELINES = {  # the training pipelines of the shipped recipes
    "clipreid": {"recipe": "clipreid"},
    "csdn_visible": {"recipe": "csdn"},
    "csdn_visible_exchange": {"recipe": "csdn", "channel": "exchange"},
    "csdn_infrared": {"recipe": "csdn", "channel": "adaptive_gray"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", default="csdn_infrared", choices=sorted(PIPELINES),
                        help="the pipeline of the headline figure")
    parser.add_argument("--files", type=int, default=256)
    parser.add_argument("--source", default="288x144", help="HxW of the generated JPEGs")
    parser.add_argument("--size", default="288x144", help="HxW of the network input")
    parser.add_argument("--seq-len", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    src_h, src_w = (int(v) for v in args.source.lower().split("x"))
    size = tuple(int(v) for v in args.size.lower().split("x"))

    stages: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        paths = _write_jpegs(folder, args.files, src_h, src_w)
        stages["decode_pil"] = _rate(_decode_pil, paths, args.repeats)
        stages["decode"] = _rate(read_image_tensor, paths, args.repeats)
        decoded = [read_image_tensor(p) for p in paths]
        rng = random.Random(0)
        for recipe, options in PIPELINES.items():
            transform = build_transforms(True, size, **options)
            stages[f"augment_{recipe}"] = _rate(lambda x, t=transform: t(x, rng), decoded, args.repeats)
            samples = [Sample(p, 0, 1, Modality.VISIBLE, label=0) for p in paths]
            dataset = ImageDataset(samples, transform, seed=0)
            stages[f"end_to_end_{recipe}"] = _rate(dataset.__getitem__, range(len(dataset)), args.repeats)
        frames_per_tracklet = 24  # HITSZ-VCM average tracklet length (docs/datasets.md#hitsz-vcm)
        tracklets = [
            Sample(tuple(paths[i : i + frames_per_tracklet]), 0, 1, Modality.INFRARED, label=0)
            for i in range(0, len(paths) - frames_per_tracklet + 1, frames_per_tracklet)
        ]
        video = TrackletDataset(
            tracklets, build_transforms(True, size, recipe="clipreid"), seq_len=args.seq_len,
            frame_sampler="rrs", seed=0,
        )
        stages["tracklet_video"] = _rate(
            video.__getitem__, range(len(video)), args.repeats, per_item=args.seq_len
        )

    headline = stages[f"end_to_end_{args.pipeline}"]
    print(json.dumps({
        "benchmark": "data_speed",
        "frames_per_s": round(headline, 1),
        "target_frames_per_s": TARGET_FRAMES_PER_S,
        "meets_target": headline >= TARGET_FRAMES_PER_S,
        "stages_frames_per_s": {k: round(v, 1) for k, v in stages.items()},
        "settings": {
            "pipeline": args.pipeline,
            "files": args.files,
            "source_hw": [src_h, src_w],
            "input_hw": list(size),
            "seq_len": args.seq_len,
            "repeats": args.repeats,
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "pillow": PIL.__version__,
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
        },
    }))


if __name__ == "__main__":
    main()

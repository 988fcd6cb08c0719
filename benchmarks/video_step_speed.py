"""Training-step cost of the video methods on one batch: CLIP-ReID (video), X-ReID,
LSMRL and LSMRL without STFL; and STFL alone against the plain frame encoder.

Every method runs its real training step (forward, losses, backward, Adam step)
on the same batch: P identities x K clips per modality of T frames, random
pixels, labels laid out as the cross-modal sampler lays them. Reported per
method: parameters (all / trained in the step), median step time, model FLOPs
per step (``FlopCounterMode``). The STFL rows time the image encoder alone
(embedding + blocks, forward and backward) with and without STFL. Prints one
JSON object.

    python benchmarks/video_step_speed.py --threads 1                 # tiny ViT, CPU
    python benchmarks/video_step_speed.py --size vitb16 --amp         # ViT-B/16, 288x144 (GPU)
    python benchmarks/video_step_speed.py --size vitb16 --P 1 --K 1 --methods  # STFL, CPU
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode
from train_speed import (  # benchmarks/, the folder of this script
    device_from_args,
    step_parser,
    training_step,
)

from vireid.config import load_config
from vireid.data.synthetic import synthesize
from vireid.methods import build_method
from vireid.models.temporal import spatial_temporal_blocks
from vireid.runner import load_data

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SIZES = {
    "tiny": {"backbone": "tiny-vit", "image_size": [64, 32], "patch_stride": 8, "P": 4, "K": 2,
             "T": 6, "layout": [0, 1]},
    "vitb16": {"backbone": "ViT-B-16", "image_size": [288, 144], "patch_stride": None, "P": 4,
               "K": 4, "T": 6, "layout": [6, 3]},
}
"""P x K clips per modality of T frames (LSMRL's 4 x 4, T = 6 at full size); ``layout``:
STFL's basic and grouped block counts (the rest: patch shift)."""

METHODS = {
    "clipreid": ("examples/tiny_synthetic.yaml", "image", []),
    "xreid": ("examples/xreid_tiny.yaml", "main", []),
    "lsmrl": ("examples/lsmrl_tiny.yaml", "main", []),
    "lsmrl_no_stfl": ("examples/lsmrl_tiny.yaml", "main", ["method.stfl=false"]),
}


def _batch(size: dict, device: torch.device) -> dict:
    P, K, T = size["P"], size["K"], size["T"]
    n = 2 * P * K
    return {
        "image": torch.randn(n, T, 3, *size["image_size"], device=device),
        "label": torch.arange(P).repeat_interleave(K).repeat(2).to(device),
        "camera": torch.ones(n, dtype=torch.long, device=device),
        "modality": torch.cat([torch.zeros(P * K), torch.ones(P * K)]).long().to(device),
    }


def _timed(fn, warmup: int, steps: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _build(name: str, size: dict, root: Path, device: torch.device):
    config, stage_name, extra = METHODS[name]
    basic, grouped = size["layout"]
    overrides = [
        f"data.root={root}", f"model.backbone={size['backbone']}",
        f"data.image_size={size['image_size']}", f"data.video.num_frames={size['T']}",
        "data.name=vcm", "data.workers=0", "data.options={}", "model.frozen=[]",
        f"data.identities_per_batch={size['P']}", f"data.instances_per_identity={size['K']}",
    ]
    if size["patch_stride"]:
        overrides.append(f"model.patch_stride={size['patch_stride']}")
    if name.startswith("lsmrl"):
        overrides += [f"method.basic_blocks={basic}", f"method.grouped_blocks={grouped}"]
    cfg = load_config(CONFIGS / config, overrides + extra)
    method = build_method(cfg, load_data(cfg)).to(device)
    stage = next(s for s in method.stages() if s.name == stage_name)
    return method, stage


def measure_method(name: str, size: dict, args, root: Path, device: torch.device) -> dict:
    method, stage = _build(name, size, root, device)
    step, params = training_step(method, stage, _batch(size, device), args.amp, device)

    with FlopCounterMode(display=False) as counter:
        step()
    return {
        "parameters": sum(p.numel() for p in method.parameters()),
        "trained_parameters": sum(p.numel() for p in params),
        "step_s": round(_timed(step, args.warmup, args.steps, device), 4),
        "gflop_per_step": round(counter.get_total_flops() / 1e9, 2),
    }


def measure_stfl(size: dict, args, root: Path, device: torch.device) -> dict:
    method, _ = _build("lsmrl", size, root, device)
    visual = method.clip.visual.train()
    clips = _batch(size, device)["image"]
    frames, T = clips.flatten(0, 1), clips.shape[1]
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp)

    def plain():
        with amp:
            x = visual.embed(frames)
            for block in visual.blocks:
                x = block(x)
        x.float().square().mean().backward()

    def stfl():
        with amp:
            x = spatial_temporal_blocks(visual.blocks, visual.embed(frames), T, method.layout)
        x.float().square().mean().backward()

    out = {"frames": frames.shape[0], "new_parameters": 0}
    for name, fn in (("plain", plain), ("stfl", stfl)):
        with FlopCounterMode(display=False) as counter:
            fn()
        out[name] = {"step_s": round(_timed(fn, args.warmup, args.steps, device), 4),
                     "gflop": round(counter.get_total_flops() / 1e9, 2)}
    out["time_ratio"] = round(out["stfl"]["step_s"] / out["plain"]["step_s"], 3)
    return out


def main():
    parser = step_parser(__doc__, SIZES)
    parser.add_argument("--methods", nargs="*", choices=sorted(METHODS), default=list(METHODS),
                        help="methods to time (none: STFL alone)")
    parser.add_argument("--P", type=int, default=None, help="identities per batch (override)")
    parser.add_argument("--K", type=int, default=None, help="clips per identity and modality")
    args = parser.parse_args()
    device = device_from_args(args)
    torch.manual_seed(0)
    size = dict(SIZES[args.size])
    size.update({k: v for k, v in (("P", args.P), ("K", args.K)) if v})
    report = {"size": args.size, **size, "device": str(device), "amp": args.amp,
              "torch_threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "HITSZ-VCM"
        synthesize("vcm", root, num_ids=max(8, 3 * size["P"]), seed=0, image_size=(64, 32),
                   frames_per_tracklet=15)
        report["stfl_encoder"] = measure_stfl(size, args, root, device)
        report["methods"] = {name: measure_method(name, size, args, root, device)
                             for name in args.methods}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

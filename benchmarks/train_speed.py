"""Training speed of the CLIP-ReID baseline: time per step, peak memory, FLOP/s (MFU on GPU).

One image batch (P identities x K images per modality) and one video batch
(P x K clips of T frames per modality) go through the method's real training
step (forward, losses, backward, optimiser step) on synthetic people. FLOPs
are counted once with ``torch.utils.flop_counter.FlopCounterMode``; on a GPU
the model FLOPs utilisation is FLOP/s divided by the device's dense bf16 peak
(``--peak-tflops`` overrides the table). Prints one JSON object.

    python benchmarks/train_speed.py                       # tiny model, CPU
    python benchmarks/train_speed.py --size vitb16 --amp   # ViT-B/16 at 288x144 (GPU)
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from vireid.config import load_config
from vireid.data.synthetic import synthesize
from vireid.methods import build_method
from vireid.runner import load_data

SIZES = {
    "tiny": {"backbone": "tiny-vit", "image_size": [128, 64], "P": 8, "K": 4, "T": 4},
    "vitb16": {"backbone": "ViT-B-16", "image_size": [288, 144], "P": 8, "K": 4, "T": 10},
}
"""Image batch: P x K per modality (CLIP-ReID/CSDN: 8 x 4); video: P x 2 clips of T frames."""

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}
"""Dense bf16 tensor-core peaks from the vendors' data sheets (no sparsity)."""

CONFIG = Path(__file__).resolve().parents[1] / "src" / "vireid" / "demo.yaml"


def _peak_flops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_BF16_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    return None


def _batch(size: dict, video: bool, device: torch.device) -> dict:
    P, K = size["P"], (2 if video else size["K"])
    n = 2 * P * K
    shape = (n, size["T"], 3, *size["image_size"]) if video else (n, 3, *size["image_size"])
    labels = torch.arange(P).repeat_interleave(K).repeat(2)
    return {
        "image": torch.randn(shape, device=device),
        "label": labels.to(device),
        "camera": torch.ones(n, dtype=torch.long, device=device),
        "modality": torch.cat([torch.zeros(P * K), torch.ones(P * K)]).long().to(device),
    }


def step_parser(doc: str, sizes: dict) -> argparse.ArgumentParser:
    """The options every training-step benchmark takes."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--size", choices=sorted(sizes), default="tiny")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return parser


def device_from_args(args) -> torch.device:
    """Applies ``--threads`` and resolves ``--device`` (auto: CUDA when present)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(args.device)


def training_step(method, stage, batch: dict, amp: bool, device: torch.device):
    """``(step, params)``: one optimiser step of ``stage`` on ``batch`` (forward, losses,
    backward, Adam), after the engine's stage start (only the stage's parameters train,
    ``setup``, the first epoch's start, train mode)."""
    if stage.setup is not None:
        stage.setup()
    params = [p for g in stage.param_groups() for p in g.params]
    trained = {id(p) for p in params}
    for p in method.parameters():
        p.requires_grad_(id(p) in trained)
    if stage.on_epoch_start is not None:
        stage.on_epoch_start(0)
    method.train()
    optimizer = torch.optim.Adam(params, lr=1e-6)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)

    def step():
        with autocast:
            loss = stage.step(batch)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step, params


def measure(layout: str, size: dict, args, device: torch.device, workdir: Path) -> dict:
    root = workdir / layout
    options = {"frames_per_tracklet": 15} if layout == "vcm" else {"images_per_camera": 2}
    synthesize(layout, root, num_ids=3 * size["P"], seed=0, image_size=(64, 32), **options)
    name = "sysu" if layout == "sysu" else "vcm"
    cfg = load_config(CONFIG, [
        f"data.name={name}", f"data.root={root}", f"model.backbone={size['backbone']}",
        f"data.image_size={size['image_size']}", "data.workers=0", "data.options={}",
    ])
    data = load_data(cfg)
    method = build_method(cfg, data).to(device)
    stage = method.stages()[1]  # the image-encoder stage: the expensive one
    batch = _batch(size, video=layout == "vcm", device=device)
    step, _ = training_step(method, stage, batch, args.amp, device)
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = (time.perf_counter() - start) / args.steps
    frames = batch["image"].shape[0] * (batch["image"].shape[1] if batch["image"].ndim == 5 else 1)
    out = {
        "batch_shape": list(batch["image"].shape),
        "step_s": round(seconds, 4),
        "frames_per_s": round(frames / seconds, 1),
        "model_gflop_per_step": round(flops / 1e9, 2),
        "achieved_tflops": round(flops / seconds / 1e12, 4),
    }
    if device.type == "cuda":
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    else:
        out["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)
    peak = _peak_flops(device, args.peak_tflops)
    if peak:
        out["mfu"] = round(flops / seconds / peak, 4)
    return out


def main():
    parser = step_parser(__doc__, SIZES)
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak, for MFU")
    args = parser.parse_args()
    device = device_from_args(args)
    size = SIZES[args.size]
    report = {"size": args.size, **size, "device": str(device), "amp": args.amp,
              "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        report["device_name"] = torch.cuda.get_device_name(device)
    with tempfile.TemporaryDirectory() as tmp:
        report["image"] = measure("sysu", size, args, device, Path(tmp))
        report["video"] = measure("vcm", size, args, device, Path(tmp))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

"""ONNX export of a trained model's encoder, with a parity check in onnxruntime.

The exported graph maps preprocessed input to the L2-normalised feature that
:meth:`~vireid.retrieval.model.ReIDModel.extract` returns:

- image models: ``image`` (B, 3, H, W) -> ``features`` (B, F);
- video models: ``clip`` (B, T, 3, H, W) -> ``features`` (B, F), frames averaged as
  in the method; B and T are dynamic (a one-frame clip embeds a single frame),
  except for methods whose graph depends on T (LSMRL's frame groups): there T is
  the test clip length, written in ``vireid.input``.

Input is the resized image scaled to [0, 1] and normalised with the model's mean
and std; both, and the input size, are written into the ONNX metadata
(``vireid.mean``, ``vireid.std``, ``vireid.image_size``).

Needs the optional extra ``vireid[onnx]`` (onnx + onnxruntime), imported only here.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vireid.data.types import Modality

__all__ = ["PARITY_TOLERANCE", "ExportError", "ExportReport", "check_onnx", "export_onnx"]

PARITY_TOLERANCE = 1e-4
"""Largest accepted absolute difference between onnxruntime and PyTorch features."""

DEFAULT_OPSET = 17
"""ONNX opset of the export (17 has LayerNormalization as one operator)."""


class ExportError(ValueError):
    """An export that cannot be done or that fails its parity check."""


def supported_opsets() -> range:
    """Opsets this torch's ONNX exporter writes (and the installed onnx reads, when known)."""
    try:
        from torch.onnx._constants import ONNX_MAX_OPSET, ONNX_MIN_OPSET
    except ImportError:  # a torch without the constants: the range of torch 2.x
        ONNX_MIN_OPSET, ONNX_MAX_OPSET = 7, 20
    high = ONNX_MAX_OPSET
    try:
        import onnx

        high = min(high, onnx.defs.onnx_opset_version())
    except ImportError:
        pass
    return range(ONNX_MIN_OPSET, high + 1)


def check_opset(opset) -> int:
    """``opset`` if this installation can export it, else :class:`ExportError` with the range."""
    allowed = supported_opsets()
    if isinstance(opset, bool) or not isinstance(opset, int) or opset not in allowed:
        raise ExportError(f"opset {opset!r} is not supported; choose one of "
                          f"{allowed.start}..{allowed.stop - 1} (default {DEFAULT_OPSET})")
    return opset


@dataclass
class ExportReport:
    path: Path
    input_name: str
    input_shape: tuple[int, ...]
    feature_dim: int
    max_abs_diff: float | None


def _require(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise ImportError(
            f"ONNX export needs the optional package {module}: pip install 'vireid[onnx]' "
            "(onnx and onnxruntime)"
        ) from None


class _Encoder(nn.Module):
    """Preprocessed images or clips (and, for models with a camera embedding, the dataset
    camera number of each) -> L2-normalised features, through ``method.extract``."""

    def __init__(self, method: nn.Module, modality: Modality):
        super().__init__()
        self.method = method
        self.modality = int(modality)

    def forward(self, x: torch.Tensor, camera: torch.Tensor | None = None) -> torch.Tensor:
        n = x.shape[0]
        meta = torch.zeros(n, dtype=torch.long, device=x.device)
        batch = {"image": x, "camera": meta if camera is None else camera,
                 "label": meta - 1, "pid": meta - 1,
                 "modality": meta + self.modality, "index": meta}
        return nn.functional.normalize(self.method.extract(batch).float(), dim=1)


def _example(model, batch: int, frames: int | None, seed: int) -> tuple[torch.Tensor, ...]:
    """A random input batch; models with a camera embedding also get camera numbers drawn
    from their dataset's cameras."""
    height, width = model.image_size
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, 3, height, width) if not model.is_video else (batch, frames, 3, height, width)
    x = torch.randn(shape, generator=gen)
    if not model.uses_cameras:
        return (x,)
    cameras = torch.tensor(model.method.spec.cameras, dtype=torch.long)
    return x, cameras[torch.randint(len(cameras), (batch,), generator=gen)]


def check_onnx(model, path: str | Path, batch: int = 3, frames: int | None = None,
               modality: str | int | Modality = Modality.VISIBLE, seed: int = 1) -> float:
    """Max absolute difference between onnxruntime and PyTorch on a random batch."""
    _require("onnxruntime")
    import onnxruntime as ort

    frames = frames or _test_frames(model)
    inputs = _example(model, batch, frames, seed)
    encoder = _Encoder(model.method, Modality.parse(modality)).eval()
    with torch.inference_mode():
        expected = encoder(*(v.to(model.device) for v in inputs)).cpu().numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    got = session.run(None, {n: v.numpy() for n, v in zip(names, inputs)})[0]
    if got.shape != expected.shape:
        raise ExportError(f"{path}: onnxruntime gives shape {got.shape}, PyTorch {expected.shape}")
    return float(abs(got - expected).max())


def _test_frames(model) -> int:
    return int(model.config.data.video.frames_at_test)


def export_onnx(
    model,
    path: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    modality: str | int | Modality = Modality.VISIBLE,
    check: bool = True,
    tolerance: float = PARITY_TOLERANCE,
) -> ExportReport:
    """Export ``model``'s encoder (a :class:`~vireid.retrieval.model.ReIDModel`) to ``path``.

    With ``check``, runs the file in onnxruntime on a random batch of another size than
    the export's and raises :class:`ExportError` when the features differ from PyTorch's
    by more than ``tolerance`` (the file is kept, for inspection). ``opset`` must be in
    :func:`supported_opsets`.
    """
    _require("onnx")
    import onnx

    check_opset(opset)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    device = model.device
    model.to("cpu")
    try:
        encoder = _Encoder(model.method, Modality.parse(modality)).eval()
        frames = _test_frames(model)
        example = _example(model, 2, frames, seed=0)
        name = "clip" if model.is_video else "image"
        input_names = [name, "camera"][:len(example)]
        fixed_frames = bool(getattr(model.method, "fixed_frames_export", False))
        axes = ({0: "batch", 1: "frames"} if model.is_video and not fixed_frames
                else {0: "batch"})
        fastpath = torch.backends.mha.get_fastpath_enabled()
        # nn.MultiheadAttention's fused inference kernel has no ONNX form: trace the plain one
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with torch.inference_mode(False), torch.no_grad():
                    torch.onnx.export(
                        encoder, example, str(path), input_names=input_names,
                        output_names=["features"], opset_version=opset, dynamo=False,
                        dynamic_axes={name: axes, "camera": {0: "batch"},
                                      "features": {0: "batch"}}
                        if model.uses_cameras else {name: axes, "features": {0: "batch"}},
                    )
        finally:
            torch.backends.mha.set_fastpath_enabled(fastpath)
        proto = onnx.load(str(path))
        augment = model.config.data.augment
        onnx.helper.set_model_props(proto, {
            "vireid.method": model.config.method.name,
            "vireid.backbone": model.config.model.backbone,
            "vireid.image_size": json.dumps(list(model.image_size)),
            "vireid.mean": json.dumps(list(augment.mean)),
            "vireid.std": json.dumps(list(augment.std)),
            "vireid.input": ("image (B,3,H,W)" if not model.is_video else
                             f"clip (B,{frames},3,H,W)" if fixed_frames else "clip (B,T,3,H,W)"),
            "vireid.checkpoint_fingerprint": model.fingerprint,
            **({"vireid.camera": "camera (B,) int64: the dataset camera number of each input; "
                f"known cameras {list(model.method.spec.cameras)} (others use the first row)"}
               if model.uses_cameras else {}),
        })
        onnx.checker.check_model(proto)
        onnx.save(proto, str(path))
        with torch.no_grad():
            dim = int(encoder(*(v[:1] for v in example)).shape[1])
        diff = None
        if check:
            diff = check_onnx(model, path, batch=3, frames=frames, modality=modality)
            if not diff <= tolerance:
                raise ExportError(
                    f"{path}: onnxruntime features differ from PyTorch by up to {diff:.3g} "
                    f"(> {tolerance:g}); the file is kept for inspection"
                )
        return ExportReport(path, name, tuple(example[0].shape), dim, diff)
    finally:
        model.to(device)

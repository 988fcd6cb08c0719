"""Reading CLIP weight files and loading them into a :class:`~vireid.models.clip.ClipModel`.

Formats read, all without executing code from the file (docs/quality.md#bad-input-and-reliability):

* ``.safetensors`` (what :func:`fetch_weights` writes);
* ``torch.save`` files (open_clip ``.pt`` / ``.bin`` checkpoints, plain state
  dicts, training checkpoints with a ``state_dict`` entry), read with
  ``torch.load(weights_only=True)``;
* OpenAI's TorchScript archives (``ViT-B-16.pt``, ``RN50.pt``). A TorchScript
  archive is a zip whose ``data.pkl`` pickles the module tree and whose
  ``code/`` folder holds the model's code. ``torch.jit.load`` would compile
  and run that code; instead this module unpickles ``data.pkl`` with a
  restricted unpickler that only rebuilds tensors from the archive's
  ``data/`` entries (any other global is refused), and takes the parameter
  and buffer names from the ``__parameters__`` / ``__buffers__`` lines of
  the code files, read as text. ``trust_torchscript_code=True`` falls back to
  ``torch.jit.load`` for archives this reader cannot parse; that runs the
  archive's code, so use it only for files from a trusted source.

Key names: OpenAI and open_clip's ``CLIP`` use the same names (text tower at
the top level); :func:`to_model_keys` moves the text tower under ``text.``
(open_clip's ``CustomTextCLIP`` layout) and the ResNet stem under
``visual.stem.``. Positional embeddings whose grid differs from the model's
(OpenAI: 14x14 ViT-B/16 patches, 7x7 RN50 attention pool, for 224x224 input)
are resized bilinearly with the class token kept.

Nothing is downloaded unless asked: :func:`download_pretrained` and
:func:`fetch_weights` use open_clip's download machinery, and only they do.
"""

from __future__ import annotations

import io
import pickle
import re
import shutil
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vireid.files import atomic_path, sha256_file, write_sha256
from vireid.models.pos_embed import resize_grid_embedding

__all__ = [
    "WeightsDownloadError",
    "WeightsError",
    "WeightsNotFoundError",
    "WeightsReport",
    "download_pretrained",
    "fetch_weights",
    "load_weights",
    "read_state_dict",
    "sha256_file",
    "to_model_keys",
    "to_open_clip_keys",
]


class WeightsError(ValueError):
    """A weight file that cannot be read or does not fit the model."""


class WeightsNotFoundError(FileNotFoundError):
    """A weight file that does not exist."""


class WeightsDownloadError(ConnectionError):
    """An explicit download that failed (typically: no network)."""


_HOW_TO_GET = (
    "Get the weights once on a machine with network access: "
    "`vireid weights fetch {backbone} --to DIR` (writes DIR/{backbone}-openai.safetensors), "
    "or download OpenAI's archive by hand{url}; then pass model.weights=PATH."
)

# Entries OpenAI's TorchScript state dict carries that are not weights of the
# module (open_clip's load_state_dict drops the same three).
_NON_WEIGHT_KEYS = ("input_resolution", "context_length", "vocab_size")

_TEXT_PREFIXES = (
    "token_embedding.",
    "positional_embedding",
    "transformer.",
    "ln_final.",
    "text_projection",
)
_RESNET_STEM = ("conv1.", "bn1.", "conv2.", "bn2.", "conv3.", "bn3.")
_EXPECTED_MISSING = ("visual.camera_embedding",)
"""Model parameters no CLIP checkpoint has: they keep their initialisation."""


def _how_to_get(backbone: str) -> str:
    url = ""
    try:
        from open_clip.pretrained import get_pretrained_url

        found = get_pretrained_url(backbone, "openai")
        url = f" ({found})" if found else ""
    except Exception:  # pragma: no cover - open_clip is a dependency
        url = ""
    return _HOW_TO_GET.format(backbone=backbone or "ViT-B-16", url=url)


# --------------------------------------------------------------------------- reading


def read_state_dict(
    path: str | Path, *, trust_torchscript_code: bool = False, backbone: str = ""
) -> dict[str, torch.Tensor]:
    """Tensors of a weight file, by name, as stored (no renaming, no dtype change).

    Unwraps ``{"state_dict": ...}`` checkpoints and strips a ``module.`` prefix
    (DataParallel / DDP). Raises :class:`WeightsNotFoundError` for a missing
    file and :class:`WeightsError` for one that cannot be read safely.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"weight file not found: {path}. " + _how_to_get(backbone))
    with open(path, "rb") as handle:
        head = handle.read(16)
    if path.suffix == ".safetensors" or _looks_like_safetensors(head):
        from safetensors.torch import load_file

        try:
            loaded: Any = load_file(str(path), device="cpu")
        except Exception as error:
            raise WeightsError(f"cannot read safetensors file {path}: {error}") from error
    elif zipfile.is_zipfile(path) and _is_torchscript(path):
        loaded = _read_torchscript(path, trust_code=trust_torchscript_code)
    else:
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise WeightsError(
                f"cannot read {path} as a weight file: {type(error).__name__}: {error}. "
                "Only tensors are loaded (torch.load(weights_only=True)); files that need "
                "code to unpickle are refused."
            ) from error
    return _unwrap(loaded, path)


def _looks_like_safetensors(head: bytes) -> bool:
    return len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1 << 30


def _unwrap(loaded: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(loaded, Mapping):
        for key in ("state_dict", "model", "module"):
            inner = loaded.get(key)
            if (
                isinstance(inner, Mapping)
                and inner
                and all(isinstance(v, torch.Tensor) for v in inner.values())
            ):
                loaded = inner
                break
    if not isinstance(loaded, Mapping):
        raise WeightsError(f"{path} holds a {type(loaded).__name__}, not a state dict")
    state = {str(k): v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise WeightsError(f"{path} holds no tensors")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _zip_root(archive: zipfile.ZipFile) -> str:
    roots = [
        n[: -len("/data.pkl")]
        for n in archive.namelist()
        if n.endswith("/data.pkl") and n.count("/") == 1
    ]
    if len(roots) != 1:
        raise WeightsError(f"{archive.filename}: expected one <root>/data.pkl, found {roots}")
    return roots[0]


def _is_torchscript(path: Path) -> bool:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any("/code/" in n or n.endswith("/constants.pkl") for n in names)


_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


class _ScriptObject:
    """Stand-in for a TorchScript class instance: keeps its pickled state only."""

    qualname = ""

    def __setstate__(self, state: Any) -> None:
        self.state = state


@dataclass(frozen=True)
class _StorageType:
    dtype: torch.dtype


def _rebuild_tensor(storage: torch.Tensor, offset: int, size, stride, *_: Any) -> torch.Tensor:
    return torch.as_strided(storage, tuple(size), tuple(stride), offset)


def _rebuild_parameter(data: torch.Tensor, *_: Any) -> torch.Tensor:
    return data


def _identity(value: Any, *_: Any) -> Any:
    return value


_JIT_PICKLE_HELPERS = {
    # Type tags TorchScript attaches to lists (torch/jit/_pickle.py); all return their input.
    name: _identity
    for name in (
        "build_intlist",
        "build_tensorlist",
        "build_doublelist",
        "build_boollist",
        "build_genericlist",
        "restore_type_tag",
    )
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles a TorchScript ``data.pkl``: tensors from the archive, module objects
    as inert :class:`_ScriptObject`; any other global is refused."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, root: str) -> None:
        super().__init__(io.BytesIO(data))
        self._archive = archive
        self._root = root
        self._storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "torch.jit._pickle" and name in _JIT_PICKLE_HELPERS:
            return _JIT_PICKLE_HELPERS[name]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "__torch__" or module.startswith("__torch__."):
            return type(name, (_ScriptObject,), {"qualname": f"{module}.{name}"})
        raise WeightsError(f"refusing to load the global {module}.{name}")

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise WeightsError(f"unexpected persistent id {pid!r}")
        storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
        if not isinstance(storage_type, _StorageType):
            raise WeightsError(f"unexpected storage type {storage_type!r}")
        if key not in self._storages:
            raw = self._archive.read(f"{self._root}/data/{key}")
            itemsize = torch.empty(0, dtype=storage_type.dtype).element_size()
            if len(raw) != numel * itemsize:
                raise WeightsError(f"storage {key}: {len(raw)} bytes for {numel} elements")
            if numel == 0:
                self._storages[key] = torch.empty(0, dtype=storage_type.dtype)
            else:
                self._storages[key] = torch.frombuffer(bytearray(raw), dtype=storage_type.dtype)
        return self._storages[key]


_CLASS_RE = re.compile(r"^class (\w+)\(Module\):\n((?:[ \t].*\n|\n)*)", re.MULTILINE)
_LIST_RE = r"^\s*{}\s*=\s*\[(.*?)\]"


def _declared_state_names(archive: zipfile.ZipFile, root: str) -> dict[str, set[str]]:
    """``{qualified class name: parameter and buffer names}`` read from the code text."""
    declared: dict[str, set[str]] = {}
    prefix = f"{root}/code/"
    for name in archive.namelist():
        if not (name.startswith(prefix) and name.endswith(".py")):
            continue
        module = name[len(prefix) : -len(".py")].replace("/", ".")
        text = archive.read(name).decode("utf-8", errors="replace")
        for match in _CLASS_RE.finditer(text):
            body = match.group(2)
            names: set[str] = set()
            for attr in ("__parameters__", "__buffers__"):
                found = re.search(_LIST_RE.format(attr), body, re.MULTILINE)
                if found:
                    names.update(re.findall(r'"([^"]+)"', found.group(1)))
            declared[f"{module}.{match.group(1)}"] = names
    return declared


def _collect(
    obj: _ScriptObject, prefix: str, declared: dict[str, set[str]], out: dict[str, torch.Tensor]
) -> None:
    state = getattr(obj, "state", None)
    if not isinstance(state, dict):
        return
    names = declared.get(obj.qualname)
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            if names is None or key in names:
                out[prefix + key] = value
        elif isinstance(value, _ScriptObject):
            _collect(value, f"{prefix}{key}.", declared, out)


def _read_torchscript(path: Path, *, trust_code: bool) -> dict[str, torch.Tensor]:
    try:
        with zipfile.ZipFile(path) as archive:
            root = _zip_root(archive)
            order = f"{root}/byteorder"
            if order in archive.namelist() and archive.read(order).strip() != b"little":
                raise WeightsError(f"{path}: big-endian archives are not supported")
            declared = _declared_state_names(archive, root)
            top = _RestrictedUnpickler(archive.read(f"{root}/data.pkl"), archive, root).load()
            if not isinstance(top, _ScriptObject):
                raise WeightsError(f"{path}: data.pkl does not hold a module")
            state: dict[str, torch.Tensor] = {}
            _collect(top, "", declared, state)
            if not state:
                raise WeightsError(f"{path}: no tensors found in the TorchScript archive")
            return state
    except Exception as error:  # any parse failure: refuse, or fall back when trusted
        if not trust_code:
            raise WeightsError(
                f"cannot read the TorchScript archive {path} without running its code: {error}. "
                "If the file comes from a trusted source, pass trust_torchscript_code=True "
                "(uses torch.jit.load, which executes the archive's code), or get safetensors "
                "weights with `vireid weights fetch BACKBONE --to DIR`."
            ) from error
    warnings.warn(
        f"loading {path} with torch.jit.load: this executes code stored in the archive",
        stacklevel=3,
    )
    module = torch.jit.load(str(path), map_location="cpu")
    return {k: v for k, v in module.state_dict().items()}


# --------------------------------------------------------------------------- naming


def checkpoint_kind(state: Mapping[str, torch.Tensor]) -> str | None:
    """The image-tower family of a CLIP state dict: "vit", "resnet" or None."""
    if any(k.startswith("visual.layer1.") for k in state):
        return "resnet"
    if "visual.class_embedding" in state or "visual.proj" in state:
        return "vit"
    return None


def to_model_keys(
    state: Mapping[str, torch.Tensor], kind: str | None = None
) -> dict[str, torch.Tensor]:
    """OpenAI / open_clip ``CLIP`` names -> :class:`ClipModel` names (idempotent).

    Text-tower keys go under ``text.``; for a ResNet, the stem convolutions and
    norms go under ``visual.stem.``; ``module.`` prefixes and the non-weight
    entries of OpenAI archives are dropped.
    """
    kind = kind or checkpoint_kind(state)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("module."):
            key = key[len("module.") :]
        if key in _NON_WEIGHT_KEYS or key.endswith("attn_mask"):
            continue
        if key.startswith(_TEXT_PREFIXES):
            key = "text." + key
        elif kind == "resnet" and key.startswith("visual.") and key[7:].startswith(_RESNET_STEM):
            key = "visual.stem." + key[7:]
        out[key] = value
    return out


def to_open_clip_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """:class:`ClipModel` names -> OpenAI / open_clip ``CLIP`` names (inverse of
    :func:`to_model_keys`; the camera embedding, which CLIP lacks, is dropped)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("visual.camera_embedding"):
            continue
        if key.startswith("text."):
            key = key[len("text.") :]
        elif key.startswith("visual.stem."):
            key = "visual." + key[len("visual.stem.") :]
        out[key] = value
    return out


# --------------------------------------------------------------------------- loading


@dataclass
class WeightsReport:
    """What :func:`load_weights` did."""

    path: str
    resized: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    kept_initialisation: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


def _list(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_weights(
    model: nn.Module,
    path: str | Path,
    *,
    strict: bool = True,
    trust_torchscript_code: bool = False,
    verify_checksum: bool = True,
) -> WeightsReport:
    """Load a CLIP weight file into a :class:`~vireid.models.clip.ClipModel`.

    The grid positional embedding (ViT patches / ResNet attention pool) is
    resized to the model's grid when it differs. Values are converted to the
    model's dtype (OpenAI archives are float16; the model stays float32). A
    ``PATH.sha256`` file beside the weights (as :func:`fetch_weights` writes)
    is checked when ``verify_checksum``. With ``strict``, keys missing from the
    file (other than the camera embedding, which no CLIP file has) or present
    only in the file are an error that lists them; a shape mismatch is always
    an error naming the key.
    """
    path = Path(path)
    backbone = getattr(model, "backbone", "")
    state = read_state_dict(path, trust_torchscript_code=trust_torchscript_code, backbone=backbone)
    if verify_checksum:
        _verify_checksum(path)
    visual = model.visual
    kind = checkpoint_kind(state)
    if kind is not None and kind != visual.kind:
        raise WeightsError(
            f"{path} holds {kind} weights but the model's backbone {backbone!r} is a {visual.kind}"
        )
    state = to_model_keys(state, visual.kind)
    report = WeightsReport(path=str(path))

    own = model.state_dict()
    grid_key = "visual." + visual.grid_embedding_key()
    if grid_key in state and grid_key in own and state[grid_key].shape != own[grid_key].shape:

        old = state[grid_key]
        if old.dim() != 2 or old.shape[1] != own[grid_key].shape[1]:
            raise WeightsError(
                f"{path}: {grid_key} has shape {tuple(old.shape)}, the model needs "
                f"{tuple(own[grid_key].shape)}"
            )
        state[grid_key] = resize_grid_embedding(old, visual.grid_size)
        report.resized[grid_key] = (tuple(old.shape), tuple(state[grid_key].shape))

    mismatched = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    if mismatched:
        raise WeightsError(
            f"{path} does not fit backbone {backbone!r}; shape mismatch at "
            + "; ".join(mismatched[:8])
            + (f" (+{len(mismatched) - 8} more)" if len(mismatched) > 8 else "")
        )
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    report.kept_initialisation = [k for k in missing if k.startswith(_EXPECTED_MISSING)]
    report.missing = [k for k in missing if not k.startswith(_EXPECTED_MISSING)]
    report.unexpected = unexpected
    if strict and (report.missing or report.unexpected):
        parts = []
        if report.missing:
            parts.append(f"missing from the file: {_list(report.missing)}")
        if report.unexpected:
            parts.append(f"not in the model: {_list(report.unexpected)}")
        raise WeightsError(f"{path} does not match backbone {backbone!r}: " + "; ".join(parts))
    with torch.no_grad():
        model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return report


def _verify_checksum(path: Path) -> None:
    sidecar = path.with_name(path.name + ".sha256")
    if not sidecar.is_file():
        return
    fields = sidecar.read_text(encoding="utf-8").split()
    if not fields:
        raise WeightsError(f"checksum file {sidecar} is empty")
    actual = sha256_file(path)
    if fields[0].lower() != actual:
        raise WeightsError(
            f"{path} does not match its checksum file {sidecar} "
            f"(expected {fields[0]}, got {actual}); the file is damaged or was replaced"
        )


# --------------------------------------------------------------------------- downloading


def download_pretrained(backbone: str, tag: str, cache_dir: str | Path | None = None) -> Path:
    """Download ``backbone``'s ``tag`` weights with open_clip's machinery (Hugging
    Face hub or the original URL) and return the local file. Only called on an
    explicit request (``pretrained=TAG`` or ``vireid weights fetch``)."""
    from vireid.models.synthetic import SYNTHETIC_TAG, shipped_weights

    if tag == SYNTHETIC_TAG:  # shipped in the package (vireid.models.synthetic): no download
        return shipped_weights(backbone)
    from open_clip import pretrained as oc_pretrained

    config = oc_pretrained.get_pretrained_cfg(backbone, tag)
    if not config:
        tags = oc_pretrained.list_pretrained_tags_by_model(backbone)
        raise WeightsError(
            f"open_clip has no pretrained weights {tag!r} for {backbone!r}"
            + (f"; available tags: {', '.join(tags)}" if tags else " (no tags for this name)")
        )
    try:
        target = oc_pretrained.download_pretrained(
            config, cache_dir=str(cache_dir) if cache_dir is not None else None
        )
    except Exception as error:
        raise WeightsDownloadError(
            f"could not download the {tag!r} weights of {backbone} through open_clip "
            f"({type(error).__name__}: {error}). This needs network access (Hugging Face hub "
            f"or {config.get('url') or 'the original URL'}); this machine may be offline. "
            + _how_to_get(backbone)
        ) from error
    if not target or not Path(target).is_file():
        raise WeightsDownloadError(
            f"open_clip returned no file for {backbone} / {tag}. " + _how_to_get(backbone)
        )
    return Path(target)


def fetch_weights(name: str, to: str | Path, tag: str = "openai") -> Path:
    """Download ``name``'s pretrained weights (open_clip tag ``tag``), convert them to
    safetensors (open_clip / OpenAI key names, stored dtypes kept) at
    ``TO/{name}-{tag}.safetensors`` with a ``.sha256`` file beside it, and return
    the path. The download goes to ``TO/.download`` and is removed afterwards."""
    from safetensors.torch import save_file

    folder = Path(to)
    folder.mkdir(parents=True, exist_ok=True)
    download_dir = folder / ".download"
    source = download_pretrained(name, tag, cache_dir=download_dir)
    state = read_state_dict(source, backbone=name)
    state = to_open_clip_keys(to_model_keys(state))
    tensors = {k: v.detach().contiguous().clone() for k, v in state.items()}
    target = folder / f"{name}-{tag}.safetensors"
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp),
                  metadata={"backbone": name, "pretrained": tag, "source": source.name})
    write_sha256(target)
    if download_dir.is_dir():
        shutil.rmtree(download_dir, ignore_errors=True)
    return target

"""vireid: CLIP-based visible-infrared person re-identification.

Public API (imported on first use, so that ``import vireid`` stays light)::

    model = vireid.load_model("runs/demo/clipreid_tiny")           # a run folder or checkpoint
    feats = model.extract(["a.jpg", "b.jpg"], modality="infrared")  # (2, F), L2-normalised
    gallery = vireid.Retriever(model, gallery="photos/", cache="gallery.safetensors")
    result = gallery.search("query.jpg", topk=10, rerank=False)
    vireid.evaluate("runs/demo/clipreid_tiny")                      # protocol metrics

Also: :func:`list_methods`, :func:`write_report`, :func:`export_onnx`,
:class:`FeatureSet`, :class:`FeatureIndex`, :func:`evaluate_features`.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_API = {
    "load_model": "vireid.retrieval.model",
    "ReIDModel": "vireid.retrieval.model",
    "Retriever": "vireid.retrieval.search",
    "SearchResult": "vireid.retrieval.search",
    "FeatureSet": "vireid.retrieval.features",
    "FeatureIndex": "vireid.retrieval.index",
    "evaluate": "vireid.retrieval.api",
    "list_methods": "vireid.retrieval.api",
    "write_report": "vireid.retrieval.report",
    "export_onnx": "vireid.retrieval.export",
    "evaluate_features": "vireid.evaluation.evaluator",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vireid' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))

"""Using a trained model: loading, feature extraction, gallery search, reports, export.

- :func:`load_model` / :class:`ReIDModel` (``model.py``): a checkpoint -> features;
- :class:`FeatureSet` and its safetensors files (``features.py``);
- :class:`FeatureIndex` (``index.py``): exact cosine search, torch or faiss;
- :class:`Retriever` (``search.py``): a cached gallery, searched with or without
  k-reciprocal re-ranking;
- :func:`write_report` (``report.py``): HTML report and ranked-list pictures;
- :func:`export_onnx` (``export.py``): the encoder as ONNX, checked in onnxruntime.
"""

from vireid.retrieval.features import FeatureSet, load_feature_set, save_feature_set
from vireid.retrieval.index import FeatureIndex
from vireid.retrieval.model import ReIDModel, load_model
from vireid.retrieval.search import Match, Retriever, SearchResult

__all__ = [
    "FeatureIndex",
    "FeatureSet",
    "Match",
    "ReIDModel",
    "Retriever",
    "SearchResult",
    "load_feature_set",
    "load_model",
    "save_feature_set",
]

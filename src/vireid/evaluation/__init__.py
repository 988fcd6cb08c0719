"""Evaluation: vectorised CMC/mAP/mINP under each benchmark's protocol."""

from vireid.evaluation.evaluator import (
    evaluate_features,
    feature_distances,
    load_feature_file,
    select_splits,
    summarize,
)
from vireid.evaluation.metrics import (
    DegenerateFeaturesWarning,
    Metrics,
    compute_metrics,
    warn_degenerate,
)

__all__ = [
    "DegenerateFeaturesWarning",
    "Metrics",
    "compute_metrics",
    "evaluate_features",
    "feature_distances",
    "load_feature_file",
    "select_splits",
    "summarize",
    "warn_degenerate",
]

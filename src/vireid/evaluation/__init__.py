"""Evaluation: vectorised CMC/mAP/mINP under each benchmark's protocol."""

from vireid.evaluation.evaluator import evaluate_features, load_feature_file, summarize
from vireid.evaluation.metrics import Metrics, compute_metrics

__all__ = ["Metrics", "compute_metrics", "evaluate_features", "load_feature_file", "summarize"]

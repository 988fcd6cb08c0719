"""Top-level functions of the public API that are not classes of their own."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from vireid.retrieval.model import ReIDModel

__all__ = ["evaluate", "list_methods"]


def evaluate(
    model_or_checkpoint: ReIDModel | str | os.PathLike[str],
    config: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    *,
    rerank: Any = None,
    splits: Sequence[str] | None = None,
) -> dict:
    """Scores a model on its dataset's protocol (every split, or those named in ``splits``).

    ``model_or_checkpoint``: a :class:`ReIDModel` (its config names the dataset) or a
    checkpoint / run folder (loaded with ``config`` and ``overrides``). ``rerank``: None
    (as ``eval.rerank.enabled`` says), False, True (with the ``eval.rerank`` settings),
    or settings with ``k1``, ``k2``, ``lambda_value``. Returns the summary of
    :func:`vireid.evaluation.evaluator.evaluate_method` (per setting: trials, mean, std).
    """
    from vireid.data.datasets import load_data
    from vireid.evaluation.evaluator import evaluate_method
    from vireid.retrieval.model import load_model

    if isinstance(model_or_checkpoint, ReIDModel):
        model = model_or_checkpoint
    else:
        model = load_model(model_or_checkpoint, device="auto", config=config, overrides=overrides)
    cfg = model.config
    if rerank is None:
        settings = cfg.eval.rerank if cfg.eval.rerank.enabled else None
    elif rerank is True:
        settings = cfg.eval.rerank
    else:
        settings = rerank or None
    return evaluate_method(model.method, load_data(cfg), model.batch_size,
                           splits or cfg.eval.splits, rerank=settings)


def list_methods() -> list[str]:
    """Names of the registered methods (``method.name`` in configs)."""
    from vireid.methods import list_methods as names

    return names()

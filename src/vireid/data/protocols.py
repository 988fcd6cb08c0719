"""Evaluation protocols of the five benchmarks: keep rules, CMC variants, trials, gallery draws.

Every constant here names its source. "Reference code" means the evaluation
code shared by the community's VI-ReID repositories (``eval_sysu``,
``eval_llcm``, ``eval_regdb``, ``evaluate`` of the video repos), whose numbers
our evaluator reproduces.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

MAX_RANK = 20
"""CMC is truncated at rank 20 (or at the gallery size when smaller), as in the reference code."""


@dataclass(frozen=True)
class ProtocolRules:
    """How one benchmark scores a ranking.

    ``exclusion``: which gallery items a query ignores.
      - ``"none"``: nothing removed (RegDB, BUPTCampus).
      - ``"sysu_cam3_cam2"``: a query from camera 3 ignores every gallery item
        from camera 2, whatever its identity (SYSU-MM01 reference code: cam3 and
        cam2 film the same room).
      - ``"same_pid_same_cam"``: remove gallery items of the query's identity
        seen by the query's camera (LLCM, HITSZ-VCM; Market-1501 convention).
    ``dedup_cmc``: CMC is computed on the ranked list with repeated identities
    removed (SYSU-MM01 and LLCM reference code); mAP/mINP use the full ranking.
    """

    name: str
    exclusion: str
    dedup_cmc: bool
    max_rank: int = MAX_RANK


PROTOCOLS: dict[str, ProtocolRules] = {
    "sysu": ProtocolRules("sysu", exclusion="sysu_cam3_cam2", dedup_cmc=True),
    "llcm": ProtocolRules("llcm", exclusion="same_pid_same_cam", dedup_cmc=True),
    "regdb": ProtocolRules("regdb", exclusion="none", dedup_cmc=False),
    "vcm": ProtocolRules("vcm", exclusion="same_pid_same_cam", dedup_cmc=False),
    "bupt": ProtocolRules("bupt", exclusion="none", dedup_cmc=False),
}


def get_rules(protocol: str | ProtocolRules) -> ProtocolRules:
    if isinstance(protocol, ProtocolRules):
        return protocol
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {sorted(PROTOCOLS)}")
    return PROTOCOLS[protocol]


def keep_pairs(exclusion: str, q_ids, q_cams, g_ids, g_cams):
    """Whether each (query, gallery item) pair may be ranked, elementwise.

    The four arrays broadcast together (pass ``q[:, None]`` and ``g[None, :]``
    for a full matrix); numpy arrays and torch tensors both work. Returns
    ``None`` when the rule keeps everything.
    """
    if exclusion == "none":
        return None
    if exclusion == "sysu_cam3_cam2":
        return ~((q_cams == 3) & (g_cams == 2))
    if exclusion == "same_pid_same_cam":
        return ~((q_ids == g_ids) & (q_cams == g_cams))
    raise ValueError(f"unknown exclusion rule {exclusion!r}")


# ---------------------------------------------------------------------------
# Camera sets, trial seeds and gallery draws (used by the dataset loaders).
# ---------------------------------------------------------------------------

SYSU_VISIBLE_CAMERAS: tuple[int, ...] = (1, 2, 4, 5)
"""SYSU-MM01 visible cameras (docs/datasets.md#sysu-mm01 [V]; ``rgb_cameras`` of the reference ``pre_process_sysu``)."""

SYSU_INFRARED_CAMERAS: tuple[int, ...] = (3, 6)
"""SYSU-MM01 infrared cameras; every test-id image from them is a query (reference ``process_query_sysu``)."""

SYSU_GALLERY_CAMERAS: dict[str, tuple[int, ...]] = {"all": (1, 2, 4, 5), "indoor": (1, 2)}
"""Gallery cameras of all-search and indoor-search (reference ``process_gallery_sysu``)."""

SYSU_TRIALS = 10
"""Trials (gallery draws) averaged on SYSU-MM01 (docs/protocols.md#per-dataset [V])."""

SYSU_MULTI_SHOT = 10
"""Images per (id, camera) in the multi-shot gallery (official toolkit ``number_shot = 10``)."""

LLCM_VISIBLE_CAMERAS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 9)
"""LLCM visible test cameras, ``test_vis/cam1..cam9`` (reference ``process_query_llcm``, mode 1)."""

LLCM_INFRARED_CAMERAS: tuple[int, ...] = (1, 2, 4, 5, 6, 7, 8, 9)
"""LLCM near-infrared test cameras: there is no ``test_nir/cam3`` (reference, mode 2)."""

LLCM_TRIALS = 10
"""Trials (gallery draws) averaged on LLCM (reference ``test.py``: ``for trial in range(10)``)."""

REGDB_TRIALS: tuple[int, ...] = tuple(range(1, 11))
"""RegDB split numbers ``idx/*_{1..10}.txt``; one model is trained per split (docs/datasets.md#regdb [V])."""

REGDB_CAMERAS = {"visible": 1, "thermal": 2}
"""Camera numbers given to RegDB images (third-party test scripts: visible = 1, thermal = 2 [T]).
The RegDB protocol removes nothing, so these only label the data."""

VCM_MIN_SEQ_LEN = 12
"""HITSZ-VCM tracklets shorter than this are dropped, train and test (reference ``VCM(min_seq_len=12)``)."""

BUPT_CAMERAS: dict[str, int] = {"LS3": 0, "G25": 1, "CQ1": 2, "W4": 3, "TSG1": 4, "TSG2": 5}
"""BUPTCampus camera names -> numbers (``CAMERA`` in the official ``utils.py``)."""

BUPT_OFFICIAL_TEST_BATCH = 64
"""Test batch size of the official BUPTCampus code (``--test_bs 64``, "Please don't change it").
Its ``ConsistentModalitySampler`` drops the last ``len(rgb) % 64`` RGB tracklets of
the query list and of the gallery list; ``official_drop`` reproduces that."""


def trial_seeds(num_trials: int) -> list[int]:
    """Seeds of the gallery draws: trial ``t`` uses ``random.seed(t)`` (reference ``process_gallery_*``)."""
    if num_trials < 1:
        raise ValueError(f"number of trials must be >= 1, got {num_trials}")
    return list(range(num_trials))


def draw_single_shot(groups: Sequence[Sequence[T]], seed: int) -> list[T]:
    """One item per group, as the reference gallery loop draws it.

    The reference code calls ``random.seed(trial)`` and then, for every
    (identity, camera) folder in order, ``random.choice(sorted(files))``.
    A private ``random.Random(seed)`` yields exactly the same sequence
    without touching the global generator. ``groups`` must already be in the
    reference order (sorted ids, then the camera list) and each group sorted.
    Empty groups are skipped without consuming randomness (the reference
    would crash on them).
    """
    rng = random.Random(seed)
    return [rng.choice(group) for group in groups if len(group) > 0]


def draw_multi_shot(groups: Sequence[Sequence[T]], seed: int, shots: int = SYSU_MULTI_SHOT) -> list[T]:
    """Up to ``shots`` items per group: ``random.sample(files, shots)`` after ``random.seed(seed)``.

    Public multi-shot loaders call ``random.sample(files, k=10)`` [T], which
    raises for a folder with fewer than 10 files. Here such a folder gives all
    its files (in sampled order); draws are identical to the reference whenever
    the reference runs at all.
    """
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    rng = random.Random(seed)
    drawn: list[T] = []
    for group in groups:
        if len(group) > 0:
            drawn.extend(rng.sample(list(group), min(shots, len(group))))
    return drawn

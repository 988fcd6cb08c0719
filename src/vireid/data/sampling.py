"""Frame selection for tracklets: pure functions returning frame indices.

``n`` is the number of frames of a tracklet, ``T`` the number to select (6 or 10 in
the recipes). Every mode handles ``n < T`` (indices repeat) and raises ``ValueError``
naming the tracklet when ``n == 0``.

Sources:

- HITSZ-VCM reference loaders (``VideoDataset_train`` / ``VideoDataset_test`` of the
  MITML and VCM code): the tracklet is split into ``T`` chunks of ``L = ceil(n / T)``
  frames after padding the index list with the last index up to ``L * T``; when
  ``n < T`` the list is padded to ``T`` and each chunk is one index. Training takes a
  uniformly random position in each chunk ("restricted random sampling", RRS;
  :func:`restricted_random`), testing the first index of each chunk
  (:func:`first_of_chunk`). Dense testing (:func:`dense`) cuts consecutive ``T``-frame
  clips while more than ``T`` frames remain and pads the last clip by repeating its own
  frames cyclically.
- BUPTCampus reference loader (``dataloader.py``): test ``uniform`` =
  ``np.linspace(0, n, T, endpoint=False, dtype=int)`` (:func:`evenly`); train ``random``
  = ``sorted(choice(range(n), T, replace=n < T))`` (:func:`random_sorted`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = [
    "chunks",
    "restricted_random",
    "first_of_chunk",
    "evenly",
    "random_sorted",
    "dense",
    "FRAME_SAMPLERS",
    "sample_frames",
]

RandomLike = random.Random | np.random.Generator | None


def _check(n: int, T: int, name: str | None) -> None:
    if T < 1:
        raise ValueError(f"number of frames to sample must be >= 1, got T={T}")
    if n < 1:
        where = f"tracklet {name!r}" if name else "tracklet"
        raise ValueError(f"{where} has no frames (n={n}); cannot sample {T} frames")


def _randbelow(rng: RandomLike, k: int) -> int:
    if rng is None:
        return random.randrange(k)
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(k))
    return rng.randrange(k)


def chunks(n: int, T: int, name: str | None = None) -> list[list[int]]:
    """The ``T`` chunks of the HITSZ-VCM reference loaders.

    ``n >= T``: indices ``0..n-1`` padded with ``n-1`` up to ``L*T`` (``L = ceil(n/T)``),
    cut into ``T`` consecutive chunks of ``L``. ``n < T``: ``0..n-1`` padded with ``n-1``
    up to ``T``, one index per chunk. Example ``n=25, T=10``: ``L=3``, chunks
    ``[0,1,2] ... [21,22,23], [24,24,24], [24,24,24]``.
    """
    _check(n, T, name)
    length = 1 if n < T else math.ceil(n / T)
    strip = list(range(n)) + [n - 1] * (length * T - n)
    return [strip[length * s : length * (s + 1)] for s in range(T)]


def restricted_random(n: int, T: int, rng: RandomLike = None, name: str | None = None) -> list[int]:
    """RRS (training): one uniformly random entry of each of the :func:`chunks`.

    Padded duplicates count as entries, as in the reference (``np.random.choice`` over
    chunk positions).
    """
    return [pool[_randbelow(rng, len(pool))] for pool in chunks(n, T, name)]


def first_of_chunk(n: int, T: int, name: str | None = None) -> list[int]:
    """HITSZ-VCM test sampling: the first entry of each of the :func:`chunks`."""
    return [pool[0] for pool in chunks(n, T, name)]


def evenly(n: int, T: int, name: str | None = None) -> list[int]:
    """BUPTCampus test sampling: ``floor(linspace(0, n, T, endpoint=False))``.

    ``n < T`` repeats indices, e.g. ``n=3, T=5`` -> ``[0, 0, 1, 1, 2]``.
    """
    _check(n, T, name)
    return [int(v) for v in np.linspace(0, n, T, endpoint=False).astype(np.int64)]


def random_sorted(n: int, T: int, rng: RandomLike = None, name: str | None = None) -> list[int]:
    """BUPTCampus training sampling: ``T`` random indices in ascending order.

    Drawn without replacement when ``n >= T``; with replacement when ``n < T`` (then
    indices may repeat), as the reference loader does.
    """
    _check(n, T, name)
    if isinstance(rng, np.random.Generator):
        picks = rng.choice(n, size=T, replace=n < T)
        return sorted(int(v) for v in picks)
    source = random if rng is None else rng
    if n >= T:
        return sorted(source.sample(range(n), T))
    return sorted(source.randrange(n) for _ in range(T))


def dense(n: int, T: int, name: str | None = None) -> list[list[int]]:
    """All frames in consecutive ``T``-frame clips (dense test sampling).

    Clips ``[0..T-1], [T..2T-1], ...`` are cut while more than ``T`` frames remain; the
    rest (1..T frames) is the last clip, padded by repeating its own frames cyclically
    (reference behaviour). ``ceil(n / T)`` clips in total; e.g. ``n=13, T=6`` ->
    ``[0..5], [6..11], [12, 12, 12, 12, 12, 12]``; ``n=3, T=5`` -> ``[[0, 1, 2, 0, 1]]``.
    """
    _check(n, T, name)
    clips = []
    start = 0
    while n - start > T:
        clips.append(list(range(start, start + T)))
        start += T
    rest = list(range(start, n))
    clips.append([rest[i % len(rest)] for i in range(T)])
    return clips


FRAME_SAMPLERS: dict[str, Callable[..., Any]] = {
    "rrs": restricted_random,
    "restricted_random": restricted_random,
    "first_of_chunk": first_of_chunk,
    "evenly": evenly,
    "random_sorted": random_sorted,
    "dense": dense,
}
"""Frame-sampling modes by name. ``dense`` returns a list of clips, the others one list."""

_RANDOM_MODES = {"rrs", "restricted_random", "random_sorted"}


def sample_frames(
    mode: str, n: int, T: int, rng: RandomLike = None, name: str | None = None
) -> list[int] | list[list[int]]:
    """Dispatch on ``mode`` (a key of :data:`FRAME_SAMPLERS`)."""
    if mode not in FRAME_SAMPLERS:
        raise ValueError(f"unknown frame sampling {mode!r}; expected one of {sorted(FRAME_SAMPLERS)}")
    if mode in _RANDOM_MODES:
        return FRAME_SAMPLERS[mode](n, T, rng, name=name)
    return FRAME_SAMPLERS[mode](n, T, name=name)

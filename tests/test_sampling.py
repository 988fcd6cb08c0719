"""Frame sampling for tracklets: hand-computed cases and invariants."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from vireid.data.sampling import (
    chunks,
    dense,
    evenly,
    first_of_chunk,
    random_sorted,
    restricted_random,
    sample_frames,
)


def test_chunks_n25_t10_hand_computed():
    # L = ceil(25/10) = 3; the strip 0..24 is padded with 24 five times up to 30.
    expected = [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11], [12, 13, 14], [15, 16, 17],
                [18, 19, 20], [21, 22, 23], [24, 24, 24], [24, 24, 24]]
    assert chunks(25, 10) == expected
    assert first_of_chunk(25, 10) == [0, 3, 6, 9, 12, 15, 18, 21, 24, 24]


def test_chunks_n_smaller_than_t_pads_with_last_index():
    assert chunks(3, 5) == [[0], [1], [2], [2], [2]]
    assert first_of_chunk(3, 5) == [0, 1, 2, 2, 2]
    # one entry per chunk: RRS has no choice left
    assert restricted_random(3, 5, random.Random(0)) == [0, 1, 2, 2, 2]
    assert chunks(1, 4) == [[0], [0], [0], [0]]


def test_chunks_exact_multiple_and_equal():
    assert chunks(6, 6) == [[0], [1], [2], [3], [4], [5]]
    assert first_of_chunk(12, 6) == [0, 2, 4, 6, 8, 10]


def test_restricted_random_picks_inside_each_chunk_and_reaches_every_frame():
    n, T = 25, 10
    pools = chunks(n, T)
    seen = [set() for _ in range(T)]
    rng = random.Random(123)
    for _ in range(300):
        picks = restricted_random(n, T, rng)
        assert len(picks) == T
        for s, (pick, pool) in enumerate(zip(picks, pools)):
            assert pick in pool
            seen[s].add(pick)
    assert [sorted(s) for s in seen] == [sorted(set(p)) for p in pools]


def test_restricted_random_accepts_numpy_generator_and_is_deterministic():
    a = restricted_random(40, 6, np.random.default_rng(5))
    b = restricted_random(40, 6, np.random.default_rng(5))
    assert a == b
    assert a == sorted(a)  # chunks are increasing, so RRS output is ordered


def test_evenly_matches_floor_linspace():
    assert evenly(25, 10) == [0, 2, 5, 7, 10, 12, 15, 17, 20, 22]
    assert evenly(3, 5) == [0, 0, 1, 1, 2]
    assert evenly(10, 10) == list(range(10))


def test_random_sorted_without_replacement_when_enough_frames():
    rng = random.Random(1)
    for _ in range(50):
        picks = random_sorted(30, 10, rng)
        assert picks == sorted(picks)
        assert len(set(picks)) == 10
        assert all(0 <= p < 30 for p in picks)


def test_random_sorted_with_replacement_when_too_few_frames():
    rng = random.Random(2)
    results = [random_sorted(4, 10, rng) for _ in range(20)]
    for picks in results:
        assert len(picks) == 10 and picks == sorted(picks)
        assert all(0 <= p < 4 for p in picks)
    # 10 picks from 4 frames must repeat
    assert all(len(set(p)) <= 4 for p in results)


def test_random_sorted_numpy_matches_reference_formula():
    # Reference (BUPTCampus dataloader): sorted(choice(range(n), size=T, replace=n < T)).
    for n, T in [(30, 10), (4, 10)]:
        ours = random_sorted(n, T, np.random.default_rng(9))
        ref = sorted(int(v) for v in np.random.default_rng(9).choice(n, size=T, replace=n < T))
        assert ours == ref


def test_dense_hand_computed():
    assert dense(13, 6) == [list(range(6)), list(range(6, 12)), [12] * 6]
    assert dense(12, 6) == [list(range(6)), list(range(6, 12))]
    assert dense(8, 6) == [list(range(6)), [6, 7, 6, 7, 6, 7]]
    assert dense(3, 5) == [[0, 1, 2, 0, 1]]


def test_dense_covers_every_frame_in_ceil_n_over_t_clips():
    for T in (1, 4, 6, 10):
        for n in range(1, 40):
            clips = dense(n, T)
            assert len(clips) == math.ceil(n / T)
            assert all(len(c) == T for c in clips)
            assert sorted({i for c in clips for i in c}) == list(range(n))


@pytest.mark.parametrize("mode", ["rrs", "first_of_chunk", "evenly", "random_sorted", "dense"])
def test_empty_tracklet_error_names_it(mode):
    with pytest.raises(ValueError, match="cam3/0042"):
        sample_frames(mode, 0, 6, random.Random(0), name="cam3/0042")


def test_invalid_t_and_unknown_mode():
    with pytest.raises(ValueError, match="T=0"):
        chunks(5, 0)
    with pytest.raises(ValueError, match="unknown frame sampling 'middle'"):
        sample_frames("middle", 5, 2)


def test_sample_frames_dispatch_agrees_with_functions():
    assert sample_frames("first_of_chunk", 25, 10) == first_of_chunk(25, 10)
    assert sample_frames("rrs", 25, 10, random.Random(4)) == restricted_random(25, 10, random.Random(4))
    assert sample_frames("dense", 13, 6) == dense(13, 6)

"""Identity batch samplers (P identities x K instances), cross-modal and DDP-aware.

Both samplers are *batch samplers*: iterating yields one list of dataset indices per
training step; pass them to ``DataLoader(dataset, batch_sampler=sampler)``.

Determinism and distribution:

- the global order of an epoch (all batches, all ranks) is a function of
  ``(seed, epoch)`` only (``numpy.random.default_rng([seed, epoch])``);
- under DDP the share of rank ``r`` is made of **whole global batches**
  ``r, r + W, r + 2W, ...`` (``W`` = world size): at every step the ranks hold
  different batches, and the union over ranks of step ``s`` is global batches
  ``sW .. sW + W - 1``, so the ranks together walk the single-process order. With
  ``drop_last=True`` the global order is cut to a multiple of ``W``; with
  ``drop_last=False`` it is completed by wrapping around to its first batches, as
  ``torch.utils.data.DistributedSampler`` does;
- ``state_dict()`` / ``load_state_dict()`` carry the epoch and the number of batches
  already consumed in it, so a resumed run continues with exactly the batches an
  uninterrupted run would have seen. The counter follows the batches handed out by
  the iterator; a DataLoader with workers reads ahead, so a trainer should pass the
  number of batches it actually trained on: ``state_dict(batches_consumed=step)``.
  The position is the same on every rank, so saving rank 0's state is enough;
- the identity samplers yield :class:`Draw` indices: plain ints that also carry their
  position in the epoch's global order (batch ``g`` of the epoch, slot ``k``:
  ``g * batch_size + k``), so that a dataset can key each draw's augmentation by the
  draw instead of the index -- an image drawn twice in an epoch (P x K with
  replacement) is then augmented independently, still a function of (seed, epoch,
  draw) only.
"""

from __future__ import annotations

import math
import warnings
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from vireid.data.types import Modality, Sample

__all__ = ["CrossModalIdentitySampler", "Draw", "IdentitySampler"]

_IDENTITY_ORDERS = ("random", "epoch")


class Draw(int):
    """A dataset index that also carries ``draw``, its position in the epoch's global
    sampling order (see the module docstring). Equal to, and usable as, the int."""

    draw: int

    def __new__(cls, index: int, draw: int) -> Draw:
        value = super().__new__(cls, index)
        value.draw = int(draw)
        return value

    def __reduce__(self) -> tuple[Any, ...]:  # DataLoader workers receive pickled batches
        return (Draw, (int(self), self.draw))

    def __repr__(self) -> str:
        return f"Draw({int(self)}, draw={self.draw})"


def _as_label_array(labels: Sequence[int]) -> np.ndarray:
    array = np.asarray(labels, dtype=np.int64).reshape(-1)
    negative = np.flatnonzero(array < 0)
    if negative.size:
        i = int(negative[0])
        raise ValueError(
            f"label {int(array[i])} at index {i}: identity samplers need training labels (>= 0)"
        )
    return array


def _positions(labels: np.ndarray, subset: np.ndarray | None = None) -> dict[int, np.ndarray]:
    """label -> sorted indices (into the full arrays) of that label, within ``subset``."""
    index = np.arange(labels.size) if subset is None else subset
    order = np.argsort(labels[index], kind="stable")
    sorted_index = index[order]
    sorted_labels = labels[sorted_index]
    uniq, starts = np.unique(sorted_labels, return_index=True)
    ends = list(starts[1:]) + [sorted_labels.size]
    return {int(u): sorted_index[s:e] for u, s, e in zip(uniq, starts, ends)}


class _IdentityBatchSampler(Sampler[list[int]]):
    """Epoch bookkeeping, DDP sharding and resume state shared by the samplers."""

    def __init__(
        self,
        num_identities: int,
        num_instances: int,
        seed: int,
        rank: int,
        world_size: int,
        drop_last: bool,
        identity_order: str,
        always_replace: bool,
    ) -> None:
        if num_identities < 1:
            raise ValueError(f"num_identities must be >= 1, got {num_identities}")
        if num_instances < 1:
            raise ValueError(f"num_instances must be >= 1, got {num_instances}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {world_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if identity_order not in _IDENTITY_ORDERS:
            raise ValueError(
                f"identity_order must be one of {_IDENTITY_ORDERS}, got {identity_order!r}"
            )
        self.num_identities = int(num_identities)
        self.num_instances = int(num_instances)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.drop_last = drop_last
        self.identity_order = identity_order
        self.always_replace = always_replace
        self.epoch = 0
        self._position = 0
        self._resume: tuple[int, int] | None = None
        self.num_global_batches = 0  # set by subclasses
        self._fingerprint = 0

    marks_draws = True
    """Yield :class:`Draw` indices (datasets key augmentation by the draw)."""

    # --- to be provided by subclasses -------------------------------------------------
    def _batch_from_identities(self, rng: np.random.Generator, ids: np.ndarray) -> list[int]:
        raise NotImplementedError

    def _eligible_identities(self) -> np.ndarray:
        raise NotImplementedError

    # --- drawing ----------------------------------------------------------------------
    def _draw(self, rng: np.random.Generator, pool: np.ndarray, k: int) -> np.ndarray:
        """``k`` indices of ``pool``: without replacement when it has >= k, else with."""
        if self.always_replace or pool.size < k:
            return pool[rng.integers(0, pool.size, size=k)]
        return pool[rng.choice(pool.size, size=k, replace=False)]

    def _identity_groups(self, rng: np.random.Generator, count: int) -> list[np.ndarray]:
        """The identities of ``count`` batches."""
        ids = self._eligible_identities()
        P = self.num_identities
        groups: list[np.ndarray] = []
        if self.identity_order == "random":
            for _ in range(count):
                groups.append(ids[rng.choice(ids.size, size=P, replace=False)])
            return groups
        # "epoch": walk shuffled passes over all identities; a batch that straddles two
        # passes takes the new pass's identities not already in it.
        pending: list[int] = []
        while len(groups) < count:
            if len(pending) < P:
                taken = set(pending)
                pending += [int(i) for i in rng.permutation(ids) if int(i) not in taken]
            groups.append(np.asarray(pending[:P], dtype=np.int64))
            pending = pending[P:]
        return groups

    replay_length: int | None = None
    """When set (identity samplers' ``replay_length``): one order of that many batches is
    drawn once (the epoch-0 stream) and every epoch takes its ``num_batches`` batches
    from it cyclically, continuing where the previous epoch stopped -- the X-ReID code's
    sampler, built once and replayed for the whole run."""

    def global_batches(self, epoch: int | None = None) -> list[list[int]]:
        """Every batch of ``epoch`` (default: the current one) in single-process order."""
        epoch = self.epoch if epoch is None else int(epoch)
        if self.replay_length is not None:
            stream = self._drawn(0, self.replay_length)
            start = epoch * self.num_global_batches
            return [stream[(start + i) % len(stream)] for i in range(self.num_global_batches)]
        return self._drawn(epoch, self.num_global_batches)

    def _drawn(self, epoch: int, count: int) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, epoch])
        return [self._batch_from_identities(rng, ids) for ids in self._identity_groups(rng, count)]

    def rank_batches(self, epoch: int | None = None) -> list[list[int]]:
        """The batches of this rank for ``epoch``, from the start of the epoch."""
        batches = self.global_batches(epoch)
        W = self.world_size
        if self.drop_last:
            batches = batches[: len(batches) // W * W]
        else:
            while len(batches) % W:
                batches = batches + batches[: W - len(batches) % W]
        return batches[self.rank :: W]

    # --- Sampler API ------------------------------------------------------------------
    def __len__(self) -> int:
        if self.drop_last:
            return self.num_global_batches // self.world_size
        return math.ceil(self.num_global_batches / self.world_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration yields."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[list[int]]:
        start = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            start = self._resume[1]
        self._resume = None
        batches = self.rank_batches(self.epoch)
        self._position = start
        width = max((len(b) for b in batches), default=0)
        for j in range(start, len(batches)):
            self._position += 1
            if not self.marks_draws:
                yield batches[j]
                continue
            # global position of this rank's j-th batch (after the DDP padding)
            first = (self.rank + j * self.world_size) * width
            yield [Draw(i, first + k) for k, i in enumerate(batches[j])]

    # --- resume -----------------------------------------------------------------------
    def state_dict(self, batches_consumed: int | None = None) -> dict[str, Any]:
        """Epoch and position within it. ``batches_consumed`` overrides the position
        counted by the iterator (needed when a DataLoader reads ahead)."""
        position = self._position if batches_consumed is None else int(batches_consumed)
        return {
            "epoch": self.epoch,
            "position": position,
            "seed": self.seed,
            "world_size": self.world_size,
            "num_batches": len(self),
            "fingerprint": self._fingerprint,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``: the next iteration of its epoch skips the consumed
        batches (``set_epoch`` with the same epoch keeps the position)."""
        for key in ("epoch", "position", "seed", "world_size", "num_batches", "fingerprint"):
            if key not in state:
                raise ValueError(f"sampler state lacks key {key!r}")
        expected = {
            "seed": self.seed,
            "world_size": self.world_size,
            "num_batches": len(self),
            "fingerprint": self._fingerprint,
        }
        for key, value in expected.items():
            if state[key] != value:
                raise ValueError(
                    f"sampler state has {key}={state[key]!r} but this sampler has {value!r}; "
                    "the data, seed or world size changed since the state was saved"
                )
        position = int(state["position"])
        if not 0 <= position <= len(self):
            raise ValueError(f"sampler state position {position} outside [0, {len(self)}]")
        self.epoch = int(state["epoch"])
        self._position = position
        self._resume = (self.epoch, position)


class CrossModalIdentitySampler(_IdentityBatchSampler):
    """P identities x K visible + K infrared samples per batch, aligned by position.

    Batch layout (length ``2*P*K``)::

        [vis(id_1) x K, vis(id_2) x K, ..., vis(id_P) x K,
         ir(id_1) x K,  ir(id_2) x K,  ..., ir(id_P) x K]

    so ``batch[i]`` and ``batch[P*K + i]`` always share the identity; :meth:`iter_pairs`
    yields the same batches as ``(visible_index, infrared_index)`` pairs for methods
    that feed two streams. The P identities of a batch are distinct. Instances are
    drawn without replacement when the identity has at least K samples in that
    modality, with replacement otherwise (``always_replace=True`` always replaces, as
    the CAJ / CSDN ``IdentitySampler`` does).

    ``identity_order``: ``"random"`` draws each batch's identities independently
    (reference ``IdentitySampler``); ``"epoch"`` walks shuffled passes over all
    identities so that each appears about equally often.

    ``num_batches`` (global, per epoch) defaults to the reference count
    ``max(n_visible, n_infrared) // (P*K) + 1`` over the sampled identities.
    ``replay_length``: draw one stream of that many batches once and replay it
    across epochs (see :attr:`replay_length`).

    Identities with samples in only one modality cannot fill a batch: by default they
    are skipped, with a warning and their labels in ``skipped_identities``;
    ``on_missing_modality="error"`` raises instead.
    """

    def __init__(
        self,
        labels: Sequence[int],
        modalities: Sequence[Modality | int | str],
        num_identities: int,
        num_instances: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
        *,
        num_batches: int | None = None,
        identity_order: str = "random",
        always_replace: bool = False,
        on_missing_modality: str = "skip",
        replay_length: int | None = None,
    ) -> None:
        super().__init__(
            num_identities, num_instances, seed, rank, world_size, drop_last,
            identity_order, always_replace,
        )
        if on_missing_modality not in ("skip", "error"):
            raise ValueError(
                f"on_missing_modality must be 'skip' or 'error', got {on_missing_modality!r}"
            )
        self.labels = _as_label_array(labels)
        if len(modalities) != self.labels.size:
            raise ValueError(
                f"labels ({self.labels.size}) and modalities ({len(modalities)}) differ in length"
            )
        self.modalities = np.fromiter(
            (int(Modality.parse(m)) for m in modalities), dtype=np.int64, count=self.labels.size
        )
        self._vis = _positions(self.labels, np.flatnonzero(self.modalities == Modality.VISIBLE))
        self._ir = _positions(self.labels, np.flatnonzero(self.modalities == Modality.INFRARED))
        both = sorted(set(self._vis) & set(self._ir))
        self.skipped_identities = tuple(sorted(set(self._vis) ^ set(self._ir)))
        if self.skipped_identities:
            shown = ", ".join(str(i) for i in self.skipped_identities[:10])
            more = " ..." if len(self.skipped_identities) > 10 else ""
            message = (
                f"{len(self.skipped_identities)} identities have samples in only one modality "
                f"(labels {shown}{more})"
            )
            if on_missing_modality == "error":
                raise ValueError(message)
            warnings.warn(message + "; they are not sampled", stacklevel=2)
        self._ids = np.asarray(both, dtype=np.int64)
        if self.num_identities > self._ids.size:
            raise ValueError(
                f"num_identities={self.num_identities} exceeds the {self._ids.size} identities "
                "that have both visible and infrared samples"
            )
        n_vis = sum(self._vis[i].size for i in both)
        n_ir = sum(self._ir[i].size for i in both)
        per_modality = self.num_identities * self.num_instances
        if num_batches is None:
            num_batches = max(n_vis, n_ir) // per_modality + 1
        if num_batches < 1:
            raise ValueError(f"num_batches must be >= 1, got {num_batches}")
        self.num_global_batches = int(num_batches)
        if len(self) < 1:
            raise ValueError(
                f"num_batches={self.num_global_batches} gives no batch to each of "
                f"world_size={self.world_size} ranks with drop_last=True"
            )
        if replay_length is not None and replay_length < 1:
            raise ValueError(f"replay_length must be >= 1, got {replay_length}")
        self.replay_length = replay_length
        self._fingerprint = zlib.crc32(self.labels.tobytes() + self.modalities.tobytes())

    @classmethod
    def from_samples(
        cls, samples: Sequence[Sample], num_identities: int, num_instances: int, **kwargs: Any
    ) -> CrossModalIdentitySampler:
        """Build from training :class:`Sample` records (their ``label`` and ``modality``)."""
        return cls(
            [s.label for s in samples], [s.modality for s in samples],
            num_identities, num_instances, **kwargs,
        )

    @property
    def batch_size(self) -> int:
        return 2 * self.num_identities * self.num_instances

    def _eligible_identities(self) -> np.ndarray:
        return self._ids

    def _batch_from_identities(self, rng: np.random.Generator, ids: np.ndarray) -> list[int]:
        K = self.num_instances
        vis = [self._draw(rng, self._vis[int(i)], K) for i in ids]
        ir = [self._draw(rng, self._ir[int(i)], K) for i in ids]
        return np.concatenate(vis + ir).tolist()

    def iter_pairs(self) -> Iterator[list[tuple[int, int]]]:
        """The same batches as ``iter(self)``, as aligned (visible, infrared) pairs."""
        half = self.num_identities * self.num_instances
        for batch in self:
            yield list(zip(batch[:half], batch[half:]))


class IdentitySampler(_IdentityBatchSampler):
    """P identities x K samples from one pool: ``[id_1 x K, ..., id_P x K]``.

    Same seeding, DDP sharding, resume and instance drawing as
    :class:`CrossModalIdentitySampler`; ``num_batches`` defaults to ``N // (P*K)``
    (at least 1).
    """

    def __init__(
        self,
        labels: Sequence[int],
        num_identities: int,
        num_instances: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
        *,
        num_batches: int | None = None,
        identity_order: str = "random",
        always_replace: bool = False,
    ) -> None:
        super().__init__(
            num_identities, num_instances, seed, rank, world_size, drop_last,
            identity_order, always_replace,
        )
        self.labels = _as_label_array(labels)
        self._pos = _positions(self.labels)
        self._ids = np.asarray(sorted(self._pos), dtype=np.int64)
        if self.num_identities > self._ids.size:
            raise ValueError(
                f"num_identities={self.num_identities} exceeds the {self._ids.size} identities "
                "in the data"
            )
        if num_batches is None:
            num_batches = max(1, self.labels.size // (self.num_identities * self.num_instances))
        if num_batches < 1:
            raise ValueError(f"num_batches must be >= 1, got {num_batches}")
        self.num_global_batches = int(num_batches)
        if len(self) < 1:
            raise ValueError(
                f"num_batches={self.num_global_batches} gives no batch to each of "
                f"world_size={self.world_size} ranks with drop_last=True"
            )
        self._fingerprint = zlib.crc32(self.labels.tobytes())

    @property
    def batch_size(self) -> int:
        return self.num_identities * self.num_instances

    def _eligible_identities(self) -> np.ndarray:
        return self._ids

    def _batch_from_identities(self, rng: np.random.Generator, ids: np.ndarray) -> list[int]:
        K = self.num_instances
        return np.concatenate([self._draw(rng, self._pos[int(i)], K) for i in ids]).tolist()


class ShuffledBatchSampler(_IdentityBatchSampler):
    """Shuffled batches of ``range(num_items)`` (e.g. rows of cached features), with the
    same epoch, DDP-sharding and resume behaviour as the identity samplers.

    The last batch of an epoch may be smaller; ``drop_last`` only concerns the
    batches left over when sharding across ranks. Its batches are plain ints (rows of
    cached features have no augmentation to key).
    """

    marks_draws = False

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ) -> None:
        if num_items < 1:
            raise ValueError(f"num_items must be >= 1, got {num_items}")
        super().__init__(1, batch_size, seed, rank, world_size, drop_last, "random", False)
        self.num_items = int(num_items)
        self.batch_size = int(batch_size)
        self.num_global_batches = math.ceil(self.num_items / self.batch_size)
        if len(self) < 1:
            raise ValueError(
                f"{self.num_global_batches} batches give none to each of "
                f"world_size={self.world_size} ranks with drop_last=True"
            )
        self._fingerprint = zlib.crc32(f"{self.num_items}/{self.batch_size}".encode())

    def global_batches(self, epoch: int | None = None) -> list[list[int]]:
        epoch = self.epoch if epoch is None else int(epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(self.num_items)
        return [order[i : i + self.batch_size].tolist() for i in range(0, self.num_items, self.batch_size)]

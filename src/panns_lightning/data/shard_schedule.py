"""Which shards each reader slot (rank × DataLoader worker) reads, and in what order.

Train: one permutation of all shards per (seed, pass), sliced across slots, by count or by the
copies each shard is expected to emit (weight-balanced slices, each read in an order that brings
every class at an even rate), endlessly pass after pass. Val/test: every clip exactly once over
all slots (:func:`eval_shares_for_slot`). Pure functions of their arguments: no I/O.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np


def train_shards_for_slot(
    num_shards: int,
    slot: int,
    num_slots: int,
    *,
    seed: int,
    pass_index: int,
    weights: Sequence[float] | None = None,
    class_counts: np.ndarray | None = None,
) -> list[int]:
    """Shard indices one reader slot (rank × worker) reads in one pass over the train set.

    One global permutation per (seed, pass) is split across slots, so within a pass slots read
    disjoint shards and every slot gets at least one; with fewer shards than slots, slots wrap
    around the permutation and share shards. Without ``weights`` slot s takes every num_slots-th
    shard. With ``weights`` (the copies a shard is expected to emit) slices are balanced by weight
    (:func:`weighted_slices`): every slot then needs the same number of draws to finish its slice,
    so all slots finish a pass together and no shard of a pass is left unread while others are
    read twice — that, not rounding, was what skewed rare classes' counts over a pass. With
    ``class_counts`` (shards × classes, from the manifest) the slot's slice is put in an order
    that reads every class at an even rate (:func:`even_class_order`).
    """
    rng = np.random.default_rng([seed, pass_index])
    order = rng.permutation(num_shards)
    if num_shards < num_slots:
        return [int(order[slot % num_shards])]
    if weights is None:
        return [int(index) for index in order[slot::num_slots]]
    weight_array = np.asarray(weights, dtype=np.float64)
    chosen = weighted_slices(order, weight_array, num_slots, rng)[slot]
    if class_counts is None:
        return chosen
    return even_class_order(chosen, weight_array, class_counts)


def even_class_order(shards: Sequence[int], weights: np.ndarray, class_counts: np.ndarray) -> list[int]:
    """Reorder a slot's shards so that every class's clips arrive at an even rate through the pass.

    A stream can only draw clips it has read: in a random order, after half a pass a rare class
    may have had a third or two thirds of its shards read, and its draw count swings with it.
    Greedy: at each step take the shard that keeps every class's fraction read closest (squared
    error, each class weighted alike) to the fraction of the pass's weight read. ``shards`` comes
    in a random order per pass, which breaks ties, so passes still differ.
    """
    if len(shards) <= 2:
        return list(shards)
    index = np.asarray(shards)
    counts = class_counts[index].astype(np.float64)
    present = counts.sum(axis=0) > 0
    fractions = counts[:, present] / counts[:, present].sum(axis=0)
    shard_weights = weights[index] / max(float(weights[index].sum()), 1e-12)
    # Σ_c (a_c + f_c − p)² expanded, so that a step costs one matrix-vector product:
    # Σa² − 2pΣa + C·p² + 2 f·a − 2p Σf + Σf², with a the fractions read, f a candidate's, p the progress.
    row_sums = fractions.sum(axis=1)
    row_squares = (fractions**2).sum(axis=1)
    num_classes = fractions.shape[1]
    remaining = np.ones(len(index), dtype=bool)
    read_fraction = np.zeros(num_classes)
    read_weight = 0.0
    ordered: list[int] = []
    for _ in range(len(index)):
        candidates = np.flatnonzero(remaining)
        progress = read_weight + shard_weights[candidates]
        total = read_fraction.sum()
        score = (
            read_fraction @ read_fraction
            - 2 * progress * total
            + num_classes * progress**2
            + 2 * (fractions[candidates] @ read_fraction)
            - 2 * progress * row_sums[candidates]
            + row_squares[candidates]
        )
        best = candidates[int(np.argmin(score))]
        remaining[best] = False
        read_fraction += fractions[best]
        read_weight += shard_weights[best]
        ordered.append(int(index[best]))
    return ordered


def weighted_slices(
    order: np.ndarray, weights: np.ndarray, num_slots: int, rng: np.random.Generator
) -> list[list[int]]:
    """Split shards into ``num_slots`` slices of near-equal total weight, each listed in ``order``.

    Greedy longest-processing-time on weights jittered by ±25 % (log-normal), so that slices
    change from pass to pass instead of pinning each slot to the same shards forever.
    """
    jittered = weights[order] * np.exp(0.25 * rng.standard_normal(len(order)))
    loads = [(0.0, 0, slot) for slot in range(num_slots)]  # (weight, shard count, slot): empty slots first
    heapq.heapify(loads)
    assigned: list[list[int]] = [[] for _ in range(num_slots)]
    for position in np.argsort(-jittered, kind="stable"):
        load, count, slot = heapq.heappop(loads)
        assigned[slot].append(int(position))
        heapq.heappush(loads, (load + float(weights[order[position]]), count + 1, slot))
    return [[int(order[position]) for position in sorted(positions)] for positions in assigned]


def train_shard_schedule(
    num_shards: int, slot: int, num_slots: int, *, seed: int, start: int = 0
) -> Iterator[tuple[int, int]]:
    """The endless (pass_index, shard_index) sequence of one slot: its pass slices one after another.

    ``start`` skips that many entries, so that an epoch can resume where the previous one stopped
    instead of re-permuting (which would read some shards every epoch and others rarely).
    """
    per_pass = len(train_shards_for_slot(num_shards, slot, num_slots, seed=seed, pass_index=0))
    pass_index, offset = divmod(start, per_pass)
    while True:
        shard_indices = train_shards_for_slot(num_shards, slot, num_slots, seed=seed, pass_index=pass_index)
        for shard_index in shard_indices[offset:]:
            yield pass_index, shard_index
        pass_index, offset = pass_index + 1, 0


def weighted_train_schedule(
    num_shards: int,
    slot: int,
    num_slots: int,
    *,
    seed: int,
    weights: Sequence[float],
    start: float = 0.0,
    class_counts: np.ndarray | None = None,
) -> Iterator[tuple[int, int, float]]:
    """Like :func:`train_shard_schedule` on weight-balanced slices, yielding (pass, shard, position).

    ``position`` is the cumulative shard weight of the slot's schedule before that shard; the first
    shard yielded is the one holding position ``start``, so a reader can skip its clips before it.
    """
    pass_index, position = 0, 0.0
    while True:
        shards = train_shards_for_slot(
            num_shards, slot, num_slots, seed=seed, pass_index=pass_index, weights=weights, class_counts=class_counts
        )
        for shard_index in shards:
            following = position + float(weights[shard_index])
            if following > start or (following == position and position >= start):
                yield pass_index, shard_index, position
            position = following
        if position <= 0:
            raise ValueError("weighted_train_schedule: every shard has weight 0")
        pass_index += 1


@dataclass(frozen=True)
class EvalShardShare:
    """One slot's share of one shard: keep the clips whose position ``i`` has ``i % stride == offset``."""

    shard_index: int
    stride: int
    offset: int


def eval_shares_for_slot(num_shards: int, slot: int, num_slots: int) -> list[EvalShardShare]:
    """What one slot reads for val/test so that all slots together see every clip exactly once.

    Shard-level split when there are at least as many shards as slots; otherwise slot ``s`` reads
    shard ``s % num_shards`` and the slots sharing a shard split it by clip position.
    """
    if num_shards >= num_slots:
        return [EvalShardShare(index, 1, 0) for index in range(slot, num_shards, num_slots)]
    shard_index = slot % num_shards
    sharing_slots = len(range(shard_index, num_slots, num_shards))
    return [EvalShardShare(shard_index, sharing_slots, slot // num_shards)]

"""A validation set held out from the training clips, stratified by label, before any audio is read.

Model selection (``best.ckpt`` by ``val/mAP``) must not look at the set the final test reports,
so ``panns-prepare audioset --val-fraction F`` splits the training CSV's clips into two shard
sets. Multi-label clips cannot be split per class independently, so the split is *iterative
stratification* (Sechidis, Tsoumakas & Vlahavas 2011): labels are taken rarest first (fewest
clips still unassigned), and each of that label's unassigned clips goes to the side that still
wants the most clips of that label, ties to the side that wants the most clips overall, then
by the seeded random generator. One change: a label's clips are dealt in random order except
that clips carrying a class that already has its val share come first (so they go to training);
otherwise holding out rare classes over-fills the head classes they co-occur with (3 % instead
of 2 % of a head class in a 527-class simulation).

What each class wants on the val side is ``F * n`` clips, with two adjustments for small classes:

- a class with at least 2 clips wants at least 1 val clip, so every such class is scored by the
  validation mAP (a class absent from val would silently drop out of model selection);
- a class with 1 clip wants none: it stays in training.

Afterwards training is repaired to keep at least one clip of every class (co-occurring labels can
pull a small class's clips to val): such a class's val clip with the fewest labels moves back.
In simulations (long-tailed labels, 1-4 per clip, 12 to 527 classes) classes with ``n >= 1 / F``
clips ended within a few clips of ``F * n`` on the val side (1-2 at AudioSet-like shapes), and
the val set within half a percentage point of ``F``, more where many classes have ``n < 1 / F``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from panns_lightning.shardset.format import shard_key
from panns_lightning.shardset.records import ClipRecord

METHOD = "iterative stratification (Sechidis et al. 2011), rarest label first; >=1 val clip per class with >=2 clips; training keeps >=1 clip per class"

_TRAIN, _VAL = 0, 1


@dataclass(frozen=True)
class Holdout:
    """Positions (indices into the input) of the training and the validation side, each ascending."""

    train: list[int]
    val: list[int]


def check_fraction(fraction: float) -> float:
    """The fraction as a float, or ``ValueError`` saying what is expected."""
    try:
        value = float(fraction)
    except (TypeError, ValueError):
        raise ValueError(f"val fraction must be a number between 0 and 1 (exclusive), got {fraction!r}") from None
    if not 0.0 < value < 1.0:
        raise ValueError(f"val fraction must be between 0 and 1 (exclusive), e.g. 0.02, got {fraction!r}")
    return value


def stratified_holdout(label_lists: Sequence[Sequence[int]], fraction: float, *, seed: int = 0) -> Holdout:
    """Split clip positions into train / val, stratified by label (see the module docstring).

    Deterministic for a given input order, ``fraction`` and ``seed``. Clips without labels go to
    the side that still wants the most clips overall.
    """
    fraction = check_fraction(fraction)
    rng = np.random.default_rng(seed)
    labels = [sorted({int(c) for c in clip}) for clip in label_lists]
    by_label: dict[int, list[int]] = defaultdict(list)
    for position, clip in enumerate(labels):
        for c in clip:
            by_label[c].append(position)
    counts = {c: len(positions) for c, positions in by_label.items()}
    want_val = {c: (0.0 if n < 2 else max(fraction * n, 1.0)) for c, n in counts.items()}
    wanted = {c: [n - want_val[c], want_val[c]] for c, n in counts.items()}
    wanted_total = [(1.0 - fraction) * len(labels), fraction * len(labels)]
    side = [-1] * len(labels)
    remaining = dict(counts)
    label_rank = {c: int(r) for c, r in zip(sorted(counts), rng.permutation(len(counts)))}

    def assign(position: int, chosen: int) -> None:
        side[position] = chosen
        wanted_total[chosen] -= 1
        for c in labels[position]:
            wanted[c][chosen] -= 1
            remaining[c] -= 1

    def val_appetite(position: int, label: int) -> float:
        # Negative when another of the clip's classes already has its val share: deal it first.
        # Clipped at 0, so clips are not preferred for val for carrying more labels.
        return min([0.0, *(wanted[c][_VAL] / counts[c] for c in labels[position] if c != label)])

    open_labels = set(counts)
    while open_labels:
        label = min(open_labels, key=lambda c: (remaining[c], label_rank[c]))
        open_labels.discard(label)
        shuffled = [by_label[label][int(i)] for i in rng.permutation(len(by_label[label]))]
        for position in sorted((p for p in shuffled if side[p] < 0), key=lambda p: val_appetite(p, label)):
            demand = wanted[label]
            if demand[_TRAIN] != demand[_VAL]:
                chosen = _TRAIN if demand[_TRAIN] > demand[_VAL] else _VAL
            elif wanted_total[_TRAIN] != wanted_total[_VAL]:
                chosen = _TRAIN if wanted_total[_TRAIN] > wanted_total[_VAL] else _VAL
            else:
                chosen = int(rng.integers(2))
            assign(position, chosen)
        open_labels = {c for c in open_labels if remaining[c] > 0}
    for position in rng.permutation(len(labels)):
        if side[int(position)] < 0:
            assign(int(position), _TRAIN if wanted_total[_TRAIN] >= wanted_total[_VAL] else _VAL)
    _keep_every_class_in_training(labels, by_label, side)
    return Holdout(
        train=[p for p, s in enumerate(side) if s == _TRAIN],
        val=[p for p, s in enumerate(side) if s == _VAL],
    )


def _keep_every_class_in_training(labels: list[list[int]], by_label: dict[int, list[int]], side: list[int]) -> None:
    """Move one val clip back for any class left without a training clip (rarest classes first)."""
    for label in sorted(by_label, key=lambda c: (len(by_label[c]), c)):
        positions = by_label[label]
        if any(side[p] == _TRAIN for p in positions):
            continue
        side[min(positions, key=lambda p: (len(labels[p]), p))] = _TRAIN


def class_counts(label_lists: Sequence[Sequence[int]], positions: Sequence[int]) -> dict[int, int]:
    """Clips per class among ``positions`` (for reports and tests)."""
    counts: dict[int, int] = defaultdict(int)
    for position in positions:
        for c in set(label_lists[position]):
            counts[int(c)] += 1
    return dict(counts)


def split_records(
    records: Sequence[ClipRecord], fraction: float, *, seed: int = 0
) -> tuple[list[ClipRecord], list[ClipRecord]]:
    """``(train, val)`` records, split by :func:`stratified_holdout`, each in input order.

    Records with one key (one clip listed twice; the shard writer refuses such a set) are one
    unit here, so a clip can never be written into both sets.
    """
    first: dict[str, int] = {}
    for position, record in enumerate(records):
        first.setdefault(shard_key(record.key), position)
    units = sorted(first.values())
    split = stratified_holdout([records[p].labels for p in units], fraction, seed=seed)
    val_keys = {shard_key(records[units[p]].key) for p in split.val}
    train = [r for r in records if shard_key(r.key) not in val_keys]
    val = [r for r in records if shard_key(r.key) in val_keys]
    return train, val

"""Repeat factors and due positions: how many copies of a clip the balanced train stream emits, and when.

A clip read from a shard is emitted ``k`` times, ``k`` an integer rounding (:func:`rotating_round`)
of ``ρ·E_i`` with ``E_i = (N/C)·Σ_{c∈labels(i)} 1/n_c`` (:class:`ClassBalanceFactor`); copy j of a
clip read at stream position x falls due at x + j·gap (:func:`due_positions`), over at most
:func:`copy_window` draws. The reasoning is in ``train_stream.py``'s docstring.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence


class ClassBalanceFactor:
    """E(labels) = (N/C)·Σ_{c∈labels} 1/n_c: mean 1 over the set, rare classes' clips repeated more.

    C counts only classes that have clips; a label whose manifest count is 0 (inconsistent
    manifest) is treated as count 1 rather than dividing by zero. A class, not a closure, so that
    datasets holding it can be pickled into spawned workers.
    """

    def __init__(self, class_counts: Sequence[int], num_clips: int) -> None:
        present = sum(1 for count in class_counts if count > 0)
        if present == 0 or num_clips <= 0:
            raise ValueError("balanced sampling needs a manifest with at least one labelled clip")
        self._inverse = [1.0 / max(count, 1) for count in class_counts]
        self._scale = num_clips / present
        self._rarest = min(count for count in class_counts if count > 0)

    def __call__(self, labels: Sequence[int]) -> float:
        inverse = self._inverse
        return self._scale * sum(inverse[index] for index in labels if 0 <= index < len(inverse))

    def largest(self) -> float:
        """E of a clip labelled with the rarest present class only."""
        return self._scale / self._rarest

    def total(self, class_counts: Sequence[int]) -> float:
        """Σ E over a group of clips (e.g. a shard) from its per-class clip counts alone."""
        inverse = self._inverse
        return self._scale * sum(
            count * inverse[index] for index, count in enumerate(class_counts) if index < len(inverse)
        )


def rotating_round(value: float, phase: float, pass_index: int) -> int:
    """floor(value), plus one in a fraction frac(value) of passes, evenly spaced over passes.

    Averaged over passes this is ``value`` exactly; ``phase`` in [0, 1) staggers clips so that
    clips with the same value do not all get their extra copy in the same pass.
    """
    whole = math.floor(value)
    fraction = value - whole
    return whole + math.floor(phase + (pass_index + 1) * fraction) - math.floor(phase + pass_index * fraction)


def clip_phase(seed: int, key: str) -> float:
    """A per-clip number in [0, 1) that is the same in every worker, rank and pass."""
    return zlib.crc32(f"{seed}/{key}".encode()) / 2**32


def copy_window(factor: ClassBalanceFactor | None, repeat_scale: float, spread: int, batch_size: int) -> float:
    """Draws over which one clip's copies are spread at most (also what an epoch re-reads of the last).

    Wide enough for a clip labelled only with the rarest class to get one copy per batch, and at
    least ``spread`` (``repeat_spread``): ``max(spread, k₁·batch_size)``, k₁ that clip's copies per
    pass. Clips with more copies (several rare labels) get them closer than one per batch.
    Epoch e re-reads this much (in draws, /ρ in clips) of epoch e-1, so no shard is read twice
    in an epoch while ``copy_window + draws per worker and epoch`` fit in a worker's pass.
    0 without balancing (``factor`` None).
    """
    if factor is None:
        return 0.0
    rarest_copies = math.ceil(repeat_scale * factor.largest())
    return float(max(spread, rarest_copies * batch_size))


def due_positions(
    position: float, copies: int, *, batch_size: int, spread: int, window: float, mean_copies: float
) -> list[float]:
    """Stream positions at which the ``copies`` copies of a clip read at ``position`` fall due.

    Copy j falls due at ``position + j·gap``: at least one batch of draws apart (a batch holds a
    clip once), ``spread / copies`` draws apart when that is wider, never wider than ``window``
    allows; positions count clips read, so draws are divided by ``mean_copies`` (ρ).
    """
    if copies <= 1:
        return [position] * copies
    gap_draws = max(batch_size, spread / copies)
    gap_draws = min(gap_draws, window / (copies - 1))
    gap = gap_draws / mean_copies
    return [position + copy * gap for copy in range(copies)]

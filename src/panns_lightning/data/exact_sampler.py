"""PANNs' balanced draw sequence as one global, resumable sequence (``data.sampler=panns``).

The algorithm is upstream's BalancedTrainSampler (``diagnostics/reference.py`` is the yardstick
the tests compare with, clip for clip): a shuffled queue of the classes that have clips; each
draw pops the next class and takes the next clip of that class's shuffled list, reshuffling the
list when it is used up and refilling the queue with a new permutation when it is empty.

What this version adds is what training on several processes needs:

- one sequence for the whole run, addressed by position: rank r of W takes draws
  ``[s·B·W + r·B, s·B·W + (r+1)·B)`` at global step s, so one GPU at batch B·W and W GPUs at
  batch B see the same clips per step, as a single upstream process would;
- the state is (seed, position): :meth:`BalancedSequence.skip` moves ahead without drawing clip
  by clip (a round of C draws is one permutation plus vectorised pointer updates; only lists
  that run out are reshuffled, which the sequence must do anyway), so a DataLoader worker
  starting at step 10⁵ of a run, or a resumed run, reaches its position in seconds;
- compact state: class lists are int32 arrays (AudioSet: ~4 M entries, 16 MB), not Python lists.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class BalancedSequence:
    """Endless draws of (clip, anchor class); identical to ``PannsBalancedSampler(seed)`` clip for clip.

    ``class_members[c]`` lists the clips holding class c (ascending, as the reference builds
    them); classes without clips are left out of the queue.
    """

    def __init__(self, class_members: Sequence[np.ndarray], *, seed: int) -> None:
        self.seed = int(seed)
        self._rng = np.random.default_rng(self.seed)
        # The reference shuffles every class's list once, in class order, before the first draw.
        self._members = [self._rng.permutation(np.asarray(m, dtype=np.int32)) for m in class_members]
        self._sizes = np.array([m.shape[0] for m in self._members], dtype=np.int64)
        self._classes = np.flatnonzero(self._sizes > 0).astype(np.int64)
        if self._classes.size == 0:
            raise ValueError("the balanced sampler needs at least one labelled clip")
        self._pointers = np.zeros(len(self._members), dtype=np.int64)
        self._round: list[int] = []
        self._round_position = 0
        self.position = 0  # draws made so far

    @property
    def num_classes(self) -> int:
        return len(self._members)

    def members(self, label: int) -> np.ndarray:
        """Class ``label``'s clips in their current shuffled order (read-only use)."""
        return self._members[label]

    def draw(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """The next ``count`` draws: (clip indices, the class each was drawn for)."""
        clips = np.empty(count, dtype=np.int64)
        anchors = np.empty(count, dtype=np.int64)
        for i in range(count):
            anchors[i] = label = self._next_class()
            clips[i] = self._next_member(label)
        self.position += count
        return clips, anchors

    def skip(self, count: int) -> None:
        """Advance ``count`` draws without returning them (the state ends as if they were drawn)."""
        if count < 0:
            raise ValueError(f"cannot skip backwards ({count} draws)")
        target = self.position + count
        while self.position < target and self._round_position < len(self._round):
            self._next_member(self._next_class())
            self.position += 1
        per_round = int(self._classes.size)
        while target - self.position >= per_round:
            self._skip_round()
            self.position += per_round
        while self.position < target:
            self._next_member(self._next_class())
            self.position += 1

    def _next_class(self) -> int:
        if self._round_position == len(self._round):
            self._round = self._rng.permutation(self._classes).tolist()
            self._round_position = 0
        label = self._round[self._round_position]
        self._round_position += 1
        return label

    def _next_member(self, label: int) -> int:
        pointer = int(self._pointers[label])
        members = self._members[label]
        if pointer == members.shape[0]:
            self._rng.shuffle(members)
            pointer = 0
        self._pointers[label] = pointer + 1
        return int(members[pointer])

    def _skip_round(self) -> None:
        """One whole round of the class queue at once: every class is drawn once, in the round's order.

        A class whose list is used up is reshuffled at its turn; the reshuffles draw from the
        generator in the round's order, exactly as drawing clip by clip would.
        """
        order = self._rng.permutation(self._classes)
        exhausted = order[self._pointers[order] == self._sizes[order]]
        for label in exhausted.tolist():
            self._rng.shuffle(self._members[label])
        self._pointers[exhausted] = 0
        self._pointers[self._classes] += 1
        self._round, self._round_position = [], 0


def draw_position(
    origin: tuple[int, int, int], epoch: int, batch: int, *, steps_per_epoch: int, draws_per_step: int
) -> int:
    """The global draw position where ``batch`` of ``epoch`` starts, counted from ``origin``.

    ``origin`` is (epoch, batch, position) of a known point: (0, 0, 0) for a fresh run, the
    checkpoint's sampler state for a resumed one. Steps after it take ``draws_per_step`` (= batch
    size × world size) draws each, so a run resumed on another number of GPUs goes on from the
    checkpoint's position rather than from a position its own world size would give.
    """
    origin_epoch, origin_batch, origin_position = origin
    steps = (epoch - origin_epoch) * steps_per_epoch + (batch - origin_batch)
    position = origin_position + steps * draws_per_step
    if position < 0:
        raise ValueError(f"epoch {epoch} batch {batch} lies before the sampler's origin {origin}")
    return position

"""An integer the main process and its DataLoader workers share (the epoch, error counts)."""

from __future__ import annotations

import multiprocessing
from multiprocessing.context import get_spawning_popen
from typing import Any

from torch.utils.data import get_worker_info


class SharedCount:
    """Integers visible to the main process and its DataLoader workers (fork or spawn).

    Each process writes only its own slot (slot 0: the main process, 1 + worker id: a worker), so
    no lock is needed; ``value`` is the sum. Lock-free raw shared memory also travels to workers
    started in any multiprocessing context, which a ``multiprocessing.Value`` lock does not.
    Copied any other way (deepcopy, pickle outside process start) it degrades to private ints.
    """

    _SLOTS = 65

    def __init__(self, value: int = 0) -> None:
        self._slots: Any = multiprocessing.RawArray("q", self._SLOTS)
        self._slots[0] = value

    @property
    def value(self) -> int:
        return int(sum(self._slots))

    @value.setter
    def value(self, new: int) -> None:
        """Set the total (meant for the main process, e.g. the epoch, while no worker runs)."""
        for slot in range(1, len(self._slots)):
            self._slots[slot] = 0
        self._slots[0] = new

    def add(self, amount: int = 1) -> None:
        info = get_worker_info()
        slot = 0 if info is None else 1 + info.id % (len(self._slots) - 1)
        self._slots[slot] += amount

    def __getstate__(self) -> dict[str, Any]:
        if get_spawning_popen() is not None:  # travelling to a new worker: share
            return {"_slots": self._slots}
        return {"_slots": list(self._slots)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._slots = state["_slots"]

"""Decoding in worker processes, where no single file can end or stall a conversion.

:func:`convert_all` runs one function over many tasks in a process pool and yields the results
in task order, with a bounded window of chunks in flight (memory stays flat). Two things a
hostile file can do to a decoder are contained here, for every converter alike:

- **it kills the worker** (a segfault or abort in libsndfile / mpg123): the pool breaks, and the
  chunks that were in flight are redone one clip per fresh process, so that only the culprit is
  lost (``decoder crashed: ...``);
- **it hangs the decoder** (an endless loop in C, a read that never returns): each worker writes
  into shared memory which task it decodes since when; while the main process waits for results
  it checks those clocks, and a task past ``timeout`` seconds has its worker killed (SIGKILL: a
  decoder stuck in C code ignores anything gentler). That task is reported (``decode timed out
  after N s``); the other tasks of the broken pool are innocent and are resubmitted to a fresh
  one. The clock starts when the worker picks the task up, so queueing and process start-up do
  not count.

``workers=0`` runs everything in this process: simplest to debug, but then neither a crash nor
a hang can be contained.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

CHUNK_SIZE = 8  # tasks per pool submission: amortises inter-process overhead, keeps the order window small
CRASHED = "decoder crashed: the worker process died while decoding this file"
_PARENT_POLL_SECONDS = 0.5
_MAX_POLL_SECONDS = 1.0

Task = TypeVar("Task")
Result = TypeVar("Result")


def timed_out_reason(seconds: float) -> str:
    """The skip reason of a task stopped by the timeout."""
    return f"decode timed out after {seconds:g} s"


def convert_all(
    tasks: Sequence[Task],
    convert: Callable[[Task], Result],
    failed: Callable[[Task, str], Result],
    *,
    workers: int,
    timeout: float | None = None,
) -> Iterator[Result]:
    """``convert(task)`` for every task, in order, in ``workers`` processes (0: in this one).

    ``convert`` must be a module-level function (it is pickled by name) that reports a bad input
    in its result rather than raising. A task whose worker died, that ran longer than
    ``timeout`` seconds (None or 0: no limit), or whose ``convert`` raised all the same, yields
    ``failed(task, reason)`` instead: one task never costs another.
    """
    if workers <= 0:
        for task in tasks:
            result = _guarded(convert, task)
            yield _settled(failed, task, result)
        return
    yield from _Conversion(convert, failed, workers, timeout or None).run(tasks)


# --------------------------------------------------------------------------- the pool


class _WatchedPool:
    """A process pool whose workers record, in shared memory, which task they run since when."""

    def __init__(self, workers: int, timeout: float | None) -> None:
        self.timeout = timeout
        self.task = multiprocessing.RawArray("q", [-1] * workers)
        self.since = multiprocessing.RawArray("d", workers)
        self.pids = multiprocessing.RawArray("q", workers)
        self.next_slot = multiprocessing.Value("i", 0)
        self.broken = False  # its workers are gone (killed by us or by the executor): never signal them again
        self.stopped_overdue = False
        self.executor = ProcessPoolExecutor(
            max_workers=workers,
            initializer=_init_worker,
            initargs=(self.task, self.since, self.pids, self.next_slot),
        )

    def submit(self, chunk: Sequence[tuple[int, Any]], convert: Callable[[Any], Any]) -> Future:
        return self.executor.submit(_run_chunk, chunk, convert)

    def stop_overdue(self, timed_out: set[int]) -> None:
        """SIGKILL every worker whose task has run past the timeout (the task joins ``timed_out``); the pool breaks."""
        if self.timeout is None or self.broken:
            return
        now = time.monotonic()
        for slot in range(len(self.task)):
            started = self.since[slot]
            index = self.task[slot]
            # Re-read the start: unchanged means ``index`` is the task that started then.
            if started > 0 and index >= 0 and now - started > self.timeout and self.since[slot] == started:
                timed_out.add(int(index))
                self.stopped_overdue = True
                _kill(int(self.pids[slot]))
        if self.stopped_overdue:
            self.broken = True

    def kill_workers(self) -> None:
        if not self.broken:
            self.broken = True
            for pid in self.pids:
                _kill(int(pid))

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


@dataclass
class _InFlight(Generic[Task]):
    """One chunk of (index, task) and the submission computing the tasks listed in ``submitted``."""

    chunk: Sequence[tuple[int, Task]]
    submitted: list[int]
    future: Future
    pool: _WatchedPool
    resubmitted: bool = False


class _Conversion(Generic[Task, Result]):
    """One :func:`convert_all` run over a pool: submission, the order window, and recovery."""

    def __init__(
        self,
        convert: Callable[[Task], Result],
        failed: Callable[[Task, str], Result],
        workers: int,
        timeout: float | None,
    ) -> None:
        self.convert = convert
        self.failed = failed
        self.workers = workers
        self.timeout = timeout
        self.timed_out: set[int] = set()
        self.pending: deque[_InFlight[Task]] = deque()
        self.pools: list[_WatchedPool] = []
        self.pool = self._new_pool(workers)

    def run(self, tasks: Sequence[Task]) -> Iterator[Result]:
        indexed = list(enumerate(tasks))
        finished = False
        try:
            for start in range(0, len(indexed), CHUNK_SIZE):
                self.pending.append(self._submit(indexed[start : start + CHUNK_SIZE]))
                if len(self.pending) >= 4 * self.workers:
                    yield from self._collect(self.pending.popleft())
            while self.pending:
                yield from self._collect(self.pending.popleft())
            finished = True
        finally:
            for pool in self.pools:
                if not finished:  # an error or an abandoned generator: a hung worker must not block shutdown
                    pool.kill_workers()
                pool.shutdown()

    def _new_pool(self, workers: int) -> _WatchedPool:
        pool = _WatchedPool(workers, self.timeout)
        self.pools.append(pool)
        return pool

    def _submit(self, chunk: Sequence[tuple[int, Task]]) -> _InFlight[Task]:
        work = [(index, task) for index, task in chunk if index not in self.timed_out]
        try:
            future = self.pool.submit(work, self.convert)
        except BrokenProcessPool:
            self.pool.broken = True
            self.pool = self._new_pool(self.workers)
            future = self.pool.submit(work, self.convert)
        return _InFlight(chunk, [index for index, _ in work], future, self.pool)

    def _wait(self, future: Future) -> Any:
        """The future's result; meanwhile every pool's workers past the timeout are stopped."""
        if self.timeout is None:
            return future.result()
        poll = min(_MAX_POLL_SECONDS, self.timeout / 4)
        while True:
            try:
                return future.result(timeout=poll)
            except concurrent.futures.TimeoutError:
                for pool in self.pools:
                    pool.stop_overdue(self.timed_out)

    def _collect(self, entry: _InFlight[Task]) -> list[Result]:
        while True:
            try:
                results = dict(zip(entry.submitted, self._wait(entry.future)))
            except BrokenProcessPool:
                entry.pool.broken = True
                if entry.pool.stopped_overdue and not entry.resubmitted:
                    self._resubmit_broken(entry)
                    continue
                return [self._isolated(index, task) for index, task in entry.chunk]
            return [
                _settled(self.failed, task, results[index])
                if index in results
                else self.failed(task, self._reason(index))
                for index, task in entry.chunk
            ]

    def _resubmit_broken(self, entry: _InFlight[Task]) -> None:
        """Our timeout kill broke ``entry``'s pool: the culprits are known, so redo the other tasks in a fresh pool."""
        broken = entry.pool
        if self.pool is broken:
            self.pool = self._new_pool(self.workers)
        others = [other for other in self.pending if other.pool is broken]
        concurrent.futures.wait([other.future for other in others])  # the pool is broken: they all settle
        for failed in [entry, *(other for other in others if other.future.exception() is not None)]:
            again = self._submit(failed.chunk)
            failed.submitted, failed.future, failed.pool = again.submitted, again.future, again.pool
            failed.resubmitted = True

    def _isolated(self, index: int, task: Task) -> Result:
        """Run one task in a process of its own: if that process dies, this task is the culprit."""
        if index in self.timed_out:
            return self.failed(task, self._reason(index))
        solo = self._new_pool(1)
        try:
            return _settled(self.failed, task, self._wait(solo.submit([(index, task)], self.convert))[0])
        except BrokenProcessPool:
            return self.failed(task, self._reason(index))
        finally:
            solo.broken = True
            solo.shutdown()
            self.pools.remove(solo)

    def _reason(self, index: int) -> str:
        if index in self.timed_out and self.timeout is not None:
            return timed_out_reason(self.timeout)
        return CRASHED


def _kill(pid: int) -> None:
    if pid <= 0:
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# --------------------------------------------------------------------------- in the workers

# This worker's (task, since, slot) in its pool's shared arrays; None: not tracked.
_SLOT: tuple[Any, Any, int] | None = None


def _init_worker(task: Any, since: Any, pids: Any, next_slot: Any) -> None:
    global _SLOT
    import torch

    torch.set_num_threads(1)  # one process per core already; avoid oversubscription
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), name="exit-with-parent", daemon=True).start()
    with next_slot.get_lock():
        slot = next_slot.value
        next_slot.value += 1
    if slot < len(task):
        pids[slot] = os.getpid()
        _SLOT = (task, since, slot)


def _run_chunk(chunk: Sequence[tuple[int, Any]], convert: Callable[[Any], Any]) -> list[Any]:
    results = []
    for index, task in chunk:
        _mark(index)
        results.append(_guarded(convert, task))
    _mark(None)
    return results


@dataclass(frozen=True)
class _Raised:
    """``convert`` raised instead of reporting: the reason, carried back to the parent for ``failed``."""

    reason: str


def _guarded(convert: Callable[[Any], Any], task: Any) -> Any:
    try:
        return convert(task)
    except Exception as error:  # a bug on one odd input must cost that input only
        return _Raised(f"{type(error).__name__}: {error}")


def _settled(failed: Callable[[Any, str], Any], task: Any, result: Any) -> Any:
    """``result``, or ``failed(task, reason)`` where ``convert`` raised."""
    return failed(task, result.reason) if isinstance(result, _Raised) else result


def _mark(index: int | None) -> None:
    """Record in shared memory that this worker now runs task ``index`` (None: idle)."""
    if _SLOT is None:
        return
    task, since, slot = _SLOT
    since[slot] = 0.0  # first: the parent never pairs the new index with the old start
    task[slot] = -1 if index is None else index
    if index is not None:
        since[slot] = time.monotonic()


def _exit_with_parent(parent_pid: int) -> None:
    """End this worker once the converter is gone (``kill -9``, OOM killer).

    A pool worker blocks on its task queue forever when its parent dies without closing it, so
    every ``kill -9`` would leave one orphan per worker holding a torch import's memory.
    """
    while os.getppid() == parent_pid:
        time.sleep(_PARENT_POLL_SECONDS)
    os._exit(1)

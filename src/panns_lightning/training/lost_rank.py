"""Which rank was lost when a collective fails: a heartbeat per rank in the rendezvous store.

When a rank dies (killed, out of memory, its node gone) the others learn it from a collective
that fails: gloo at once with ``Connection closed by peer`` (or after the process group's timeout,
``trainer.ddp_timeout_s``, when a node vanishes without closing its sockets), NCCL when its
watchdog times the collective out. The error names a socket, not a rank. So every rank bumps a
counter in the process group's store from a daemon thread every ``period_s`` (the thread runs
while the main thread waits inside a collective, which releases the GIL). After a failure a
survivor announces itself and watches the counters for a few periods (:meth:`LostRankWatch.diagnose`):

- a rank whose counter stopped and that did not announce itself is lost;
- when the store itself stops answering, the process that hosted it is gone: rank 0 (Lightning's
  launcher and SLURM start the store in rank 0) or the node whose torchrun agent held it;
- under Lightning's own launcher rank 0 is the parent of the other local ranks and sees at once
  which child died (before Lightning's process observer kills everything, within 5 s).

The lowest rank still alive reports; the others stop quietly. The report (which rank, on which
host, at which step) is turned into one line by the app (``cli/train.py``), which adds the last
checkpoint and the command that resumes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch.distributed as dist

log = logging.getLogger(__name__)

PREFIX = "panns_lost_rank"


@dataclass(frozen=True)
class LostRankReport:
    """What a survivor found out after a collective failed."""

    rank: int
    world_size: int
    global_step: int
    # Ranks whose heartbeat stopped (or whose process ended), with their hosts when known.
    lost: tuple[int, ...]
    hosts: dict[int, str] = field(default_factory=dict)
    # The store stopped answering: the process hosting it (:func:`store_host`) is gone.
    store_lost: bool = False
    store_host: str = "rank 0"
    # This rank is the lowest one still alive: it reports, the others stop quietly.
    reporter: bool = True

    def describe(self) -> str:
        """``rank 1 (host gpu7) of 2 was lost`` / ``ranks 4, 5 of 8 were lost`` / the store's host named as lost."""
        if self.store_lost and not self.lost:
            return f"{self.store_host} of {self.world_size} ranks was lost (the rendezvous store it hosted stopped answering)"
        names = ", ".join(
            f"{rank} (host {self.hosts[rank]})" if rank in self.hosts else str(rank) for rank in self.lost
        )
        noun, verb = ("rank", "was") if len(self.lost) == 1 else ("ranks", "were")
        return f"{noun} {names} of {self.world_size} {verb} lost"


class LostRankWatch(L.Callback):
    """Start the heartbeat once the process group exists; name the lost ranks after a failure.

    A no-op in a single process. ``period_s`` is the heartbeat interval; a survivor watches
    ``watch_periods`` of them before it calls a silent rank lost.
    """

    def __init__(self, period_s: float = 0.5, watch_periods: int = 3) -> None:
        if period_s <= 0 or watch_periods < 2:
            raise ValueError(
                f"callbacks.lost_rank: period_s must be > 0 and watch_periods >= 2, got {period_s}, {watch_periods}"
            )
        self.period_s = float(period_s)
        self.watch_periods = int(watch_periods)
        self.heartbeat: Heartbeat | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.heartbeat is not None or not (dist.is_available() and dist.is_initialized()):
            return
        if dist.get_world_size() < 2:
            return
        store = default_store()
        if store is None:
            log.warning("lost-rank watch off: this torch does not expose the process group's store")
            return
        self.heartbeat = Heartbeat(store, dist.get_rank(), dist.get_world_size(), self.period_s)
        self.heartbeat.start()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # After a failure the heartbeat must go on until diagnose() has run on every survivor.
        if trainer.state.status.value == "finished":
            self.stop()

    def stop(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stop()
            self.heartbeat = None

    def diagnose(self, trainer: L.Trainer) -> LostRankReport | None:
        """After a failed collective: which ranks are lost (None in a single process). Takes ~watch_periods × period_s."""
        heartbeat = self.heartbeat
        if heartbeat is None:
            return None
        children = dead_local_children(trainer)
        if children:  # Lightning's launcher: rank 0 saw its child die; report before the observer kills us
            return LostRankReport(
                rank=heartbeat.rank,
                world_size=heartbeat.world_size,
                global_step=trainer.global_step,
                lost=tuple(sorted(children)),
                hosts={rank: host_name() for rank in children},
            )
        result: list[LostRankReport] = []
        worker = threading.Thread(
            target=lambda: result.append(heartbeat.watch(self.watch_periods, trainer.global_step)), daemon=True
        )
        worker.start()
        # A store whose host vanished without closing its socket would block until the store's timeout.
        worker.join(self.watch_periods * self.period_s + 10)
        if result:
            return result[0]
        return heartbeat.store_lost_report(trainer.global_step)


class Heartbeat:
    """This rank's counter in the store, bumped every ``period_s`` by a daemon thread."""

    def __init__(self, store: Any, rank: int, world_size: int, period_s: float) -> None:
        self.store = dist.PrefixStore(PREFIX, store)
        self.rank = rank
        self.world_size = world_size
        self.period_s = period_s
        self.store_error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="panns-heartbeat", daemon=True)

    def start(self) -> None:
        self.store.set(f"host/{self.rank}", host_name())
        self.store.add(f"beat/{self.rank}", 1)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5 * self.period_s)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self.store.add(f"beat/{self.rank}", 1)
            except Exception as error:  # the store's host is gone: nothing left to beat to
                self.store_error = str(error).splitlines()[0] if str(error) else type(error).__name__
                return

    def watch(self, periods: int, global_step: int) -> LostRankReport:
        """Announce this rank as a survivor, read every counter, wait ``periods`` periods, read again."""
        try:
            self.store.set(f"survivor/{self.rank}", "1")
            before = self._beats()
            time.sleep(periods * self.period_s)
            after = self._beats()
            silent = [rank for rank in range(self.world_size) if after[rank] == before[rank] and rank != self.rank]
            # A survivor that already reported and exited is silent too, but not lost.
            lost = tuple(rank for rank in silent if not self.store.check([f"survivor/{rank}"]))
            alive = set(range(self.world_size)) - set(lost)
            hosts = {rank: self._host(rank) for rank in lost}
        except Exception:  # the store stopped answering while we watched
            return self.store_lost_report(global_step)
        return LostRankReport(
            rank=self.rank,
            world_size=self.world_size,
            global_step=global_step,
            lost=lost,
            hosts={rank: host for rank, host in hosts.items() if host},
            reporter=self.rank == min(alive),
        )

    def store_lost_report(self, global_step: int) -> LostRankReport:
        """The store's host is gone; no survivor can see the others, so a fixed one reports (:func:`store_host`)."""
        host, reporter = store_host()
        return LostRankReport(
            rank=self.rank,
            world_size=self.world_size,
            global_step=global_step,
            lost=(),
            store_lost=True,
            store_host=host,
            reporter=self.rank == reporter,
        )

    def _beats(self) -> list[int]:
        """Every rank's counter: one request when all exist, else one per rank (a rank lost before its first beat)."""
        keys = [f"beat/{rank}" for rank in range(self.world_size)]
        if self.store.check(keys):
            return [int(value) for value in self.store.multi_get(keys)]
        return [int(self.store.add(key, 0)) for key in keys]

    def _host(self, rank: int) -> str:
        with contextlib.suppress(Exception):
            if self.store.check([f"host/{rank}"]):
                return self.store.get(f"host/{rank}").decode()
        return ""


def store_host(environ: dict[str, str] | None = None) -> tuple[str, int]:
    """(who hosted the rendezvous store, the rank that reports its loss).

    torchrun's agent on node 0 hosts it (workers of node 1 on report, the first of them); under
    Lightning's launcher and SLURM rank 0's process does, and rank 1 reports.
    """
    env = os.environ if environ is None else environ
    if "TORCHELASTIC_RUN_ID" in env:
        where = f"{env.get('MASTER_ADDR', '?')}:{env.get('MASTER_PORT', '?')}"
        return f"node 0 (its torchrun agent at {where})", int(env.get("LOCAL_WORLD_SIZE", "1") or 1)
    return "rank 0", 1


def host_name() -> str:
    """The node's name as the scheduler knows it (SLURM's node name), else the host name."""
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()


def default_store() -> Any | None:
    """The default process group's store (torch keeps it private; None if that ever changes)."""
    getter = getattr(dist.distributed_c10d, "_get_default_store", None)
    if getter is None:
        return None
    try:
        return getter()
    except Exception:
        return None


def dead_local_children(trainer: L.Trainer, wait_s: float = 0.5) -> dict[int, int]:
    """Global rank → exit code of the local ranks Lightning's launcher started that have ended (rank 0 only)."""
    procs = getattr(getattr(trainer.strategy, "launcher", None), "procs", None) or []
    if not procs:
        return {}
    node_rank = int(getattr(trainer, "node_rank", 0))
    per_node = len(procs) + 1
    deadline = time.monotonic() + wait_s
    while True:
        dead = {node_rank * per_node + i + 1: proc.poll() for i, proc in enumerate(procs) if proc.poll() is not None}
        if dead or time.monotonic() > deadline:
            return dead
        time.sleep(0.05)


@contextlib.contextmanager
def lost_rank_heartbeat_stopped(watch: LostRankWatch | None) -> Iterator[None]:
    """Stop ``watch``'s heartbeat when the block ends, whatever happened."""
    try:
        yield
    finally:
        if watch is not None:
            watch.stop()

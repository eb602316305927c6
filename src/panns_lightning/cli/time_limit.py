"""A submitit SLURM job's time limit: stop like a preemption (save ``last.ckpt``), then let submitit requeue.

``hydra/launcher=slurm`` submits with ``--signal=USR2@signal_delay_s``: SLURM sends USR2 to every
task that long before the time limit. submitit's own handler would requeue the job and exit at
once, in the middle of a step and without a checkpoint. Inside :class:`SubmititTimeLimit` the
signal instead stops training the way SIGTERM does (Lightning finishes the batch in flight on
every rank, ``EndOfRunCheckpoint`` saves ``last.ckpt`` at that step); afterwards
:meth:`SubmititTimeLimit.requeue` hands over to submitit's handler, which counts the timeout
against ``hydra.launcher.max_num_timeout``, runs ``scontrol requeue`` (rank 0) and exits. The
requeued job resumes with ``ckpt_path=auto``. Preemption needs none of this: SLURM sends SIGTERM
and requeues the job itself.
"""

from __future__ import annotations

import logging
import os
import signal
import types
from typing import Any

import lightning as L

log = logging.getLogger(__name__)


class SubmititTimeLimit:
    """Context manager; a no-op outside a submitit SLURM job (``SUBMITIT_EXECUTOR=slurm``)."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.enabled = env.get("SUBMITIT_EXECUTOR") == "slurm"
        # submitit's choice of signal (SUBMITIT_PREEMPT_SIGNAL, default USR2).
        self.signum = getattr(signal, "SIG" + env.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), signal.SIGUSR2)
        self.received = False
        self._submitit_handler: Any = None

    def __enter__(self) -> SubmititTimeLimit:
        if self.enabled:
            self._submitit_handler = signal.getsignal(self.signum)
            signal.signal(self.signum, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled and self._submitit_handler is not None:
            signal.signal(self.signum, self._submitit_handler)

    def _on_signal(self, signum: int, frame: types.FrameType | None) -> None:
        if not self.received:
            log.warning(
                "%s: the job's time limit is near; stopping at this step to save a checkpoint",
                signal.Signals(signum).name,
            )
        self.received = True
        # Lightning's SIGTERM handler (installed while fitting) stops after the batch in flight;
        # before fitting starts, StopAtTrainStart sends it once it is there.
        signal.raise_signal(signal.SIGTERM)

    def callback(self) -> L.Callback:
        """For the trainer: a signal that came during start-up stops training at its first step."""
        return StopAtTrainStart(self)

    def requeue(self) -> None:
        """submitit's handler: requeue this job (on rank 0) and exit; returns on the other ranks."""
        handler = self._submitit_handler
        if callable(handler):
            handler(self.signum, None)


class StopAtTrainStart(L.Callback):
    """Resend SIGTERM when fitting starts if the time-limit signal came before Lightning listened for it."""

    def __init__(self, time_limit: SubmititTimeLimit) -> None:
        self.time_limit = time_limit

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.time_limit.received and not trainer.received_sigterm:
            signal.raise_signal(signal.SIGTERM)

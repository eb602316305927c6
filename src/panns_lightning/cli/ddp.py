"""One run directory and one log under DDP, for Hydra apps (docs/distributed.md).

Lightning re-executes the app for the other local ranks and, when Hydra is in use, passes them
the parent's ``hydra.run.dir`` with ``hydra.output_subdir=null``. :func:`child_rank_command`
makes that command right for sweeps too (a job's own overrides instead of ``-m`` and the whole
sweep; the job's own directory; no log file of their own), :func:`quiet_non_zero_rank` stops
ranks started by torchrun or SLURM from appending to rank 0's log file,
:func:`distributed_scope` leaves no process group behind for the next job of a sweep, and
:func:`ddp_strategy` gives the process group the configured timeout (``trainer.ddp_timeout_s``)
and NCCL its error handling, so that a lost rank stops the others instead of hanging them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import lightning as L
from omegaconf import read_write

from panns_lightning.cli.config_schema import ConfigError

# Command-line flags that select the config tree: a child rank must compose the same config.
_CONFIG_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")
# NCCL's watchdog on a failed or timed-out collective (torch 2.11): 0 nothing (a lost rank can hang
# the job), 1 abort the communicator and kill the process, 2 abort the communicator and raise in the
# main thread, 3 kill the process without aborting. 2 lets panns-train name the lost rank.
NCCL_ERROR_HANDLING = "TORCH_NCCL_ASYNC_ERROR_HANDLING"
NCCL_ERROR_HANDLING_MODE = "2"


def ddp_strategy(strategy: Any, timeout_s: float) -> Any:
    """``trainer.strategy`` as Lightning gets it: a DDP strategy name becomes the strategy with ``timeout_s``.

    Any collective then fails after ``timeout_s`` instead of torch's default (30 min for gloo, 10
    for NCCL), gloo and NCCL alike, and NCCL's asynchronous error handling is on
    (:data:`NCCL_ERROR_HANDLING`; a value the environment sets is kept unless it is 0, which would
    let a lost rank hang a GPU job and is refused). Other strategies (and strategy objects) pass unchanged.
    """
    from lightning.pytorch.strategies import DDPStrategy, StrategyRegistry

    if not isinstance(strategy, str) or strategy not in StrategyRegistry:
        return strategy
    entry = StrategyRegistry[strategy]
    if not (isinstance(entry["strategy"], type) and issubclass(entry["strategy"], DDPStrategy)):
        return strategy
    check_nccl_error_handling()
    os.environ.setdefault(NCCL_ERROR_HANDLING, NCCL_ERROR_HANDLING_MODE)
    return entry["strategy"](**entry["init_params"], timeout=timedelta(seconds=timeout_s))


def check_nccl_error_handling() -> None:
    """Refuse ``TORCH_NCCL_ASYNC_ERROR_HANDLING=0`` (or its old name ``NCCL_ASYNC_ERROR_HANDLING=0``) under DDP."""
    for name in (NCCL_ERROR_HANDLING, "NCCL_ASYNC_ERROR_HANDLING"):
        value = os.environ.get(name)
        if value is not None:
            if value.strip() == "0":
                raise ConfigError(
                    f"{name}=0 in the environment turns off NCCL's error handling: a lost rank would hang the "
                    f"other GPUs until the job's time limit; unset it (panns-train sets {NCCL_ERROR_HANDLING}="
                    f"{NCCL_ERROR_HANDLING_MODE}) or set 1, 2 or 3"
                )
            return  # torch reads the first of the two names that is set


def process_rank_from_env() -> int:
    """This process's global rank as launchers announce it before any process group exists.

    torchrun sets RANK, SLURM sets SLURM_PROCID, Lightning's own launcher sets LOCAL_RANK and
    NODE_RANK for the processes it starts; a plain ``panns-train`` has none of them (rank 0).
    """
    for key in ("RANK", "SLURM_PROCID"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return int(os.environ.get("LOCAL_RANK", "0") or 0) + int(os.environ.get("NODE_RANK", "0") or 0)


def quiet_non_zero_rank() -> None:
    """On ranks other than 0, drop Hydra's job log file handler: rank 0's log is the run's log.

    Ranks started by torchrun or SLURM compose the same config and would append to the same
    ``<job>.log``; their console output stays.
    """
    if process_rank_from_env() == 0:
        return
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
            handler.close()


@contextlib.contextmanager
def child_rank_command(trainer: L.Trainer) -> Iterator[None]:
    """While ``trainer.fit`` starts the other local ranks, make their command re-run *this* job.

    Lightning builds the child command as ``sys.argv[1:]`` + ``hydra.run.dir=<HydraConfig run.dir>``
    + ``hydra.output_subdir=null``. In a sweep that would be ``-m`` with every job of the sweep and
    the run-mode directory pattern, not this job's directory. So, for the duration of the launch:
    argv holds this job's own overrides plus ``hydra.mode=RUN`` (Optuna presets set MULTIRUN in the
    config) and ``hydra/job_logging=stdout`` (no ``train_ddp_process_N.log``), and Hydra's run.dir
    is this job's output directory.
    """
    from hydra.core.hydra_config import HydraConfig

    launcher = getattr(trainer.strategy, "launcher", None)
    spawns_children = type(launcher).__name__ == "_SubprocessScriptLauncher" and not getattr(
        trainer.strategy.cluster_environment, "creates_processes_externally", True
    )
    if not spawns_children or not HydraConfig.initialized() or process_rank_from_env() != 0:
        yield
        return
    hydra_cfg = HydraConfig.get()
    saved_argv, saved_run_dir = list(sys.argv), hydra_cfg.run.dir
    sys.argv = [
        saved_argv[0],
        *config_flags(saved_argv[1:]),
        *hydra_cfg.overrides.task,
        "hydra.mode=RUN",
        "hydra/job_logging=stdout",
    ]
    with read_write(hydra_cfg.run):
        hydra_cfg.run.dir = str(hydra_cfg.runtime.output_dir)
    try:
        yield
    finally:
        sys.argv = saved_argv
        with read_write(hydra_cfg.run):
            hydra_cfg.run.dir = saved_run_dir


@contextlib.contextmanager
def distributed_scope() -> Iterator[None]:
    """Leave no process group and no launcher variables behind when the job ends.

    A sweep runs its jobs one after another in this process: Lightning's launcher sets
    LOCAL_RANK, WORLD_SIZE, MASTER_PORT... in ``os.environ`` and the process group outlives the
    child ranks, so without this the next DDP job would think its ranks are started externally
    (and wait for peers forever) or talk to a dead group.
    """
    import torch.distributed as dist

    saved_env = dict(os.environ)
    try:
        yield
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        os.environ.clear()
        os.environ.update(saved_env)


def config_flags(argv: list[str]) -> list[str]:
    """The ``--config-path/--config-name/--config-dir`` flags of ``argv`` (both ``-cn x`` and ``-cn=x``)."""
    kept: list[str] = []
    for i, arg in enumerate(argv):
        if arg in _CONFIG_FLAGS and i + 1 < len(argv):
            kept += [arg, argv[i + 1]]
        elif arg.split("=", 1)[0] in _CONFIG_FLAGS and "=" in arg:
            kept.append(arg)
    return kept

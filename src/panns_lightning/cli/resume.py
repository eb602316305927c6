"""The one line a survivor prints when a rank is lost: which, at which step, the last checkpoint, how to resume.

The command that resumes depends on what started the ranks (the run's own overrides are the
same in every case, plus ``ckpt_path=auto`` and the run's directory):

- a SLURM batch job (sbatch, or submitit through ``hydra/launcher=slurm``) whose config already
  says ``ckpt_path=auto``: ``scontrol requeue JOBID`` runs the same job again in the same directory;
- torchrun: the same ``torchrun`` line on every node (``--node-rank`` 0 … N-1);
- Lightning's own launcher (a plain ``panns-train``): ``panns-train ...``.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from panns_lightning.cli.build import checkpoint_dir
from panns_lightning.redact import redact
from panns_lightning.training.fault_tolerance import LAST_CHECKPOINT, checkpoint_global_step
from panns_lightning.training.lost_rank import LostRankReport

# Overrides the resume command sets itself.
_REPLACED = ("ckpt_path=", "hydra.run.dir=", "+ckpt_path=", "++ckpt_path=")


def lost_rank_message(report: LostRankReport, cfg: DictConfig, error: BaseException) -> str:
    """``rank 1 of 2 (host h) was lost at global step 5 (...); last checkpoint: ...; resume with: ...``."""
    if report.lost or report.store_lost:
        what = f"{report.describe()} at global step {report.global_step}"
    else:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        what = (
            f"a collective failed at global step {report.global_step} but every rank still answers "
            f"({type(error).__name__}: {first}): a rank is stuck or the network between nodes dropped"
        )
    return redact(f"{what}; {last_checkpoint(cfg)}; resume with: {resume_command(cfg)}")


def last_checkpoint(cfg: DictConfig) -> str:
    """Where the run's last checkpoint is and its step, or that there is none yet."""
    path = checkpoint_dir(cfg) / LAST_CHECKPOINT
    if not path.is_file():
        return f"no checkpoint yet ({path} does not exist: resuming starts from scratch)"
    try:
        return f"last checkpoint: {path} (global step {checkpoint_global_step(path)})"
    except Exception as error:  # unreadable: say so rather than hide the rest of the message
        return f"last checkpoint: {path} (unreadable: {type(error).__name__})"


def resume_command(cfg: DictConfig, environ: dict[str, str] | None = None) -> str:
    """The exact command that resumes this run, for the launcher that started it (module docstring)."""
    env = dict(os.environ if environ is None else environ)
    job_id = slurm_batch_job_id(env)
    if job_id is not None and cfg.get("ckpt_path") == "auto":
        return f"scontrol requeue {job_id}"
    overrides = run_overrides()
    if env.get("SUBMITIT_EXECUTOR") == "slurm":  # resubmit the one job into its directory
        sweep_dir, subdir = Path(str(cfg.paths.output_dir)).resolve().parent, Path(str(cfg.paths.output_dir)).name
        args = ["-m", *launcher_overrides(), *overrides, f"hydra.sweep.dir={sweep_dir}", f"hydra.sweep.subdir={subdir}"]
    else:
        args = [*overrides, f"hydra.run.dir={Path(str(cfg.paths.output_dir)).resolve()}"]
    quoted = " ".join(shlex.quote(arg) for arg in [*args, "ckpt_path=auto"])
    if "TORCHELASTIC_RUN_ID" in env:
        per_node = max(1, int(env.get("LOCAL_WORLD_SIZE", "1")))
        nodes = max(1, int(env.get("WORLD_SIZE", str(per_node))) // per_node)
        where = f"--master-addr={env.get('MASTER_ADDR', 'localhost')} --master-port={env.get('MASTER_PORT', '29500')}"
        return (
            f"torchrun --nnodes={nodes} --nproc-per-node={per_node} --node-rank=<0..{nodes - 1}> {where} "
            f"-m panns_lightning.cli.train {quoted}"
        )
    return f"panns-train {quoted}"


def slurm_batch_job_id(env: dict[str, str]) -> str | None:
    """The SLURM job id when this runs inside a batch job (which ``scontrol requeue`` can rerun), else None."""
    if env.get("ENVIRONMENT") != "BATCH" or not env.get("SLURM_JOB_ID"):
        return None
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env["SLURM_JOB_ID"]


def run_overrides() -> list[str]:
    """This job's own command-line overrides (a sweep job's included), without those the resume sets."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    overrides: Any = HydraConfig.get().overrides.task
    return [str(o) for o in overrides if not str(o).startswith(_REPLACED)]


def launcher_overrides() -> list[str]:
    """The ``hydra/launcher=...`` and ``hydra.launcher.*`` overrides the job was submitted with."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    overrides: Any = HydraConfig.get().overrides.hydra
    return [str(o) for o in overrides if str(o).startswith(("hydra/launcher=", "hydra.launcher."))]

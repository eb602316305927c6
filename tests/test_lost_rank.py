"""A lost rank is one line: which rank, at which step, the last checkpoint, the command that resumes.

The slow test SIGKILLs rank 1 of a 2-process gloo run (Lightning's launcher) mid-run; the others
check the pieces: the heartbeat on a real TCPStore, the resume command per launcher, the
process group's timeout and NCCL's error handling from the config, and the time-limit signal.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch.distributed as dist
from omegaconf import OmegaConf

from panns_lightning.cli.config_schema import ConfigError, validate_train_config
from panns_lightning.cli.ddp import NCCL_ERROR_HANDLING, ddp_strategy
from panns_lightning.cli.resume import resume_command, slurm_batch_job_id
from panns_lightning.cli.time_limit import SubmititTimeLimit
from panns_lightning.training.lost_rank import Heartbeat, LostRankReport, store_host
from train_fixtures import BIN, DDP_ENV, REPO, ddp_overrides, free_port, rank_keys


@pytest.mark.slow
def test_a_killed_rank_is_named_in_one_line(tiny_audioset: Path, tmp_path: Path) -> None:
    out, keys = tmp_path / "run", tmp_path / "keys.txt"
    args = [
        *ddp_overrides(tiny_audioset, tmp_path, keys),
        "trainer=ddp",
        "trainer.devices=2",
        "trainer.max_steps=1000",
        "data.steps_per_epoch=1000",
        f"hydra.run.dir={out}",
    ]
    env = {**os.environ, **DDP_ENV, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline"}
    proc = subprocess.Popen(
        [str(BIN / "panns-train"), *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 300
        while not (keys.with_name("keys.txt.rank1").is_file() and len(rank_keys(keys, 1)) >= 3):
            assert proc.poll() is None and time.monotonic() < deadline, "the run never reached step 3"
            time.sleep(0.2)
        child = int(subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()[0])
        os.kill(child, signal.SIGKILL)  # rank 1: Lightning started it as rank 0's child
        # The survivor stops: it does not wait for the process group's timeout (600 s).
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 1
    assert "Traceback" not in stderr and "Connection closed" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("panns-train: ")]
    assert len(lines) == 1, stderr[-3000:]
    match = re.fullmatch(
        r"panns-train: rank 1 \(host .+\) of 2 was lost at global step (\d+); "
        r"last checkpoint: (\S+) \(global step (\d+)\); resume with: panns-train (.+)",
        lines[0],
    )
    assert match, lines[0]
    lost_at, checkpoint, checkpoint_step, command = int(match[1]), match[2], int(match[3]), match[4]
    # Killed during step 3 or later (2 done); the last periodic checkpoint (every 2 steps) is named.
    assert (
        lost_at >= 2 and checkpoint == str(out / "checkpoints" / "last.ckpt") and checkpoint_step == 2 * (lost_at // 2)
    )
    resume_args = command.split()
    assert resume_args[-2:] == [f"hydra.run.dir={out}", "ckpt_path=auto"]
    assert resume_args[:-2] == args[:-1]  # the run's own overrides, in order


def test_heartbeat_names_the_rank_that_stopped_beating() -> None:
    store = dist.TCPStore("127.0.0.1", free_port(), is_master=True, timeout=timedelta(seconds=10))
    beats = [Heartbeat(store, rank, 3, period_s=0.05) for rank in range(3)]
    for beat in beats:
        beat.start()
    beats[1].stop()  # rank 1 dies
    survivor_2 = threading.Thread(target=lambda: beats[2].watch(4, global_step=7))
    survivor_2.start()
    report = beats[0].watch(4, global_step=7)
    survivor_2.join()
    for beat in (beats[0], beats[2]):
        beat.stop()
    assert report.lost == (1,) and report.reporter and report.global_step == 7
    assert report.describe().startswith("rank 1 (host ") and report.describe().endswith(" of 3 was lost")
    # Rank 2 announced itself as a survivor and would not report: rank 0 is lower.
    assert beats[2].watch(2, global_step=7).reporter is False


def test_a_store_that_stops_answering_names_its_host() -> None:
    report = LostRankReport(rank=1, world_size=2, global_step=4, lost=(), store_lost=True, store_host="rank 0")
    assert report.describe() == "rank 0 of 2 ranks was lost (the rendezvous store it hosted stopped answering)"
    assert store_host({}) == ("rank 0", 1)
    env = {"TORCHELASTIC_RUN_ID": "x", "MASTER_ADDR": "n0", "MASTER_PORT": "29500", "LOCAL_WORLD_SIZE": "8"}
    assert store_host(env) == ("node 0 (its torchrun agent at n0:29500)", 8)


def test_resume_command_for_each_launcher(tmp_path: Path) -> None:
    cfg = OmegaConf.create({"ckpt_path": "auto", "paths": {"output_dir": str(tmp_path / "run")}})
    assert resume_command(cfg, {}) == f"panns-train hydra.run.dir={tmp_path / 'run'} ckpt_path=auto"
    batch = {"ENVIRONMENT": "BATCH", "SLURM_JOB_ID": "812"}
    assert resume_command(cfg, batch) == "scontrol requeue 812"
    assert slurm_batch_job_id({**batch, "SLURM_ARRAY_JOB_ID": "800", "SLURM_ARRAY_TASK_ID": "3"}) == "800_3"
    assert slurm_batch_job_id({"SLURM_JOB_ID": "812"}) is None  # salloc/srun: nothing to requeue
    torchrun = {"TORCHELASTIC_RUN_ID": "x", "WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8", "MASTER_ADDR": "n0"}
    assert resume_command(cfg, torchrun).startswith(
        "torchrun --nnodes=2 --nproc-per-node=8 --node-rank=<0..1> --master-addr=n0 --master-port=29500 "
        "-m panns_lightning.cli.train hydra.run.dir="
    )
    cfg.ckpt_path = None  # requeueing would start over: the command says ckpt_path=auto instead
    assert resume_command(cfg, batch).endswith("ckpt_path=auto")


def test_ddp_timeout_and_nccl_error_handling_come_from_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(NCCL_ERROR_HANDLING, raising=False)
    monkeypatch.delenv("NCCL_ASYNC_ERROR_HANDLING", raising=False)
    strategy = ddp_strategy("ddp", 42.0)
    assert strategy._timeout == timedelta(seconds=42) and strategy._start_method == "popen"
    assert ddp_strategy("ddp_find_unused_parameters_true", 5.0)._ddp_kwargs == {"find_unused_parameters": True}
    assert os.environ[NCCL_ERROR_HANDLING] == "2"
    assert ddp_strategy("auto", 42.0) == "auto"
    monkeypatch.setenv(NCCL_ERROR_HANDLING, "0")
    with pytest.raises(ConfigError, match="TORCH_NCCL_ASYNC_ERROR_HANDLING=0 .* hang"):
        ddp_strategy("ddp", 42.0)
    cfg = OmegaConf.create({"trainer": {"ddp_timeout_s": -3, "max_steps": 10}})
    with pytest.raises(ConfigError, match=r"trainer.ddp_timeout_s must be a number of seconds > 0 .* got -3"):
        validate_train_config(cfg)


def test_time_limit_signal_stops_like_sigterm_then_hands_over_to_submitit() -> None:
    calls: list[int] = []
    previous_term = signal.signal(signal.SIGTERM, lambda signum, frame: calls.append(signum))
    previous_usr2 = signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append(-signum))  # "submitit's"
    try:
        with SubmititTimeLimit({}) as outside:  # not a submitit job: nothing changes
            assert not outside.enabled
        with SubmititTimeLimit({"SUBMITIT_EXECUTOR": "slurm"}) as time_limit:
            signal.raise_signal(signal.SIGUSR2)
            assert time_limit.received and calls == [signal.SIGTERM]
            time_limit.requeue()
            assert calls == [signal.SIGTERM, -signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGUSR2, previous_usr2)

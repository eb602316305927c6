"""The shipped SLURM path on a real Slurm cluster (scripts/slurm_local.sh: munged, slurmctld, 2 slurmd).

``panns-train -m hydra/launcher=slurm`` submits through submitit (no mocks) a 2-node job, one gloo
rank per node, that first hits its time limit (SLURM's warning signal: checkpoint, submitit
requeues), then is preempted (``scontrol requeue``: SIGTERM, checkpoint, SLURM requeues), and
resumes each time with ``ckpt_path=auto``. It must end where an uninterrupted run ends: the same
clips at every step and bit-identical weights to Lightning's own 2-process launch
(``ddp_reference``), one run directory, one validation. A requeued job waits 2 minutes before
SLURM starts it again; the test releases it at once (``scontrol update StartTime=now``).
Skipped with the reason when the cluster cannot start (no root, no slurm-wlm/munge packages).
"""

from __future__ import annotations

import csv
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from test_multinode import assert_same_training
from train_fixtures import BIN, DDP_ENV, REPO, ddp_overrides, rank_keys

SCRIPT = REPO / "scripts" / "slurm_local.sh"


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A 2-node local cluster for this module; yields the environment its clients need."""
    state = tmp_path_factory.mktemp("slurm")
    up = subprocess.run(["bash", SCRIPT, "up", state, "2"], capture_output=True, text=True, timeout=180)
    if up.returncode != 0:
        subprocess.run(["bash", SCRIPT, "down", state], capture_output=True, timeout=180)
        reason = up.stderr.strip().splitlines()[-1] if up.stderr.strip() else f"exit {up.returncode}"
        pytest.skip(f"no local Slurm cluster ({reason}); as root: scripts/slurm_local.sh install")
    try:
        yield {"SLURM_CONF": str(state / "slurm.conf")}
    finally:
        down = subprocess.run(["bash", SCRIPT, "down", state], capture_output=True, text=True, timeout=180)
        assert down.returncode == 0, down.stderr


def slurm_out(env: dict[str, str], *command: str) -> str:
    return subprocess.run(list(command), env=env, capture_output=True, text=True, check=True, timeout=60).stdout


def wait_until(
    condition: Callable[[], bool], what: str, launcher: subprocess.Popen, logs: Path, limit: float = 300
) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if launcher.poll() is not None or time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(logs.rglob("*_log.*")))
            launcher.kill()
            raise AssertionError(
                f"no {what} (launcher exit {launcher.poll()}):\n{launcher.stdout.read()[-3000:]}\n{tails}"
            )
        time.sleep(0.5)


def checkpoint_step(run: Path) -> int:
    return int(torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"])


@pytest.mark.slow
def test_slurm_job_survives_time_limit_and_preemption(
    slurm: dict[str, str], tiny_audioset: Path, ddp_reference: Path, tmp_path: Path
) -> None:
    sweep, keys, markers = tmp_path / "sweep", tmp_path / "keys.txt", tmp_path / "markers"
    env = {**os.environ, **DDP_ENV, **slurm, "PYTHONPATH": str(REPO / "tests"), "PYTHONUNBUFFERED": "1"}
    env["WANDB_MODE"] = "offline"
    command = [
        BIN / "panns-train",
        "-m",
        "hydra/launcher=slurm",
        "hydra.launcher.nodes=2",
        "hydra.launcher.tasks_per_node=1",
        "hydra.launcher.gpus_per_node=null",
        "hydra.launcher.cpus_per_task=1",
        # The warning signal comes 60 s before a 2-minute limit (SLURM sends it up to 30 s early).
        "hydra.launcher.timeout_min=2",
        "hydra.launcher.signal_delay_s=60",
        "hydra.launcher.max_num_timeout=3",
        f"hydra.sweep.dir={sweep}",
        *ddp_overrides(tiny_audioset, tmp_path, keys),
        "trainer=ddp_multinode",
        "trainer.num_nodes=2",
        "trainer.devices=1",
        "ckpt_path=auto",
        # Hold the first start at step 3 until the time limit's signal, the second at step 5 until preempted.
        "+callbacks.pause._target_=pause_callback.PauseAtStep",
        "+callbacks.pause.steps={0: 3, 1: 5}",
        f"+callbacks.pause.marker_dir={markers}",
    ]
    launcher = subprocess.Popen(
        [str(c) for c in command], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    run = sweep / "0"
    logs = sweep / ".submitit"
    try:
        wait_until(lambda: bool(slurm_out(env, "squeue", "-h", "-o", "%i").strip()), "job in the queue", launcher, logs)
        job = slurm_out(env, "squeue", "-h", "-o", "%i").split()[0]

        def pending() -> bool:
            return slurm_out(env, "squeue", "-h", "-j", job, "-o", "%T").strip() == "PENDING"

        def job_log() -> str:
            return "".join(p.read_text() for p in sorted((logs / job).glob("*_log.*")))

        # 1. The time limit: SLURM's warning signal stops training with a checkpoint; submitit requeues.
        wait_until(lambda: "Requeued job" in job_log() and pending(), "requeue at the time limit", launcher, logs)
        assert "this job is timed-out" in job_log()
        stopped_at = checkpoint_step(run)
        assert stopped_at == 3 if (markers / "paused-0-3").exists() else stopped_at < 3
        slurm_out(env, "scontrol", "update", f"JobId={job}", "TimeLimit=10", "StartTime=now")

        # 2. Preemption: scontrol requeue while the second start waits at step 5.
        wait_until(lambda: (markers / "paused-1-5").exists(), "second start at step 5", launcher, logs)
        slurm_out(env, "scontrol", "requeue", job)
        wait_until(pending, "requeue after preemption", launcher, logs)
        assert checkpoint_step(run) == 5  # saved on SIGTERM, not by the every-2-steps checkpoint
        slurm_out(env, "scontrol", "update", f"JobId={job}", "StartTime=now")

        # 3. The third start resumes at step 5 and finishes.
        output, _ = launcher.communicate(timeout=300)
        assert launcher.returncode == 0, output[-4000:]
    finally:
        subprocess.run(["scancel", "--full", "-u", "root"], env=env, capture_output=True, timeout=60)
        launcher.kill()

    print(
        slurm_out(env, "sinfo"),
        slurm_out(env, "sacct", "-c", "-j", job, "-o", "JobID,State,ExitCode,NodeList,Start,End"),
    )
    accounting = slurm_out(env, "sacct", "-c", "-j", job, "--parsable2", "-n", "-o", "JobID,State,NodeList")
    # jobcomp logs a requeued job's state after the requeue: PENDING, twice, then the end.
    assert [line.split("|")[1] for line in accounting.splitlines()] == ["PENDING", "PENDING", "COMPLETED"]
    assert all(line.split("|")[2] == "node[1-2]" for line in accounting.splitlines())  # one rank per node

    # One run directory, one set of checkpoints, one validation; the run trained what the reference did.
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")) == ["0"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    with (run / "csv" / "metrics.csv").open() as handle:
        assert len([row for row in csv.DictReader(handle) if row.get("val/mAP")]) == 1
    for rank in (0, 1):  # every step once, across the three starts, with the reference's clips
        assert rank_keys(keys, rank) == rank_keys(ddp_reference / "keys.txt", rank)
    assert_same_training(run, ddp_reference / "run")

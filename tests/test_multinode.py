"""Two nodes on one host: torchrun --nnodes 2 (node ranks 0 and 1, localhost rendezvous) with trainer=ddp_multinode.

The world is the reference's (2 ranks of one process each), so the run must train exactly what
Lightning's own 2-process launch trains (``ddp_reference``): same clips per rank, same weights
bit for bit, same validation metrics; and the two nodes read disjoint shards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from train_fixtures import DDP_ENV, DDP_STEPS, REPO, ddp_overrides, free_port, rank_keys


def shard_of_keys(shard_dir: Path) -> dict[str, str]:
    """Clip key → the shard file holding it."""
    owner = {}
    for shard in sorted(shard_dir.glob("shard-*.tar")):
        with tarfile.open(shard) as tar:
            for name in tar.getnames():
                owner[name.split(".", 1)[0]] = shard.name
    return owner


def assert_same_training(run: Path, reference: Path) -> None:
    """Same final weights (bitwise) and the same validation metrics as the reference run."""
    final = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    expected = torch.load(reference / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert final["global_step"] == expected["global_step"] == DDP_STEPS
    assert final["state_dict"].keys() == expected["state_dict"].keys()
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(final["state_dict"][name], tensor), name
    metrics, expected_metrics = (json.loads((path / "metrics.json").read_text())["val"] for path in (run, reference))
    print(
        f"{run}: {len(expected['state_dict'])} tensors bit-identical to {reference}; val {metrics} vs {expected_metrics}"
    )
    assert metrics == expected_metrics


@pytest.mark.slow
def test_torchrun_two_nodes_train_what_one_node_trains(
    tiny_audioset: Path, ddp_reference: Path, tmp_path: Path
) -> None:
    out, keys, port = tmp_path / "run", tmp_path / "keys.txt", free_port()
    train = [
        *ddp_overrides(tiny_audioset, tmp_path, keys),
        "trainer=ddp_multinode",
        "trainer.num_nodes=2",
        "trainer.devices=1",
        f"hydra.run.dir={out}",
    ]
    env = {**os.environ, **DDP_ENV, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline"}
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                "--nproc-per-node=1",
                f"--node-rank={node}",
                "--master-addr=127.0.0.1",
                f"--master-port={port}",
                "-m",
                "panns_lightning.cli.train",
                *train,
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for node in (0, 1)
    ]
    try:
        outputs = [node.communicate(timeout=400)[0] for node in nodes]
    finally:
        for node in nodes:
            node.kill()
    for node, output in zip(nodes, outputs):
        assert node.returncode == 0, output[-4000:]

    reference = ddp_reference / "run"
    assert_same_training(out, reference)
    # Each node read what the same rank of the one-node run read...
    for rank in (0, 1):
        assert rank_keys(keys, rank) == rank_keys(ddp_reference / "keys.txt", rank)
    # ...and the two nodes read disjoint shards.
    owner = shard_of_keys(tiny_audioset / "train")
    shards = [{owner[key] for line in rank_keys(keys, rank) for key in line[3].split(",")} for rank in (0, 1)]
    assert shards[0] and shards[1] and not shards[0] & shards[1], shards

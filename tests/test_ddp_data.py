"""The data layer under real DDP: 2 CPU processes (gloo, ``ddp_spawn``) × 2 DataLoader workers each.

Shard sets have uneven shard sizes and 7 shards (not a multiple of the 4 reader slots). Each rank
writes the keys of every batch it gets into its own file; the checks run on those files.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from panns_lightning.data import AudioShardDataModule, StreamEpochCallback
from shard_fixtures import simple_clips, write_shard_set

TRAIN_SIZES = [9, 5, 12, 7, 3, 15, 6]
VAL_SIZES = [4, 1, 9, 2, 7, 3, 5]
BATCH, STEPS = 3, 4


@pytest.fixture(scope="module")
def shard_sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ddp_data")
    train_clips = simple_clips(sum(TRAIN_SIZES), 5, "tr")
    val_clips = simple_clips(sum(VAL_SIZES), 5, "va")
    return {
        "train": write_shard_set(root / "train", train_clips, TRAIN_SIZES, num_classes=5),
        "val": write_shard_set(root / "val", val_clips, VAL_SIZES, num_classes=5, split="val"),
    }


def shard_of_key(sizes: list[int], prefix: str) -> dict[str, int]:
    """The fixture writes clips in key order, shard after shard."""
    owner: dict[str, int] = {}
    position = 0
    for shard, size in enumerate(sizes):
        for _ in range(size):
            owner[f"{prefix}{position:05d}"] = shard
            position += 1
    return owner


class KeyRecorder(pl.LightningModule):
    """A linear model on the waveform mean that appends each batch's keys to ``log_dir/{split}-rank{R}.jsonl``."""

    def __init__(self, log_dir: str) -> None:
        super().__init__()
        self.log_dir = log_dir
        self.layer = torch.nn.Linear(1, 5)

    def training_step(self, batch: dict, batch_index: int) -> torch.Tensor:
        self._record("train", batch)
        logits = self.layer(batch["waveform"].mean(dim=1, keepdim=True))
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, batch["target"])

    def validation_step(self, batch: dict, batch_index: int) -> None:
        self._record("val", batch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def _record(self, split: str, batch: dict) -> None:
        with open(Path(self.log_dir) / f"{split}-rank{self.global_rank}.jsonl", "a") as handle:
            handle.write(json.dumps(batch["key"]) + "\n")


def recorded(log_dir: Path, split: str, rank: int) -> list[list[str]]:
    path = log_dir / f"{split}-rank{rank}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_two_rank_ddp_steps_evenly_reads_disjoint_shards_and_validates_exactly_once(
    shard_sets: dict[str, Path], tmp_path: Path
) -> None:
    log_dir = tmp_path / "keys"
    log_dir.mkdir()
    datamodule = AudioShardDataModule(
        str(shard_sets["train"]),
        str(shard_sets["val"]),
        batch_size=BATCH,
        num_workers=2,
        steps_per_epoch=STEPS,
        shuffle_buffer=4,
        seed=3,
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        max_epochs=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[StreamEpochCallback()],
        default_root_dir=tmp_path,
    )
    trainer.fit(KeyRecorder(str(log_dir)), datamodule=datamodule)

    train = [recorded(log_dir, "train", rank) for rank in range(2)]
    assert [len(batches) for batches in train] == [STEPS, STEPS], "equal step counts, or DDP would hang"
    assert all(len(batch) == BATCH for batches in train for batch in batches)

    # 2 ranks × 4 steps × 3 clips = 24 draws < 57 clips: all inside pass 0, where ranks own disjoint shards.
    owner = shard_of_key(TRAIN_SIZES, "tr")
    shards = [{owner[key] for batch in batches for key in batch} for batches in train]
    assert shards[0] and shards[1]
    assert not shards[0] & shards[1], f"rank 0 read shards {sorted(shards[0])}, rank 1 {sorted(shards[1])}"

    val = [key for rank in range(2) for batch in recorded(log_dir, "val", rank) for key in batch]
    assert recorded(log_dir, "val", 0) and recorded(log_dir, "val", 1), "both ranks validate"
    assert sorted(val) == sorted(shard_of_key(VAL_SIZES, "va")), "every val clip exactly once across ranks"


@pytest.mark.slow
def test_a_fresh_stream_at_epoch_e_repeats_epoch_e_of_an_uninterrupted_run(shard_sets: dict[str, Path]) -> None:
    # 5 steps × 3 clips × 2 ranks = 30 draws per epoch, about half a pass: epoch 2 lies in pass 1.
    def datamodule() -> AudioShardDataModule:
        module = AudioShardDataModule(
            str(shard_sets["train"]), None, batch_size=BATCH, num_workers=2, steps_per_epoch=5, shuffle_buffer=4, seed=3
        )
        module.set_rank(1, 2)
        return module

    def keys(module: AudioShardDataModule, epoch: int) -> list[str]:
        module.set_epoch(epoch)
        return [key for batch in module.train_dataloader() for key in batch["key"]]

    uninterrupted = datamodule()
    by_epoch = [keys(uninterrupted, epoch) for epoch in range(3)]
    assert by_epoch[0] != by_epoch[1] != by_epoch[2]
    assert keys(datamodule(), 2) == by_epoch[2], "a resumed run must continue the same sequence"
    assert keys(datamodule(), 1) == by_epoch[1]

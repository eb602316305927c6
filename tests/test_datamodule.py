"""AudioShardDataModule: metadata, cross-checks, exactly-once eval over ranks × workers, epochs in Lightning."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

from panns_lightning.data import AudioShardDataModule, StreamEpochCallback
from panns_lightning.data.error_log import BadSampleError
from panns_lightning.shardset import ShardSetError
from shard_fixtures import FixtureClip, simple_clips, write_shard_set


@pytest.fixture(scope="module")
def shard_sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sets")
    return {
        "train": write_shard_set(root / "train", simple_clips(48, 5, "tr"), [10, 14, 6, 18], num_classes=5),
        # 7 shards (not a multiple of 2 ranks × 2 workers), uneven sizes
        "val": write_shard_set(
            root / "val", simple_clips(53, 5, "va"), [9, 1, 12, 7, 3, 15, 6], num_classes=5, split="val"
        ),
        # 3 shards < 4 slots: split inside shards
        "test": write_shard_set(root / "test", simple_clips(23, 5, "te"), [11, 5, 7], num_classes=5, split="test"),
    }


def test_metadata_is_available_before_setup(shard_sets: dict[str, Path]) -> None:
    datamodule = AudioShardDataModule(str(shard_sets["train"]), str(shard_sets["val"]))
    assert datamodule.num_classes == 5
    assert datamodule.label_names == [f"class_{index:02d}" for index in range(5)]
    assert datamodule.labels[0] == {"index": 0, "mid": "/m/0", "name": "class_00"}
    assert (datamodule.sample_rate, datamodule.clip_samples, datamodule.multilabel) == (8000, 800, True)


def test_missing_directory_and_manifest_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ShardSetError, match="does not exist"):
        AudioShardDataModule(str(tmp_path / "missing")).num_classes
    (tmp_path / "half").mkdir()
    with pytest.raises(ShardSetError, match="incomplete conversion"):
        AudioShardDataModule(str(tmp_path / "half")).setup("fit")


def test_mismatched_label_sets_and_rates_name_both_manifests(tmp_path: Path, shard_sets: dict[str, Path]) -> None:
    other_labels = write_shard_set(tmp_path / "labels", simple_clips(4, 5), [4], num_classes=5, label_names="abcde")
    with pytest.raises(ShardSetError, match="label sets differ") as error:
        AudioShardDataModule(str(shard_sets["train"]), str(other_labels)).setup("fit")
    assert str(shard_sets["train"]) in str(error.value) and str(other_labels) in str(error.value)
    other_rate = write_shard_set(tmp_path / "rate", simple_clips(4, 5), [4], num_classes=5, sample_rate=16000)
    with pytest.raises(ShardSetError, match="sample rates differ.*8000.*16000"):
        AudioShardDataModule(str(shard_sets["train"]), str(other_rate)).setup("fit")


@pytest.mark.slow
@pytest.mark.parametrize("split", ["val", "test"])
def test_eval_sees_every_clip_exactly_once_over_two_ranks_and_two_workers(
    shard_sets: dict[str, Path], split: str
) -> None:
    keys: list[str] = []
    for rank in range(2):
        datamodule = AudioShardDataModule(
            None, str(shard_sets["val"]), str(shard_sets["test"]), batch_size=4, num_workers=2
        )
        datamodule.setup("validate")
        datamodule.set_rank(rank, 2)
        loader = datamodule.val_dataloader() if split == "val" else datamodule.test_dataloader()
        for batch in loader:
            assert batch["waveform"].dtype == torch.float32 and batch["waveform"].shape[1] == 800
            assert batch["target"].shape[1] == 5
            assert torch.equal(batch["target"].sum(dim=1), torch.ones(len(batch["key"])))
            keys += batch["key"]
    manifest = json.loads((shard_sets[split] / "manifest.json").read_text())
    prefix = "va" if split == "val" else "te"
    expected = [f"{prefix}{index:05d}" for index in range(manifest["num_clips"])]
    assert sorted(keys) == expected, "every clip exactly once, no duplicates"


def test_eval_keeps_shard_order_within_a_reader(shard_sets: dict[str, Path]) -> None:
    datamodule = AudioShardDataModule(None, str(shard_sets["val"]), batch_size=5, num_workers=0)
    keys = [key for batch in datamodule.val_dataloader() for key in batch["key"]]
    assert keys == [f"va{index:05d}" for index in range(53)]


@pytest.mark.slow
def test_corrupt_clip_is_counted_across_workers_and_fail_fast_raises(tmp_path: Path) -> None:
    clips = simple_clips(10, 2)
    clips[7] = FixtureClip("corrupt", [1], override={"npy": b"not an array"})
    directory = write_shard_set(tmp_path, clips, [5, 5], num_classes=2)
    datamodule = AudioShardDataModule(None, str(directory), batch_size=3, num_workers=2)
    keys = [key for batch in datamodule.val_dataloader() for key in batch["key"]]
    assert sorted(keys) == sorted(clip.key for clip in clips if clip.key != "corrupt")
    assert datamodule.error_counts()["val"] == {"bad_samples": 1, "bad_shards": 0}
    strict = AudioShardDataModule(None, str(directory), batch_size=3, num_workers=0, fail_fast=True)
    with pytest.raises(BadSampleError, match=r"corrupt.*shard-000001\.tar"):
        list(strict.val_dataloader())


class KeyRecorder(pl.LightningModule):
    """The smallest module that trains on the batch dict and remembers which keys each epoch saw."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(800, 5)
        self.keys_by_epoch: dict[int, list[str]] = {}

    def training_step(self, batch: dict, batch_index: int) -> torch.Tensor:
        self.keys_by_epoch.setdefault(self.current_epoch, []).extend(batch["key"])
        logits = self.layer(batch["waveform"])
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, batch["target"])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


@pytest.mark.slow
def test_lightning_fit_steps_and_epochs_follow_the_callback(shard_sets: dict[str, Path], tmp_path: Path) -> None:
    def datamodule() -> AudioShardDataModule:
        return AudioShardDataModule(
            str(shard_sets["train"]), None, batch_size=4, num_workers=2, steps_per_epoch=3, shuffle_buffer=8
        )

    module = KeyRecorder()
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[StreamEpochCallback()],
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=datamodule())
    assert [len(module.keys_by_epoch[epoch]) for epoch in (0, 1)] == [12, 12]
    for epoch in (0, 1):
        reference = datamodule()
        reference.set_epoch(epoch)
        expected = [key for batch in reference.train_dataloader() for key in batch["key"]]
        assert module.keys_by_epoch[epoch] == expected, f"epoch {epoch} must use that epoch's stream"
    assert module.keys_by_epoch[0] != module.keys_by_epoch[1]


@pytest.mark.slow
def test_spawned_workers_share_epoch_and_error_counters(tmp_path: Path) -> None:
    clips = simple_clips(8, 2)
    clips[2] = FixtureClip("corrupt", [0], override={"npy": b"not an array"})
    directory = write_shard_set(tmp_path, clips, [4, 4], num_classes=2)
    datamodule = AudioShardDataModule(str(directory), str(directory), batch_size=2, num_workers=0, steps_per_epoch=4)
    datamodule.set_epoch(5)

    def spawned(dataset: object) -> list[list[str]]:
        loader = DataLoader(dataset, batch_size=None, num_workers=1, multiprocessing_context="spawn")
        return [batch["key"] for batch in loader]

    assert sum(len(keys) for keys in spawned(datamodule.val_dataloader().dataset)) == 7
    assert datamodule.error_counts()["val"]["bad_samples"] == 1, "counted in the worker, read in the main process"
    in_process = [batch["key"] for batch in datamodule.train_dataloader()]
    assert spawned(datamodule.train_dataloader().dataset) == in_process, "the spawned worker must see epoch 5"

"""AudioShardDataModule: streamed tar shard sets → train / val / test DataLoaders (plain arguments, no Hydra).

Train is an endless, optionally class-balanced stream cut into ``steps_per_epoch`` batches per rank;
val/test read every clip exactly once across ranks × workers (see ``train_stream.py`` and
``eval_stream.py`` for guarantees).

Epochs: Lightning never calls ``set_epoch`` on an IterableDataset, so add
:class:`StreamEpochCallback` to the Trainer. The epoch is a shared value read by each worker when its
iterator starts, so it works with re-created workers (``persistent_workers=False``, our default) and
with persistent ones. ``train_dataloader()`` also sets it from the attached trainer, because Lightning
creates the first epoch's iterator of a run (also after resuming) before ``on_train_epoch_start``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from panns_lightning.data.error_log import ErrorLog
from panns_lightning.data.eval_stream import EvalClipStream
from panns_lightning.data.exact_stream import ExactClipStream, restored_sampler_state, sampler_checkpoint_state
from panns_lightning.data.options import StreamOptions, random_access_problem
from panns_lightning.data.random_access import load_train_index
from panns_lightning.data.remote import HttpOptions
from panns_lightning.data.shard_urls import load_manifest, shard_location, shard_urls
from panns_lightning.data.shared_count import SharedCount
from panns_lightning.data.spec import StreamSpec
from panns_lightning.data.train_stream import TrainClipStream
from panns_lightning.redact import redact, redact_hparams
from panns_lightning.shardset import Manifest, ShardSetError
from panns_lightning.shardset.folds import fold_selection
from panns_lightning.shardset.splits import has_splits, split_selection

log = logging.getLogger(__name__)

# The train stream's __len__ is exact (each rank yields steps_per_epoch batches, split over its
# workers by the stream itself): Lightning's generic warning about IterableDataset lengths with
# several workers does not apply to it.
warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")

Urls = str | Sequence[str] | None
SPLITS = ("train", "val", "test")


class AudioShardDataModule(pl.LightningDataModule):
    """Streams shard sets written by ``panns-prepare`` (docs/architecture.md) as batch dicts.

    ``*_dir`` is a shard-set directory holding ``manifest.json``, or the ``http(s)://`` URL of one
    (``URL/manifest.json``, ``URL/shard-*.tar``); ``*_urls`` optionally says where to read that
    set's shards from instead (brace patterns, ``pipe:`` commands, http URLs) while the manifest
    still comes from ``*_dir``. Batches: ``{"waveform": float32[B, T],
    "target": float32[B, C], "key": list[str]}``; train T is ``train_crop_samples`` when set.
    ``int16_batches``: train waveforms of int16 shards stay int16 (scaled by 1 / 32767 on the
    device, ``TaggingModule.on_after_batch_transfer``); ``pin_memory`` lets the host-to-device
    copy run without blocking.
    """

    def __init__(
        self,
        train_dir: str | None = None,
        val_dir: str | None = None,
        test_dir: str | None = None,
        *,
        train_urls: Urls = None,
        val_urls: Urls = None,
        test_urls: Urls = None,
        train_crop_samples: int | None = None,
        fold: int | None = None,
        use_splits: bool | None = None,
        pin_memory: bool = False,
        int16_batches: bool = False,
        **options: Any,
    ) -> None:
        """``options`` are :class:`~panns_lightning.data.options.StreamOptions` fields (batch_size, num_workers, ...).

        ``fold``: cross-validation over one shard set (train = every other fold, val/test = this
        one). ``use_splits``: each of train / val / test reads its own split of a shard set that
        records one (``panns-prepare folder`` / ``csv``); None: whenever the manifest has splits
        and no fold is chosen, so a split set never trains on its test clips by accident.
        """
        super().__init__()
        if fold is not None and use_splits:
            raise ValueError(
                "data.fold (cross-validation) and data.use_splits=true (train/val/test) exclude each other"
            )
        self.options = StreamOptions(**options)
        problem = random_access_problem(train_urls) if self.options.sampler == "panns" else None
        if problem is not None:
            raise ValueError(problem)
        # Record every option, defaults included: save_hyperparameters reads this frame's locals.
        options = dataclasses.asdict(self.options)
        self.save_hyperparameters()
        redact_hparams(self)  # shard URLs may carry tokens; checkpoints and loggers get these hparams
        self.dirs = {"train": train_dir, "val": val_dir, "test": test_dir}
        self.urls = {"train": train_urls, "val": val_urls, "test": test_urls}
        if all(directory is None for directory in self.dirs.values()):
            raise ValueError("AudioShardDataModule needs at least one of train_dir, val_dir, test_dir")
        self.train_crop_samples = train_crop_samples
        self.pin_memory = pin_memory
        self.int16_batches = int16_batches
        # Cross-validation over one shard set: train = every fold but this one, val/test = this one.
        self.fold = fold
        # Train / val / test from one shard set's recorded split (True, or None: if it has one).
        self.use_splits = use_splits
        self._epoch = SharedCount(0)
        self._resume_batches = SharedCount(0)
        self._errors = {split: ErrorLog(split, self.options.fail_fast) for split in SPLITS}
        self._counters_pid = os.getpid()
        self._manifests: dict[str, Manifest] | None = None
        self._rank_and_world: tuple[int, int] | None = None
        # data.sampler=panns: (epoch, batch, draw position) of a known point and the sequence's
        # seed; a resumed run takes both from its checkpoint (state_dict / load_state_dict).
        self._sampler_origin = (0, 0, 0)
        self._sampler_seed = self.options.seed
        self._train_index: Any = None

    # ----------------------------------------------------------------- what the data is

    @property
    def steps_per_epoch(self) -> int:
        """Train batches per epoch and rank."""
        return self.options.steps_per_epoch

    @property
    def num_classes(self) -> int:
        return self._reference_manifest().num_classes

    @property
    def labels(self) -> list[dict[str, Any]]:
        """The manifest's label list: ``[{"index", "mid", "name"}, ...]``."""
        return list(self._reference_manifest().labels)

    @property
    def label_names(self) -> list[str]:
        return self._reference_manifest().label_names

    @property
    def sample_rate(self) -> int:
        return self._reference_manifest().sample_rate

    @property
    def clip_samples(self) -> int:
        """Stored clip length of the reference set (train if given); train batches may be cropped shorter."""
        return self._reference_manifest().clip_samples

    @property
    def multilabel(self) -> bool:
        return self._reference_manifest().multilabel

    def manifest(self, split: str) -> Manifest:
        """The manifest of ``split`` ("train", "val" or "test"); ``KeyError`` if that split has no directory."""
        manifests = self._read_manifests()
        if split not in manifests:
            raise KeyError(f"no {split}_dir was given to AudioShardDataModule")
        return manifests[split]

    def training_data(self) -> dict[str, Any] | None:
        """What a model card records of the training data (``None`` without a train split).

        The set's name, split, location (credentials removed) and resample method; the clips
        trained on (after the fold / split selection) and their per-class counts, from the
        manifest; the clip length the model saw (the train crop when one is set).
        """
        if self.dirs.get("train") is None:
            return None
        manifest = self.manifest("train")
        spec = self._stream_spec("train")
        return {
            "dataset": manifest.dataset,
            "split": manifest.split,
            "location": redact(shard_location(self.dirs["train"] or "")),
            "num_clips": int(spec.num_clips),
            "class_counts": [int(count) for count in spec.class_counts],
            "set_clips": int(manifest.num_clips),
            "fold": self.fold,
            "sample_rate": int(manifest.sample_rate),
            "stored_clip_samples": int(manifest.clip_samples),
            "clip_samples": int(self.train_crop_samples or manifest.clip_samples),
            "resample": manifest.resample_method,
        }

    def check_selection(self) -> dict[str, int]:
        """Clips each configured split will read (after ``fold`` / ``use_splits``); ``ShardSetError`` if one has none.

        Lets an app fail before building a model when data.fold or a split does not exist.
        """
        return {split: self._stream_spec(split).num_clips for split, d in self.dirs.items() if d is not None}

    def uses_splits(self, split: str) -> bool:
        """Whether ``split`` reads the manifest's own train / val / test split."""
        if self.fold is not None or self.dirs.get(split) is None or self.use_splits is False:
            return False
        return bool(self.use_splits) or has_splits(self.manifest(split))

    # ----------------------------------------------------------------- Lightning hooks

    def setup(self, stage: str | None = None) -> None:
        """Read and cross-check manifests; take rank/world from the trainer (or torch.distributed)."""
        self._read_manifests()
        self._rank_and_world = self._detect_rank_and_world()
        self._own_counters()

    def _own_counters(self) -> None:
        """Give this process its own epoch and error counters if it was spawned with a copy of ours.

        ``ddp_spawn`` pickles the datamodule into every rank while spawning, and shared memory
        travels as shared memory then: all ranks would add their workers' errors into the same
        slots (and lose updates). Counters made here are shared with this rank's workers only.
        """
        if self._counters_pid == os.getpid():
            return
        self._epoch = SharedCount(self._epoch.value)
        self._resume_batches = SharedCount(self._resume_batches.value)
        self._errors = {split: ErrorLog(split, self.options.fail_fast) for split in SPLITS}
        self._counters_pid = os.getpid()

    def set_rank(self, rank: int, world_size: int) -> None:
        """Use this rank/world instead of detecting them (tools, tests, custom launchers)."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
        self._rank_and_world = (rank, world_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's shard permutation and seeds; called by :class:`StreamEpochCallback`."""
        self._epoch.value = epoch

    def set_resume_batches(self, batches: int) -> None:
        """Batches of the current epoch already trained on (a resumed run): the stream skips them."""
        self._resume_batches.value = max(0, int(batches))

    def error_counts(self) -> dict[str, dict[str, int]]:
        """Skipped clips and broken shards so far per split, summed over this process's workers."""
        return {split: errors.counts() for split, errors in self._errors.items()}

    def error_budget_counts(self, split: str) -> dict[str, int]:
        """``error_counts()[split]`` plus the clips read and the clips lost in broken shards."""
        return self._errors[split].budget_counts()

    def train_dataloader(self) -> DataLoader:
        trainer = self._trainer_or_none()
        if trainer is not None:
            self.set_epoch(trainer.current_epoch)
            self.set_resume_batches(batches_done_in_epoch(trainer, self.options.steps_per_epoch))
        return self._loader(self.train_stream(*self._rank_world()))

    def train_stream(self, rank: int, world_size: int) -> TrainClipStream | ExactClipStream:
        """The train stream one rank of ``world_size`` reads (its DataLoader workers each take a slot of it)."""
        if self.options.sampler == "panns":
            return self._exact_stream(rank, world_size)
        return TrainClipStream(self._stream_spec("train"), **self._train_stream_arguments(rank, world_size))

    def _train_stream_arguments(self, rank: int, world_size: int) -> dict[str, Any]:
        """What either train sampler takes from this DataModule for one rank."""
        return {
            "rank": rank,
            "world_size": world_size,
            "options": self.options,
            "crop_samples": self.train_crop_samples,
            "epoch": self._epoch,
            "resume_batches": self._resume_batches,
            "errors": self._errors["train"],
            "int16_batches": self.int16_batches,
        }

    def _exact_stream(self, rank: int, world_size: int) -> ExactClipStream:
        """``data.sampler=panns``: PANNs' draws from the train set's clip index (built once for older sets)."""
        if self._train_index is None:
            location = str(self.dirs["train"])
            self._train_index = load_train_index(
                location, self.manifest("train"), self._http, self.options.max_member_bytes
            )
        return ExactClipStream(
            self._stream_spec("train"),
            self._train_index,
            **self._train_stream_arguments(rank, world_size),
            origin=self._sampler_origin,
            seed=self._sampler_seed,
        )

    def state_dict(self) -> dict[str, Any]:
        """``data.sampler=panns``: the sampler's seed and draw position of the next batch, for the checkpoint.

        A resumed run goes on from there, also on another number of GPUs; the stream needs no
        state (its draws are a function of seed, epoch and slot): ``{}``.
        """
        trainer = self._trainer_or_none()
        if self.options.sampler != "panns" or trainer is None:
            return {}
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        per_step = self.options.batch_size * int(trainer.world_size)
        return sampler_checkpoint_state(
            self._sampler_origin,
            self._sampler_seed,
            int(trainer.current_epoch),
            int(progress.processed),
            steps_per_epoch=self.options.steps_per_epoch,
            draws_per_step=per_step,
        )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the PANNs sampler's state saved by :meth:`state_dict` (nothing for the stream)."""
        if self.options.sampler == "panns":
            restored = restored_sampler_state(state_dict, self.options.seed)
            if restored is not None:
                self._sampler_seed, self._sampler_origin = restored

    def val_dataloader(self) -> DataLoader | list:
        """The val loader; ``[]`` (Lightning's "no loader") when no ``val_dir`` was given."""
        return self._eval_loader("val") if self.dirs["val"] is not None else []

    def test_dataloader(self) -> DataLoader | list:
        """The test loader; ``[]`` when no ``test_dir`` was given."""
        return self._eval_loader("test") if self.dirs["test"] is not None else []

    # ----------------------------------------------------------------- helpers

    def _eval_loader(self, split: str) -> DataLoader:
        rank, world_size = self._rank_world()
        dataset = EvalClipStream(
            self._stream_spec(split),
            rank=rank,
            world_size=world_size,
            batch_size=self.options.batch_size,
            errors=self._errors[split],
        )
        return self._loader(dataset)

    def _loader(self, dataset: TrainClipStream | ExactClipStream | EvalClipStream) -> DataLoader:
        # Datasets yield whole batches: batch_size=None turns off DataLoader batching.
        train = isinstance(dataset, (TrainClipStream, ExactClipStream))
        loader_class = ResumableStreamLoader if train else DataLoader
        return loader_class(
            dataset,
            batch_size=None,
            num_workers=self.options.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=False,
        )

    def _stream_spec(self, split: str) -> StreamSpec:
        manifest = self.manifest(split)
        directory = self.dirs[split]
        assert directory is not None  # manifest() raised otherwise
        spec = StreamSpec.from_manifest(
            manifest, shard_urls(directory, manifest, self.urls[split]), self._http, self.options.max_member_bytes
        )
        where = shard_location(directory)
        try:
            if self.fold is not None:
                chosen = fold_selection(manifest, self.fold, held_out=split != "train", where=where)
            elif self.uses_splits(split):
                chosen = split_selection(manifest, split, where=where)
                log.info("%s: the manifest's '%s' split, %d clips", directory, split, chosen.num_clips)
            else:
                return spec
        except ValueError as error:
            raise ShardSetError(str(error)) from None
        return dataclasses.replace(
            spec, keep_keys=chosen.keys, class_counts=chosen.class_counts, num_clips=chosen.num_clips
        )

    def _read_manifests(self) -> dict[str, Manifest]:
        if self._manifests is None:
            # check_files=False: shards may be read from URL overrides, and a missing one counts
            # against the error budget rather than stopping the run.
            manifests = {
                split: load_manifest(directory, self._http)
                for split, directory in self.dirs.items()
                if directory is not None
            }
            _check_compatible(manifests, {split: shard_location(self.dirs[split] or "") for split in manifests})
            self._manifests = manifests
        return self._manifests

    @property
    def _http(self) -> HttpOptions:
        return self.options.http_options()

    def _reference_manifest(self) -> Manifest:
        return next(iter(self._read_manifests().values()))

    def _rank_world(self) -> tuple[int, int]:
        if self._rank_and_world is None:
            self._rank_and_world = self._detect_rank_and_world()
        return self._rank_and_world

    def _detect_rank_and_world(self) -> tuple[int, int]:
        if self._rank_and_world is not None:
            return self._rank_and_world
        trainer = self._trainer_or_none()
        if trainer is not None:
            return int(trainer.global_rank), int(trainer.world_size)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _trainer_or_none(self) -> pl.Trainer | None:
        return getattr(self, "trainer", None)


class StreamEpochCallback(pl.Callback):
    """Tells the streamed train set which epoch it is (Lightning does not, for IterableDatasets).

    Also logs the datamodule's read-error counters at the end of each train epoch (after that
    epoch's validation) as metrics ``data/bad_samples`` and ``data/bad_shards``: clips skipped and
    shards cut short since the run started, train + val + test, summed over ranks. A rising
    count in the training logs is how a damaged shard set shows up without stopping the run.
    """

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        target = _epoch_target(trainer)
        if target is not None:
            target.set_epoch(trainer.current_epoch)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = trainer.datamodule
        if not isinstance(datamodule, AudioShardDataModule):
            return
        datamodule.set_resume_batches(0)  # only the epoch a run resumes in starts part-way
        counts = datamodule.error_counts()
        for name in ("bad_samples", "bad_shards"):
            total = sum(split[name] for split in counts.values())
            pl_module.log(
                f"data/{name}",
                float(total),
                on_step=False,
                on_epoch=True,
                reduce_fx="sum",
                sync_dist=trainer.world_size > 1,
            )
        if any(value for split in counts.values() for value in split.values()):
            log.warning("rank %d: skipped data so far: %s", trainer.global_rank, counts)


class DataErrorBudgetExceeded(RuntimeError):
    """More of the data failed to read than ``data.error_budget`` allows."""


def error_budget_message(split: str, counts: dict[str, int], budget: float, min_clips: int) -> str | None:
    """Why ``counts`` exceed the budget, or None while they do not.

    Failed clips are the clips skipped plus the clips broken shards should have held (when the
    manifest says how many); the fraction is taken over all clips met so far, but over at least
    ``min_clips``, so that one bad clip among the first few does not end a run.
    """
    failed = counts["bad_samples"] + counts["lost_samples"]
    met = counts["read_samples"] + counts["bad_samples"] + counts["lost_samples"]
    if failed == 0 or failed <= budget * max(met, min_clips):
        return None
    return (
        f"{split} data over its error budget: {failed} of {met} clips ({failed / max(met, 1):.1%}) could not be "
        f"used ({counts['bad_samples']} unreadable, {counts['lost_samples']} in "
        f"{counts['bad_shards']} broken or missing shard(s)) > data.error_budget={budget}; the warnings above name "
        "each shard and key. Repair or re-convert the data, or raise data.error_budget"
    )


class DataErrorBudget(pl.Callback):
    """Stops the run when more than ``data.error_budget`` of the clips fail to read (train or val).

    Checked after every training batch on one process, every ``interval`` batches under DDP (the
    counts are summed over ranks, a collective every rank reaches at the same step, so all
    ranks stop together), and after each validation.
    """

    def __init__(self, interval: int = 50) -> None:
        self.interval = max(1, int(interval))

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.world_size == 1 or (batch_idx + 1) % self.interval == 0:
            self._check(trainer, "train")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._check(trainer, "val")

    def _check(self, trainer: pl.Trainer, split: str) -> None:
        datamodule = trainer.datamodule
        if not isinstance(datamodule, AudioShardDataModule):
            return
        counts = datamodule.error_budget_counts(split)
        if trainer.world_size > 1:
            names = sorted(counts)
            summed = trainer.strategy.reduce(
                torch.tensor(
                    [counts[name] for name in names], dtype=torch.float64, device=trainer.strategy.root_device
                ),
                reduce_op="sum",
            )
            counts = {name: int(value) for name, value in zip(names, summed.tolist())}
        options = datamodule.options
        message = error_budget_message(split, counts, options.error_budget, options.error_budget_min_clips)
        if message is not None:
            raise DataErrorBudgetExceeded(message)


class ResumableStreamLoader(DataLoader):
    """The train loader; resumable mid-epoch, which Lightning asks loaders to declare with these two methods.

    The position needs no saved state: the stream of an epoch is a function of (seed, epoch,
    slot), and the batches to skip come from the loop's restored progress
    (:func:`batches_done_in_epoch`), which, unlike this loader, knows what was trained on
    rather than prefetched.
    """

    def state_dict(self) -> dict[str, Any]:
        dataset = self.dataset
        return {"epoch": int(dataset.epoch.value)} if isinstance(dataset, (TrainClipStream, ExactClipStream)) else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to restore (see the class docstring)."""


def batches_done_in_epoch(trainer: pl.Trainer, steps_per_epoch: int) -> int:
    """Train batches of the current epoch a restored checkpoint had finished; 0 on a fresh start.

    Read when the train loader is built, i.e. after Lightning restored the loop state and before
    it adjusts it: a checkpoint saved in ``on_train_batch_end`` has ``processed`` one ahead of
    ``completed`` (Lightning completes that batch on restart), one saved after the batch (SIGTERM,
    epoch end) has them equal; ``processed`` is the batches done in both cases. A finished epoch
    counts as 0: the run goes on with the next one.
    """
    progress = trainer.fit_loop.epoch_loop.batch_progress.current
    done = int(progress.processed)
    return done if 0 < done < steps_per_epoch else 0


def _epoch_target(trainer: pl.Trainer) -> Any:
    """The object whose ``set_epoch`` steers the train stream: the datamodule, else the dataset."""
    datamodule = trainer.datamodule
    if datamodule is not None and callable(getattr(datamodule, "set_epoch", None)):
        return datamodule
    loader = trainer.train_dataloader
    dataset = getattr(loader, "dataset", None)
    if dataset is not None and callable(getattr(dataset, "set_epoch", None)):
        return dataset
    return None


def _check_compatible(manifests: dict[str, Manifest], where: dict[str, str]) -> None:
    """Train/val/test must share the label set and sample rate, or metrics and models silently break.

    ``where`` names each split's manifest (path or URL) in the message.
    """
    items = list(manifests.items())
    if not items:
        return
    first_split, first = items[0]
    first_path = where[first_split]
    for split, manifest in items[1:]:
        path = where[split]
        if _label_identity(manifest) != _label_identity(first):
            raise ShardSetError(
                f"label sets differ: {first_path} has {first.num_classes} labels, {path} has "
                f"{manifest.num_classes}; first difference: {_first_label_difference(first, manifest)}"
            )
        if manifest.sample_rate != first.sample_rate:
            raise ShardSetError(
                f"sample rates differ: {first_path} has {first.sample_rate} Hz, {path} has {manifest.sample_rate} Hz"
            )


def _label_identity(manifest: Manifest) -> list[tuple[Any, Any, Any]]:
    return [(label.get("index"), label.get("mid"), label.get("name")) for label in manifest.labels]


def _first_label_difference(a: Manifest, b: Manifest) -> str:
    left, right = _label_identity(a), _label_identity(b)
    for position, (x, y) in enumerate(zip(left, right)):
        if x != y:
            return f"position {position}: {x} vs {y}"
    return f"one list is longer ({len(left)} vs {len(right)})"

"""The fine-tuning datasets panns-prepare converts, by name: one entry each.

An entry says what ``panns-prepare NAME`` needs to know: its help text, the default clip length,
the reader (``module:function``, imported when the command runs) and the reader's own options,
which become command-line flags. Adding a cross-validation dataset is a reader module, one entry
here, an experiment (``experiments/finetune_NAME.yaml``) and a doc; the folds a shard set holds
are read from its manifest (``python -m panns_lightning.shardset.folds DIR``), not listed anywhere.
AudioSet (segment CSVs, a held-out validation split) and the synthetic generator have commands of
their own; AudioSet as other projects pack it into HDF5 has one command per layout
(``AUDIOSET_HDF5_LAYOUTS``), which shares the options of ``panns-prepare audioset``. Your own data
(``folder``, ``csv``: ``datasets/custom.py``, ``datasets/custom_csv.py``) is in :data:`CUSTOM_DATASETS`: its readers take their
inputs as options, and folds or splits come from the data or the command.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any

from panns_lightning.shardset.folds import FoldedDataset


@dataclass(frozen=True)
class ReaderOption:
    """One keyword argument of a reader, exposed as ``--flag`` (``keyword`` with ``-`` for ``_``)."""

    keyword: str
    help: str
    default: Any = None
    type: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None
    switch: bool = False  # a flag without a value: false unless given
    repeatable: bool = False  # may be given several times: a list (None when never given)
    required: bool = False
    flag_name: str | None = None  # the flag when it is not the keyword (e.g. --csv for csv_path)

    @property
    def flag(self) -> str:
        return "--" + (self.flag_name or self.keyword).replace("_", "-")

    def argparse_options(self) -> dict[str, Any]:
        if self.switch:
            return {"action": "store_true", "help": self.help, "dest": self.keyword}
        if self.repeatable:
            return {"action": "append", "default": None, "type": self.type, "help": self.help, "dest": self.keyword}
        options: dict[str, Any] = {
            "default": self.default,
            "help": self.help,
            "required": self.required,
            "dest": self.keyword,
        }
        if self.flag_name:
            options["metavar"] = self.flag_name.upper()
        if self.type is not None:
            options["type"] = self.type
        if self.choices is not None:
            options["choices"] = self.choices
        return options


@dataclass(frozen=True)
class FoldedDatasetEntry:
    """A dataset converted into one single-label shard set whose clips carry their cross-validation fold."""

    name: str
    description: str
    root_help: str
    clip_seconds: float
    reader: str
    options: tuple[ReaderOption, ...] = field(default=())
    seeded: bool = False  # the reader draws its folds with the command's --seed

    def read(self, root: Any, **options: Any) -> FoldedDataset:
        module, function = self.reader.split(":")
        return getattr(import_module(module), function)(root, **options)


FOLDED_DATASETS: dict[str, FoldedDatasetEntry] = {
    entry.name: entry
    for entry in (
        FoldedDatasetEntry(
            name="esc50",
            description="ESC-50 (audio/*.wav + meta/esc50.csv), official 5 folds",
            root_help="the ESC-50 folder (ESC-50-master)",
            clip_seconds=5.0,
            reader="panns_lightning.datasets.esc50:read_esc50",
            options=(ReaderOption("esc10", "only the ESC-10 subset (10 classes, re-indexed)", switch=True),),
        ),
        FoldedDatasetEntry(
            name="gtzan",
            description="GTZAN (genres/<genre>/*.au or genres_original/<genre>/*.wav), stratified k folds",
            root_help="folder holding genres/ or genres_original/",
            clip_seconds=30.0,
            reader="panns_lightning.datasets.gtzan:read_gtzan",
            options=(
                ReaderOption("num_folds", "folds (default 10)", default=10, type=int),
                ReaderOption("split_file", "text list of the files to keep (e.g. a fault-filtered split)", type=Path),
            ),
            seeded=True,
        ),
        FoldedDatasetEntry(
            name="ravdess",
            description="RAVDESS audio (Actor_NN/MM-VV-EE-II-SS-RR-AA.wav), folds by actor",
            root_help="folder holding the Actor_NN folders",
            clip_seconds=4.0,
            reader="panns_lightning.datasets.ravdess:read_ravdess",
            options=(
                ReaderOption(
                    "channel",
                    "speech, song or both (default speech)",
                    default="speech",
                    choices=("speech", "song", "both"),
                ),
                ReaderOption(
                    "num_folds", "folds of actors (default 4: 6 actors each, 3 male + 3 female)", default=4, type=int
                ),
            ),
        ),
    )
}


@dataclass(frozen=True)
class Hdf5LayoutEntry:
    """An HDF5 packing of AudioSet: ``panns-prepare NAME --hdf5 FILE ...`` writes one AudioSet shard set from it."""

    name: str
    description: str
    hdf5_help: str
    reader: str  # ``module:function(paths, labels, *, progress, **options)`` returning an ``Hdf5Import``
    options: tuple[ReaderOption, ...] = field(default=())

    def read(self, paths: Any, labels: Any, **options: Any) -> Any:
        module, function = self.reader.split(":")
        return getattr(import_module(module), function)(paths, labels, **options)


AUDIOSET_HDF5_LAYOUTS: dict[str, Hdf5LayoutEntry] = {
    entry.name: entry
    for entry in (
        Hdf5LayoutEntry(
            name="audioset-hdf5",
            description="upstream PANNs' packed HDF5 (int16 waveforms) or its index files",
            hdf5_help="packed waveform files (balanced_train.h5, unbalanced_train_part00.h5, ...) and/or index files "
            "(indexes/full_train.h5), in any mix",
            reader="panns_lightning.datasets.audioset_hdf5:read_packed_hdf5",
            options=(
                ReaderOption(
                    "waveform_dir",
                    "where an index file's packed files are looked up when its hdf5_path no longer exists "
                    "(by trailing path components; default: beside the index and two folders up); repeatable",
                    type=Path,
                    repeatable=True,
                ),
            ),
        ),
        Hdf5LayoutEntry(
            name="audioset-mp3-hdf5",
            description="AudioSet as mp3 bytes in HDF5 (PaSST / EfficientAT's *_mp3.hdf)",
            hdf5_help="e.g. balanced_train_segments_mp3.hdf, unbalanced_train_segments_mp3.hdf",
            reader="panns_lightning.datasets.audioset_hdf5:read_mp3_hdf5",
        ),
    )
}


@dataclass(frozen=True)
class CustomDatasetEntry:
    """Your own data in a generic layout: the reader takes every input (paths included) as an option."""

    name: str
    description: str
    reader: str
    options: tuple[ReaderOption, ...]

    def read(self, **options: Any) -> Any:
        module, function = self.reader.split(":")
        return getattr(import_module(module), function)(**options)


CUSTOM_DATASETS: dict[str, CustomDatasetEntry] = {
    entry.name: entry
    for entry in (
        CustomDatasetEntry(
            name="folder",
            description="your own audio, one sub-folder per class (ROOT/<class>/**/*.wav, or ROOT/<train|val|test>/<class>/...)",
            reader="panns_lightning.datasets.custom:read_folder",
            options=(ReaderOption("root", "folder holding one sub-folder per class", type=Path, required=True),),
        ),
        CustomDatasetEntry(
            name="csv",
            description="your own audio listed in a CSV (file, label(s), optional fold / split / start / end columns)",
            reader="panns_lightning.datasets.custom_csv:read_csv_table",
            options=(
                ReaderOption(
                    "csv_path", "the CSV (a header row names the columns)", type=Path, required=True, flag_name="csv"
                ),
                ReaderOption(
                    "audio_dir", "folder the file names are relative to (default: the CSV's folder)", type=Path
                ),
                ReaderOption(
                    "file_column", "column of audio file names (default: filename, file, path, audio or fname)"
                ),
                ReaderOption("label_column", "column of labels (default: labels, label, class, category or tags)"),
                ReaderOption(
                    "label_separator",
                    "splits a label cell into several labels: multi-label (default ','; '' never splits)",
                    default=",",
                ),
                ReaderOption("fold_column", "column of fold numbers 1..k (default: fold, if present)"),
                ReaderOption("split_column", "column of train / val / test (default: split, if present)"),
                ReaderOption("start_column", "column of segment starts in seconds (default: start, if present)"),
                ReaderOption("end_column", "column of segment ends in seconds (default: end, if present)"),
                ReaderOption(
                    "min_segment_seconds",
                    "skip start/end segments shorter than this, reported (default 0.05; 0: keep every segment)",
                    default=0.05,
                    type=float,
                ),
            ),
        ),
    )
}

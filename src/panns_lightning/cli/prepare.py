"""``panns-prepare``: make datasets and convert them into shard sets.

Subcommands: ``synthetic`` (write the AudioSet look-alike), ``audioset`` (segment CSV + audio →
shards; ``--val-fraction`` holds out a stratified validation shard set), ``audioset-hdf5`` and
``audioset-mp3-hdf5`` (AudioSet packed into HDF5 by upstream PANNs or PaSST / EfficientAT → the
same shard set, with the same options; ``AUDIOSET_HDF5_LAYOUTS``), one per registered
cross-validation dataset (``datasets/registry.py``: esc50 / gtzan / ravdess, official layouts →
one shard set with folds), ``folder`` and ``csv`` (your own data → one shard set with folds or a
train / val / test split), ``inspect`` (summarise a shard set). This module builds the command
line; the shared options are one table (``prepare_options.py``), the runners live in
``prepare_audioset.py`` and ``prepare_folds.py``, exit codes in ``prepare_run.py`` (0 ok, 1 nothing
usable, 2 usage error, 3 the output could not be written). Unusable audio files are never an
error: they are listed in the manifest's ``skipped`` with a reason (docs/fault_tolerance.md).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from panns_lightning.cli.entry import console_entry
from panns_lightning.cli.prepare_audioset import run_audioset, run_audioset_hdf5
from panns_lightning.cli.prepare_folds import run_custom, run_folded
from panns_lightning.cli.prepare_options import HOLDOUT_FLAGS, WRITER_FLAGS, add_options
from panns_lightning.cli.prepare_run import EXIT_OK, EXIT_USAGE, usage_error
from panns_lightning.datasets.registry import AUDIOSET_HDF5_LAYOUTS, CUSTOM_DATASETS, FOLDED_DATASETS

__all__ = ["EXIT_OK", "EXIT_USAGE", "build_parser", "main"]

# What the AudioSet commands (CSV and HDF5) say differently from the other converters.
_AUDIOSET_CHANGES = {
    "--clips-per-shard": {"default": 1000},
    "--seed": {"help": "seed of the shard assignment and of the --val-fraction split"},
    "--overwrite": {"help": "replace the shards in a non-empty --out (and --val-out)"},
}


@console_entry
def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.command_line = "panns-prepare " + " ".join(argv)
    return args.run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="panns-prepare", description="Prepare audio datasets as webdataset shard sets."
    )
    names = ["synthetic", "audioset", *AUDIOSET_HDF5_LAYOUTS, *FOLDED_DATASETS, *CUSTOM_DATASETS, "inspect"]
    commands = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(names) + "}")

    synthetic = commands.add_parser("synthetic", help="write a small AudioSet-like dataset in AudioSet's own layout")
    synthetic.add_argument("--num-classes", type=int, default=None, help="classes (default 12)")
    synthetic.add_argument(
        "--num-train", type=int, default=None, help="clips in balanced_train_segments.csv (default 2000)"
    )
    synthetic.add_argument("--num-eval", type=int, default=None, help="clips in eval_segments.csv (default 300)")
    add_options(
        synthetic,
        ("--out", "--clip-seconds", "--seed", "--overwrite", "--quiet"),
        {
            "--out": {"help": "folder for CSVs and audio/"},
            "--clip-seconds": {"default": None, "help": "clip length (default 2.0)"},
            "--seed": {"help": "seed of the generated audio and labels"},
            "--overwrite": {"help": "write into a non-empty folder"},
        },
    )
    synthetic.set_defaults(run=run_synthetic)

    audioset = commands.add_parser("audioset", help="convert an AudioSet segment CSV and its audio into shards")
    audioset.add_argument("--segments", required=True, type=Path, help="e.g. balanced_train_segments.csv")
    audioset.add_argument("--audio-dir", required=True, type=Path, help="folder searched recursively for the clips")
    audioset.add_argument("--labels", required=True, type=Path, help="class_labels_indices.csv")
    audioset.add_argument(
        "--audio-pattern",
        action="append",
        default=None,
        metavar="PATTERN",
        help="file name pattern with {ytid}, {start}, {end}; '.*' = any audio extension; repeatable "
        "(default: 'Y{ytid}.*' and '{ytid}_{start}_{end}.*')",
    )
    add_options(
        audioset,
        WRITER_FLAGS + HOLDOUT_FLAGS,
        {**_AUDIOSET_CHANGES, "--split": {"help": "split name in the manifest (default: from the CSV name)"}},
    )
    audioset.set_defaults(run=run_audioset)

    _add_hdf5_commands(commands)
    _add_folded_commands(commands)
    _add_custom_commands(commands)

    inspect = commands.add_parser("inspect", help="summarise a shard set (class counts, sampler behaviour)")
    inspect.add_argument("shard_dir", type=Path)
    inspect.add_argument("--balanced", action="store_true", help="draw through the balanced sampler")
    inspect.add_argument("--draws", type=int, default=10000)
    inspect.add_argument("--batch-size", type=int, default=32)
    inspect.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="PATH",
        help="with --draws: write a PNG of per-class counts (raw, ours, PANNs)",
    )
    add_options(inspect, ("--seed",), {"--seed": {"help": "seed of the draws"}})
    inspect.set_defaults(run=run_inspect)
    return parser


def _add_hdf5_commands(commands: argparse._SubParsersAction) -> None:
    """One command per HDF5 packing of AudioSet (``datasets/registry.py``): the ``audioset`` shard set from it."""
    for entry in AUDIOSET_HDF5_LAYOUTS.values():
        sub = commands.add_parser(entry.name, help=f"convert {entry.description} into AudioSet shards")
        sub.add_argument("--hdf5", required=True, nargs="+", type=Path, metavar="FILE", help=entry.hdf5_help)
        sub.add_argument("--labels", required=True, type=Path, help="class_labels_indices.csv (the target columns)")
        for option in entry.options:
            sub.add_argument(option.flag, **option.argparse_options())
        add_options(
            sub,
            WRITER_FLAGS + HOLDOUT_FLAGS,
            {
                **_AUDIOSET_CHANGES,
                "--clip-seconds": {
                    "default": None,
                    "help": "pad/crop to this length (default: the packed rows' own length; 10 for mp3)",
                },
                "--split": {"help": "split name in the manifest (default: from the file names)"},
            },
        )
        sub.set_defaults(run=run_audioset_hdf5, layout=entry)


def _add_folded_commands(commands: argparse._SubParsersAction) -> None:
    """One command per registered cross-validation dataset (``datasets/registry.py``): one shard set, folds in clips and manifest."""
    for entry in FOLDED_DATASETS.values():
        sub = commands.add_parser(entry.name, help=f"convert {entry.description} into shards")
        sub.add_argument("--root", required=True, type=Path, help=entry.root_help)
        for option in entry.options:
            sub.add_argument(option.flag, **option.argparse_options())
        seed_help = "seed of the shard assignment" + (" and of the folds" if entry.seeded else "")
        add_options(
            sub, WRITER_FLAGS, {"--clip-seconds": {"default": entry.clip_seconds}, "--seed": {"help": seed_help}}
        )
        sub.set_defaults(run=run_folded, dataset=entry)


def _add_custom_commands(commands: argparse._SubParsersAction) -> None:
    """``folder`` and ``csv`` (``datasets/registry.py``): your own data → one shard set with folds or splits."""
    for entry in CUSTOM_DATASETS.values():
        sub = commands.add_parser(entry.name, help=f"convert {entry.description} into shards")
        for option in entry.options:
            sub.add_argument(option.flag, **option.argparse_options())
        sub.add_argument("--name", default=None, help="dataset name in the manifest (default: the folder / CSV name)")
        sub.add_argument(
            "--multilabel", action="store_true", help="multi-label even if every clip has one label (BCE, mAP)"
        )
        sub.add_argument(
            "--num-folds", type=int, default=None, metavar="K", help="draw K stratified folds (cross-validation)"
        )
        for split in ("val", "test"):  # a split of the data itself, not --val-fraction's held-out shard set
            sub.add_argument(
                f"--{split}-fraction",
                type=float,
                default=None,
                metavar="F",
                help=f"hold out this fraction, stratified by label, as the {split} split where the data has none "
                "(default 0.1; 0: none)",
            )
        add_options(sub, WRITER_FLAGS, {"--seed": {"help": "seed of the shard assignment and of drawn folds/splits"}})
        sub.set_defaults(run=run_custom, dataset=entry)


def run_synthetic(args: argparse.Namespace) -> int:
    from panns_lightning.datasets import synthetic

    options = {
        "num_classes": args.num_classes if args.num_classes is not None else synthetic.DEFAULT_NUM_CLASSES,
        "num_train": args.num_train if args.num_train is not None else synthetic.DEFAULT_NUM_TRAIN,
        "num_eval": args.num_eval if args.num_eval is not None else synthetic.DEFAULT_NUM_EVAL,
        "clip_seconds": args.clip_seconds if args.clip_seconds is not None else synthetic.DEFAULT_CLIP_SECONDS,
    }
    try:
        dataset = synthetic.generate_synthetic_audioset(
            args.out, seed=args.seed, overwrite=args.overwrite, progress=not args.quiet, **options
        )
    except (ValueError, FileExistsError) as error:
        return usage_error("synthetic", str(error))
    print(
        f"wrote {dataset.num_files} clips ({options['num_classes']} classes, {options['clip_seconds']} s) to {dataset.root}"
    )
    for split, counts in dataset.class_counts.items():
        print(f"  {split}: {dataset.segments[split].name}  positives per class min {min(counts)} / max {max(counts)}")
    print("convert with, e.g.:")
    for split, path in dataset.segments.items():
        print(
            f"  panns-prepare audioset --segments {path} --audio-dir {dataset.audio_dir} "
            f"--labels {dataset.labels_csv} --sample-rate 16000 --clip-seconds {options['clip_seconds']} --out SHARDS/{split}"
        )
    return EXIT_OK


def run_inspect(args: argparse.Namespace) -> int:
    try:
        from panns_lightning.data.diagnostics.inspect import run_inspect as inspect_shards
    except ImportError as error:
        return usage_error("inspect", f"the inspector is not available ({error})")
    outcome = inspect_shards(
        args.shard_dir,
        balanced=args.balanced,
        draws=args.draws,
        seed=args.seed,
        batch_size=args.batch_size,
        plot=args.plot,
    )
    return outcome if isinstance(outcome, int) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

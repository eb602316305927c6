"""``panns-prepare``: make datasets and convert them into shard sets.

Subcommands: ``synthetic`` (write the AudioSet look-alike), ``audioset`` (segment CSV + audio →
shards; ``--val-fraction`` holds out a stratified validation shard set), ``audioset-hdf5`` and
``audioset-mp3-hdf5`` (AudioSet packed into HDF5 by upstream PANNs or PaSST / EfficientAT → the
same shard set, with the same options; ``AUDIOSET_HDF5_LAYOUTS``), one per registered
cross-validation dataset (``datasets/registry.py``: esc50 / gtzan / ravdess, official layouts →
one shard set with folds), ``folder`` and ``csv`` (your own data → one shard set with folds or a
train / val / test split), ``inspect`` (summarise a shard set).
Exit codes: 0 ok, 1 nothing usable, 2 usage error (an existing ``--out`` without ``--overwrite``
included: conversions never resume), 3 the output could not be written (disk full,
permissions). Unusable audio files are never an error: they are listed in the manifest's
``skipped`` with a reason (docs/fault_tolerance.md).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar

from panns_lightning.cli.entry import console_entry
from panns_lightning.datasets.registry import AUDIOSET_HDF5_LAYOUTS, CUSTOM_DATASETS, FOLDED_DATASETS

if TYPE_CHECKING:
    from panns_lightning.labels import LabelSet
    from panns_lightning.shardset import Manifest
    from panns_lightning.shardset.records import ClipRecord, ReaderResult, SkippedClip

EXIT_OK, EXIT_NOTHING_USABLE, EXIT_USAGE, EXIT_WRITE_FAILED = 0, 1, 2, 3


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
    synthetic.add_argument("--out", required=True, type=Path, help="folder for CSVs and audio/")
    synthetic.add_argument("--num-classes", type=int, default=None, help="classes (default 12)")
    synthetic.add_argument(
        "--num-train", type=int, default=None, help="clips in balanced_train_segments.csv (default 2000)"
    )
    synthetic.add_argument("--num-eval", type=int, default=None, help="clips in eval_segments.csv (default 300)")
    synthetic.add_argument("--clip-seconds", type=float, default=None, help="clip length (default 2.0)")
    synthetic.add_argument("--seed", type=int, default=0)
    synthetic.add_argument("--overwrite", action="store_true", help="write into a non-empty folder")
    synthetic.add_argument("--quiet", action="store_true", help="no progress bar")
    synthetic.set_defaults(run=run_synthetic)

    audioset = commands.add_parser("audioset", help="convert an AudioSet segment CSV and its audio into shards")
    audioset.add_argument("--segments", required=True, type=Path, help="e.g. balanced_train_segments.csv")
    audioset.add_argument("--audio-dir", required=True, type=Path, help="folder searched recursively for the clips")
    audioset.add_argument("--labels", required=True, type=Path, help="class_labels_indices.csv")
    audioset.add_argument("--out", required=True, type=Path, help="output shard directory")
    audioset.add_argument("--sample-rate", type=int, default=32000)
    audioset.add_argument("--clip-seconds", type=float, default=10.0)
    audioset.add_argument(
        "--audio-pattern",
        action="append",
        default=None,
        metavar="PATTERN",
        help="file name pattern with {ytid}, {start}, {end}; '.*' = any audio extension; repeatable "
        "(default: 'Y{ytid}.*' and '{ytid}_{start}_{end}.*')",
    )
    _add_audioset_options(audioset, split_from="the CSV name")
    audioset.set_defaults(run=run_audioset)

    _add_hdf5_commands(commands)
    _add_folded_commands(commands)
    _add_custom_commands(commands)

    inspect = commands.add_parser("inspect", help="summarise a shard set (class counts, sampler behaviour)")
    inspect.add_argument("shard_dir", type=Path)
    inspect.add_argument("--balanced", action="store_true", help="draw through the balanced sampler")
    inspect.add_argument("--draws", type=int, default=10000)
    inspect.add_argument("--seed", type=int, default=0)
    inspect.add_argument("--batch-size", type=int, default=32)
    inspect.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="PATH",
        help="with --draws: write a PNG of per-class counts (raw, ours, PANNs)",
    )
    inspect.set_defaults(run=run_inspect)
    return parser


def _add_audioset_options(parser: argparse.ArgumentParser, *, split_from: str) -> None:
    """The shard-set options every AudioSet command shares (storage, sharding, workers, --val-fraction, ...)."""
    parser.add_argument("--storage", choices=("int16", "flac"), default="int16")
    _add_resample_option(parser)
    _add_decode_timeout_option(parser)
    parser.add_argument("--clips-per-shard", type=int, default=1000)
    parser.add_argument(
        "--min-shards",
        type=int,
        default=8,
        help="at least this many shards (capped at the clip count), so every DataLoader worker gets one",
    )
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="decoding processes (0: in this process)"
    )
    parser.add_argument("--split", default=None, help=f"split name in the manifest (default: from {split_from})")
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=None,
        metavar="F",
        help="hold out this fraction of the clips (stratified by label) as a validation shard set in --val-out; "
        "the rest goes to --out (e.g. 0.02)",
    )
    parser.add_argument(
        "--val-out",
        type=Path,
        default=None,
        metavar="DIR",
        help="shard directory of the held-out clips (default: --out with '_val' appended)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the shard assignment and of the --val-fraction split"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the shards in a non-empty --out (and --val-out)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_hdf5_commands(commands: argparse._SubParsersAction) -> None:
    """One command per HDF5 packing of AudioSet (``datasets/registry.py``): the ``audioset`` shard set from it."""
    for entry in AUDIOSET_HDF5_LAYOUTS.values():
        sub = commands.add_parser(entry.name, help=f"convert {entry.description} into AudioSet shards")
        sub.add_argument("--hdf5", required=True, nargs="+", type=Path, metavar="FILE", help=entry.hdf5_help)
        sub.add_argument("--labels", required=True, type=Path, help="class_labels_indices.csv (the target columns)")
        sub.add_argument("--out", required=True, type=Path, help="output shard directory")
        sub.add_argument("--sample-rate", type=int, default=32000)
        sub.add_argument(
            "--clip-seconds",
            type=float,
            default=None,
            help="pad/crop to this length (default: the packed rows' own length; 10 for mp3)",
        )
        for option in entry.options:
            sub.add_argument(option.flag, **option.argparse_options())
        _add_audioset_options(sub, split_from="the file names")
        sub.set_defaults(run=run_audioset_hdf5, layout=entry)


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
        print(f"panns-prepare synthetic: error: {error}", file=sys.stderr)
        return EXIT_USAGE
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


def _add_resample_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--resample",
        choices=("sinc", "decimate"),
        default="sinc",
        help="sinc: band-limited resampling to --sample-rate (default); decimate: upstream PANNs' way, "
        "the clip at 32 kHz then every k-th sample (--sample-rate 16000 or 8000), for fine-tuning its 16/8 kHz checkpoints",
    )


def _add_decode_timeout_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--decode-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="skip a file still decoding after this long and replace its worker process, so that one file "
        "that hangs a decoder cannot stall the conversion (default 60; 0: no limit; needs --workers >= 1)",
    )


def _decode_timeout_problem(args: argparse.Namespace) -> str | None:
    if args.decode_timeout < 0:
        return f"--decode-timeout must be >= 0 seconds (0: no limit), got {args.decode_timeout:g}"
    return None


def _resample_problem(args: argparse.Namespace) -> str | None:
    """Why ``--resample decimate`` cannot give ``--sample-rate`` (``None`` if it can)."""
    if args.resample != "decimate" or args.sample_rate <= 0:
        return None
    from panns_lightning.audio import decimation_step

    try:
        decimation_step(args.sample_rate)
    except ValueError as error:
        return f"--resample decimate: {error}"
    return None


def run_audioset(args: argparse.Namespace) -> int:
    from panns_lightning.datasets.audioset import read_audioset, split_name
    from panns_lightning.labels import LabelFileError, read_label_csv

    usage_problems = [
        f"{flag} {path} not found"
        for flag, path in (("--segments", args.segments), ("--labels", args.labels))
        if not path.is_file()
    ]
    if not args.audio_dir.is_dir():
        usage_problems.append(f"--audio-dir {args.audio_dir} is not a directory")
    if args.sample_rate <= 0 or args.clip_seconds <= 0 or args.clips_per_shard <= 0:
        usage_problems.append("--sample-rate, --clip-seconds and --clips-per-shard must be positive")
    usage_problems += filter(
        None, [_rate_problem(args), _resample_problem(args), _decode_timeout_problem(args), *_holdout_problems(args)]
    )
    if usage_problems:
        return _usage_error("audioset", "; ".join(usage_problems))
    try:
        labels = read_label_csv(args.labels)
        result = read_audioset(args.segments, args.audio_dir, labels, audio_patterns=args.audio_pattern)
    except (LabelFileError, ValueError, UnicodeDecodeError, OSError, csv.Error) as error:
        return _usage_error("audioset", str(error))
    for warning in result.warnings[:10]:
        print(f"warning: {warning}", file=sys.stderr)
    if len(result.warnings) > 10:
        print(f"warning: ... and {len(result.warnings) - 10} more rows with dropped labels", file=sys.stderr)
    split = args.split or split_name(args.segments)
    print(f"{args.segments.name}: {len(result.records)} clips found, {len(result.skipped)} skipped before decoding")
    return _convert_audioset(args, "audioset", result, labels, split)


def run_audioset_hdf5(args: argparse.Namespace) -> int:
    from panns_lightning.datasets.audioset_hdf5 import split_name
    from panns_lightning.datasets.hdf5_rows import MissingHdf5Support, close_open_files
    from panns_lightning.labels import LabelFileError, read_label_csv

    command = args.layout.name
    usage_problems = [f"--hdf5 {path} not found" for path in args.hdf5 if not path.is_file()]
    if not args.labels.is_file():
        usage_problems.append(f"--labels {args.labels} not found")
    if args.sample_rate <= 0 or (args.clip_seconds is not None and args.clip_seconds <= 0) or args.clips_per_shard <= 0:
        usage_problems.append("--sample-rate, --clip-seconds and --clips-per-shard must be positive")
    usage_problems += filter(
        None, [_rate_problem(args), _resample_problem(args), _decode_timeout_problem(args), *_holdout_problems(args)]
    )
    if usage_problems:
        return _usage_error(command, "; ".join(usage_problems))
    options = {option.keyword: getattr(args, option.keyword) for option in args.layout.options}
    try:
        labels = read_label_csv(args.labels)
        found = args.layout.read(args.hdf5, labels, progress=not args.quiet, **options)
    except (MissingHdf5Support, LabelFileError, ValueError, OSError) as error:
        return _usage_error(command, str(error))
    if args.clip_seconds is None:
        args.clip_seconds = found.clip_seconds or 10.0
    result = found.result
    names = ", ".join(path.name for path in args.hdf5[:3]) + (
        f" and {len(args.hdf5) - 3} more" if len(args.hdf5) > 3 else ""
    )
    print(f"{names}: {len(result.records)} clips found, {len(result.skipped)} skipped before decoding")
    try:
        return _convert_audioset(args, command, result, labels, args.split or split_name(args.hdf5), found.load_clip)
    finally:
        close_open_files()


def _convert_audioset(
    args: argparse.Namespace,
    command: str,
    result: ReaderResult,
    labels: LabelSet,
    split: str,
    load_clip: Callable[..., Any] | None = None,
) -> int:
    """Write the reader's records as one AudioSet shard set, or two with ``--val-fraction``; the exit code."""
    extra = {"warnings": result.warnings} if result.warnings else {}
    train_records = result.records
    if args.val_fraction is not None and result.records:  # no records: the writer says "nothing usable"
        held_out = _hold_out_validation(args, result.records, command)
        if isinstance(held_out, int):
            return held_out
        train_records, val_records, holdout = held_out
        # The small set first: a problem with it shows in seconds, not after the long conversion.
        written = _write_audioset(
            args,
            command,
            val_records,
            args.val_out,
            labels,
            f"{split}_val",
            [],
            {"holdout": {"role": "val", **holdout, "other": str(args.out)}},
            load_clip,
        )
        if isinstance(written, int):
            return written
        _print_skips(written.skipped, stream=sys.stdout)
        extra["holdout"] = {"role": "train", **holdout, "other": str(args.val_out)}
    written = _write_audioset(args, command, train_records, args.out, labels, split, result.skipped, extra, load_clip)
    if isinstance(written, int):
        return written
    _print_skips(written.skipped, stream=sys.stdout)
    return EXIT_OK


def _write_audioset(
    args: argparse.Namespace,
    command: str,
    records: Sequence[ClipRecord],
    out: Path,
    labels: LabelSet,
    split: str,
    skipped: Sequence[SkippedClip],
    extra: dict[str, Any],
    load_clip: Callable[..., Any] | None = None,
) -> Manifest | int:
    """One AudioSet shard set with the command's options; the manifest, or an exit code."""
    from panns_lightning.shardset.writer import write_shards

    return _run_conversion(
        command,
        out,
        lambda: write_shards(
            records,
            out,
            sample_rate=args.sample_rate,
            clip_samples=int(round(args.clip_seconds * args.sample_rate)),
            labels=labels.to_manifest(),
            dataset="audioset",
            split=split,
            storage=args.storage,
            clips_per_shard=args.clips_per_shard,
            min_shards=args.min_shards,
            num_workers=args.workers,
            multilabel=True,
            seed=args.seed,
            skipped=skipped,
            extra_manifest=extra or None,
            created_by=args.command_line,
            overwrite=args.overwrite,
            progress=not args.quiet,
            resample=args.resample,
            load_clip=load_clip,
            decode_timeout=args.decode_timeout,
        ),
    )


def _holdout_problems(args: argparse.Namespace) -> list[str]:
    """Usage problems of ``--val-fraction`` / ``--val-out``; fills in the default ``--val-out``."""
    from panns_lightning.datasets.holdout import check_fraction

    if args.val_fraction is None:
        return ["--val-out needs --val-fraction"] if args.val_out is not None else []
    try:
        check_fraction(args.val_fraction)
    except ValueError as error:
        return [f"--val-fraction: {error}"]
    if args.val_out is None:
        args.val_out = args.out.with_name(args.out.name + "_val")
    val_out, out = args.val_out.resolve(), args.out.resolve()
    if val_out == out:
        return [f"--val-out {args.val_out} is --out: the held-out clips need a shard directory of their own"]
    if out in val_out.parents or val_out in out.parents:
        return [f"--val-out {args.val_out} and --out {args.out} are nested: give the two shard sets separate folders"]
    return []


def _hold_out_validation(
    args: argparse.Namespace, records: Sequence[ClipRecord], command: str = "audioset"
) -> tuple[list[ClipRecord], list[ClipRecord], dict[str, Any]] | int:
    """``(train records, val records, manifest 'holdout' entry)``, or the exit code after saying why not."""
    from panns_lightning.datasets.holdout import METHOD, class_counts, split_records
    from panns_lightning.shardset.writer import OutputNotEmptyError, check_output_dir

    for flag, out in (("--val-out", args.val_out), ("--out", args.out)):
        try:  # refuse before converting anything, not after the first set is written
            check_output_dir(out, args.overwrite)
        except OutputNotEmptyError as error:
            return _usage_error(command, f"{flag}: {error}")
    train, val = split_records(records, args.val_fraction, seed=args.seed)
    if not val:
        return _usage_error(
            command,
            f"--val-fraction {args.val_fraction} of {len(records)} clips holds no clip: no class has 2 clips or more to hold one out",
        )
    everything = [r.labels for r in records]
    held = class_counts([r.labels for r in val], range(len(val)))
    in_data = class_counts(everything, range(len(everything)))
    train_only = sorted(c for c, n in in_data.items() if c not in held)
    print(
        f"held out {len(val)} of {len(records)} clips ({len(val) / len(records):.1%}) for validation in {args.val_out}: "
        f"{len(held)} of {len(in_data)} classes present there ({len(train_only)} too rare to hold out: train only); "
        f"{len(train)} clips go to {args.out}"
    )
    holdout = {
        "fraction": args.val_fraction,
        "seed": args.seed,
        "method": METHOD,
        "clips": {"train": len(train), "val": len(val)},
        "classes_without_val_clips": train_only,
    }
    return train, val, holdout


def _add_writer_options(sub: argparse.ArgumentParser, *, seed_help: str) -> None:
    """The shard writer's options, shared by the dataset commands of the registry."""
    sub.add_argument("--storage", choices=("int16", "flac"), default="int16")
    _add_resample_option(sub)
    _add_decode_timeout_option(sub)
    sub.add_argument("--clips-per-shard", type=int, default=256)
    sub.add_argument("--min-shards", type=int, default=8)
    sub.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="decoding processes (0: in this process)")
    sub.add_argument("--seed", type=int, default=0, help=seed_help)
    sub.add_argument("--overwrite", action="store_true", help="replace the shards in a non-empty --out")
    sub.add_argument("--quiet", action="store_true", help="no progress bar")


def _writer_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """``write_shards``'s keyword arguments from :func:`_add_writer_options`' flags."""
    return {
        "sample_rate": args.sample_rate,
        "clip_samples": int(round(args.clip_seconds * args.sample_rate)),
        "storage": args.storage,
        "clips_per_shard": args.clips_per_shard,
        "min_shards": args.min_shards,
        "num_workers": args.workers,
        "seed": args.seed,
        "created_by": args.command_line,
        "overwrite": args.overwrite,
        "progress": not args.quiet,
        "resample": args.resample,
        "decode_timeout": args.decode_timeout,
    }


def _writer_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the writer's options (:func:`_add_writer_options`), if anything."""
    if args.sample_rate <= 0 or args.clip_seconds <= 0 or args.clips_per_shard <= 0:
        return "--sample-rate, --clip-seconds and --clips-per-shard must be positive"
    return _rate_problem(args) or _resample_problem(args) or _decode_timeout_problem(args)


def _rate_problem(args: argparse.Namespace) -> str | None:
    from panns_lightning.input_limits import SampleRateError, check_sample_rate

    try:
        check_sample_rate(args.sample_rate, "--sample-rate")
    except SampleRateError as error:
        return str(error)
    return None


def _add_folded_commands(commands: argparse._SubParsersAction) -> None:
    """One command per registered cross-validation dataset (``datasets/registry.py``): one shard set, folds in clips and manifest."""
    for entry in FOLDED_DATASETS.values():
        sub = commands.add_parser(entry.name, help=f"convert {entry.description} into shards")
        sub.add_argument("--root", required=True, type=Path, help=entry.root_help)
        sub.add_argument("--out", required=True, type=Path, help="output shard directory")
        sub.add_argument(
            "--sample-rate", type=int, default=32000, help="target rate (default 32000, the PANNs front end)"
        )
        sub.add_argument(
            "--clip-seconds",
            type=float,
            default=entry.clip_seconds,
            help=f"pad/crop to this length (default {entry.clip_seconds:g})",
        )
        _add_writer_options(
            sub, seed_help="seed of the shard assignment" + (" and of the folds" if entry.seeded else "")
        )
        for option in entry.options:
            sub.add_argument(option.flag, **option.argparse_options())
        sub.set_defaults(run=run_folded, dataset=entry)


def run_folded(args: argparse.Namespace) -> int:
    from panns_lightning.shardset import folds

    entry = args.dataset
    command = entry.name
    problem = _writer_problem(args)
    if problem:
        return _usage_error(command, problem)
    options = {option.keyword: getattr(args, option.keyword) for option in entry.options}
    if entry.seeded:
        options["seed"] = args.seed
    try:
        folded = entry.read(args.root, **options)
    except (OSError, ValueError, UnicodeDecodeError, csv.Error) as error:
        return _usage_error(command, str(error))
    for warning in folded.result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(
        f"{folded.dataset}: {len(folded.result.records)} clips found, {len(folded.result.skipped)} skipped before decoding, {len(folded.labels)} classes"
    )
    written = _run_conversion(
        command,
        args.out,
        lambda: folds.write_folded_shards(
            folded,
            args.out,
            split="all",
            **_writer_arguments(args),
        ),
    )
    if isinstance(written, int):
        return written
    manifest, entry = written
    print(folds.fold_table(entry, manifest.label_names))
    _print_skips(manifest.skipped, stream=sys.stdout)
    return EXIT_OK


def _add_custom_commands(commands: argparse._SubParsersAction) -> None:
    """``folder`` and ``csv`` (``datasets/registry.py``): your own data → one shard set with folds or splits."""
    for entry in CUSTOM_DATASETS.values():
        sub = commands.add_parser(entry.name, help=f"convert {entry.description} into shards")
        for option in entry.options:
            sub.add_argument(option.flag, **option.argparse_options())
        sub.add_argument("--out", required=True, type=Path, help="output shard directory")
        sub.add_argument("--name", default=None, help="dataset name in the manifest (default: the folder / CSV name)")
        sub.add_argument("--sample-rate", type=int, default=32000, help="target rate (default 32000, PANNs' front end)")
        sub.add_argument(
            "--clip-seconds", type=float, default=10.0, help="pad/crop every clip to this length (default 10)"
        )
        sub.add_argument(
            "--multilabel", action="store_true", help="multi-label even if every clip has one label (BCE, mAP)"
        )
        sub.add_argument(
            "--num-folds", type=int, default=None, metavar="K", help="draw K stratified folds (cross-validation)"
        )
        for split in ("val", "test"):
            sub.add_argument(
                f"--{split}-fraction",
                type=float,
                default=None,
                metavar="F",
                help=f"hold out this fraction, stratified by label, as the {split} split where the data has none "
                "(default 0.1; 0: none)",
            )
        _add_writer_options(sub, seed_help="seed of the shard assignment and of drawn folds/splits")
        sub.set_defaults(run=run_custom, dataset=entry)


def run_custom(args: argparse.Namespace) -> int:
    import dataclasses

    from panns_lightning.datasets.custom import partition, write_custom_shards
    from panns_lightning.shardset import folds, splits

    entry = args.dataset
    command = entry.name
    problem = _writer_problem(args)
    if problem:
        return _usage_error(command, problem)
    try:
        dataset = entry.read(
            name=args.name, **{option.keyword: getattr(args, option.keyword) for option in entry.options}
        )
        if args.multilabel:
            dataset = dataclasses.replace(dataset, multilabel=True)
        dataset = partition(
            dataset,
            num_folds=args.num_folds,
            val_fraction=args.val_fraction,
            test_fraction=args.test_fraction,
            seed=args.seed,
        )
    except (OSError, ValueError, UnicodeDecodeError, csv.Error) as error:
        return _usage_error(command, str(error))
    for warning in dataset.result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    task = "multi-label" if dataset.multilabel else "single-label"
    print(
        f"{dataset.dataset}: {len(dataset.result.records)} clips found, {len(dataset.result.skipped)} skipped before "
        f"decoding, {len(dataset.labels)} classes ({task}): {', '.join(entry['name'] for entry in dataset.labels[:10])}"
        f"{' ...' if len(dataset.labels) > 10 else ''}"
    )
    manifest = _run_conversion(
        command,
        args.out,
        lambda: write_custom_shards(
            dataset,
            args.out,
            **_writer_arguments(args),
        ),
    )
    if isinstance(manifest, int):
        return manifest
    if folds.MANIFEST_KEY in manifest.extra:
        print(folds.fold_table(manifest.extra[folds.MANIFEST_KEY], manifest.label_names))
    else:
        print(splits.split_table(manifest.extra[splits.MANIFEST_KEY], manifest.label_names))
    _print_skips(manifest.skipped, stream=sys.stdout)
    return EXIT_OK


def run_inspect(args: argparse.Namespace) -> int:
    try:
        from panns_lightning.data.diagnostics.inspect import run_inspect as inspect_shards
    except ImportError as error:
        return _usage_error("inspect", f"the inspector is not available ({error})")
    outcome = inspect_shards(
        args.shard_dir,
        balanced=args.balanced,
        draws=args.draws,
        seed=args.seed,
        batch_size=args.batch_size,
        plot=args.plot,
    )
    return outcome if isinstance(outcome, int) else EXIT_OK


def _print_skips(skipped: Sequence, *, stream) -> None:
    if not skipped:
        print("skipped 0 clips", file=stream)
        return
    reasons = Counter(entry.reason for entry in skipped)
    example = {}
    for entry in skipped:
        example.setdefault(entry.reason, entry)
    print(f"skipped {len(skipped)} clips:", file=stream)
    for reason, count in reasons.most_common(10):
        first = example[reason]
        print(f"  {count:>7}  {reason}  (e.g. {first.key} from {first.source})", file=stream)
    if len(reasons) > 10:
        print(f"  ... {len(reasons) - 10} more distinct reasons; the manifest lists every clip", file=stream)


def _usage_error(command: str, message: str) -> int:
    print(f"panns-prepare {command}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


T = TypeVar("T")


def _run_conversion(command: str, out: Path, convert: Callable[[], T]) -> T | int:
    """Run a shard writer; its result, or the exit code after saying why it wrote nothing."""
    from panns_lightning.shardset.writer import DuplicateKeyError, NoUsableClipsError, OutputNotEmptyError

    try:
        written = convert()
    except (OutputNotEmptyError, DuplicateKeyError) as error:
        return _usage_error(command, str(error))
    except OSError as error:
        return _write_failed(command, out, error)
    except NoUsableClipsError as error:
        print(f"panns-prepare {command}: nothing usable: {error}", file=sys.stderr)
        _print_skips(error.skipped, stream=sys.stderr)
        return EXIT_NOTHING_USABLE
    manifest = written[0] if isinstance(written, tuple) else written
    print(
        f"wrote {manifest.num_clips} clips in {len(manifest.shards)} shards to {out} "
        f"({manifest.storage}, {manifest.sample_rate} Hz, {manifest.clip_samples} samples per clip)"
    )
    return written


def _write_failed(command: str, out: Path, error: OSError) -> int:
    """Only the writer's own files can fail here (audio errors are skips); no manifest was written."""
    print(
        f"panns-prepare {command}: error: writing {out} failed: {error}; no manifest was written, rerun with --overwrite",
        file=sys.stderr,
    )
    return EXIT_WRITE_FAILED


if __name__ == "__main__":
    sys.exit(main())

"""``panns-prepare audioset`` and the HDF5 layouts: AudioSet → one shard set, or two with ``--val-fraction``.

Both commands read their records differently (a segment CSV and an audio folder; packed HDF5
rows) and then write the same way: optionally hold out a stratified validation set, write it
first (a problem shows in seconds, not after the long conversion), then the training set.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from panns_lightning.cli.prepare_options import writer_arguments, writer_problems
from panns_lightning.cli.prepare_run import EXIT_OK, print_skips, run_conversion, usage_error

if TYPE_CHECKING:
    from panns_lightning.labels import LabelSet
    from panns_lightning.shardset import Manifest
    from panns_lightning.shardset.records import ClipRecord, ReaderResult, SkippedClip


def run_audioset(args: argparse.Namespace) -> int:
    from panns_lightning.datasets.audioset import read_audioset, split_name
    from panns_lightning.labels import LabelFileError, read_label_csv

    problems = [
        f"{flag} {path} not found"
        for flag, path in (("--segments", args.segments), ("--labels", args.labels))
        if not path.is_file()
    ]
    if not args.audio_dir.is_dir():
        problems.append(f"--audio-dir {args.audio_dir} is not a directory")
    problems += writer_problems(args) + holdout_problems(args)
    if problems:
        return usage_error("audioset", "; ".join(problems))
    try:
        labels = read_label_csv(args.labels)
        result = read_audioset(args.segments, args.audio_dir, labels, audio_patterns=args.audio_pattern)
    except (LabelFileError, ValueError, UnicodeDecodeError, OSError, csv.Error) as error:
        return usage_error("audioset", str(error))
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
    problems = [f"--hdf5 {path} not found" for path in args.hdf5 if not path.is_file()]
    if not args.labels.is_file():
        problems.append(f"--labels {args.labels} not found")
    problems += writer_problems(args) + holdout_problems(args)
    if problems:
        return usage_error(command, "; ".join(problems))
    options = {option.keyword: getattr(args, option.keyword) for option in args.layout.options}
    try:
        labels = read_label_csv(args.labels)
        found = args.layout.read(args.hdf5, labels, progress=not args.quiet, **options)
    except (MissingHdf5Support, LabelFileError, ValueError, OSError) as error:
        return usage_error(command, str(error))
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
        print_skips(written.skipped, stream=sys.stdout)
        extra["holdout"] = {"role": "train", **holdout, "other": str(args.val_out)}
    written = _write_audioset(args, command, train_records, args.out, labels, split, result.skipped, extra, load_clip)
    if isinstance(written, int):
        return written
    print_skips(written.skipped, stream=sys.stdout)
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

    return run_conversion(
        command,
        out,
        lambda: write_shards(
            records,
            out,
            labels=labels.to_manifest(),
            dataset="audioset",
            split=split,
            multilabel=True,
            skipped=skipped,
            extra_manifest=extra or None,
            load_clip=load_clip,
            **writer_arguments(args),
        ),
    )


def holdout_problems(args: argparse.Namespace) -> list[str]:
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
    args: argparse.Namespace, records: Sequence[ClipRecord], command: str
) -> tuple[list[ClipRecord], list[ClipRecord], dict[str, Any]] | int:
    """``(train records, val records, manifest 'holdout' entry)``, or the exit code after saying why not."""
    from panns_lightning.datasets.holdout import METHOD, class_counts, split_records
    from panns_lightning.shardset.writer import OutputNotEmptyError, check_output_dir

    for flag, out in (("--val-out", args.val_out), ("--out", args.out)):
        try:  # refuse before converting anything, not after the first set is written
            check_output_dir(out, args.overwrite)
        except OutputNotEmptyError as error:
            return usage_error(command, f"{flag}: {error}")
    train, val = split_records(records, args.val_fraction, seed=args.seed)
    if not val:
        return usage_error(
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

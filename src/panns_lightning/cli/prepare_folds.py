"""``panns-prepare esc50 | gtzan | ravdess | folder | csv``: one shard set with folds or splits.

The commands come from the dataset registry (``datasets/registry.py``); each reads its layout
with the entry's reader and writes one single shard set whose manifest lists the folds (or the
train / val / test split), then prints the table of classes per fold or split.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import sys

from panns_lightning.cli.prepare_options import writer_arguments, writer_problems
from panns_lightning.cli.prepare_run import EXIT_OK, print_skips, run_conversion, usage_error


def run_folded(args: argparse.Namespace) -> int:
    """A registered cross-validation dataset (ESC-50, GTZAN, RAVDESS) → one shard set, folds in clips and manifest."""
    from panns_lightning.shardset import folds

    entry = args.dataset
    problems = writer_problems(args)
    if problems:
        return usage_error(entry.name, "; ".join(problems))
    options = {option.keyword: getattr(args, option.keyword) for option in entry.options}
    if entry.seeded:
        options["seed"] = args.seed
    try:
        folded = entry.read(args.root, **options)
    except (OSError, ValueError, UnicodeDecodeError, csv.Error) as error:
        return usage_error(entry.name, str(error))
    for warning in folded.result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(
        f"{folded.dataset}: {len(folded.result.records)} clips found, {len(folded.result.skipped)} skipped before decoding, {len(folded.labels)} classes"
    )
    written = run_conversion(
        entry.name,
        args.out,
        lambda: folds.write_folded_shards(folded, args.out, split="all", **writer_arguments(args)),
    )
    if isinstance(written, int):
        return written
    manifest, fold_entry = written
    print(folds.fold_table(fold_entry, manifest.label_names))
    print_skips(manifest.skipped, stream=sys.stdout)
    return EXIT_OK


def run_custom(args: argparse.Namespace) -> int:
    """Your own data (a folder per class, or a CSV) → one shard set with drawn or given folds / splits."""
    from panns_lightning.datasets.custom import partition, write_custom_shards
    from panns_lightning.shardset import folds, splits

    entry = args.dataset
    problems = writer_problems(args)
    if problems:
        return usage_error(entry.name, "; ".join(problems))
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
        return usage_error(entry.name, str(error))
    for warning in dataset.result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    task = "multi-label" if dataset.multilabel else "single-label"
    print(
        f"{dataset.dataset}: {len(dataset.result.records)} clips found, {len(dataset.result.skipped)} skipped before "
        f"decoding, {len(dataset.labels)} classes ({task}): {', '.join(label['name'] for label in dataset.labels[:10])}"
        f"{' ...' if len(dataset.labels) > 10 else ''}"
    )
    manifest = run_conversion(
        entry.name, args.out, lambda: write_custom_shards(dataset, args.out, **writer_arguments(args))
    )
    if isinstance(manifest, int):
        return manifest
    if folds.MANIFEST_KEY in manifest.extra:
        print(folds.fold_table(manifest.extra[folds.MANIFEST_KEY], manifest.label_names))
    else:
        print(splits.split_table(manifest.extra[splits.MANIFEST_KEY], manifest.label_names))
    print_skips(manifest.skipped, stream=sys.stdout)
    return EXIT_OK

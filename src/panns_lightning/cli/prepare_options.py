"""``panns-prepare``'s shared options: declared once, checked once, handed to the writer once.

Every conversion command (``audioset``, the HDF5 layouts, the registry's fold datasets, ``folder``
and ``csv``) takes the same shard-writer flags; they live in one table (:data:`OPTIONS`) so a new
writer option is one row here, one line in :func:`writer_arguments` and, if it can be wrong, one
check in :func:`writer_problems`. A command changes a default or a help text with ``changes``,
never by declaring the flag again.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from panns_lightning.input_limits import PANNS_SAMPLE_RATE

OPTIONS: dict[str, dict[str, Any]] = {
    "--out": {"required": True, "type": Path, "help": "output shard directory"},
    "--sample-rate": {
        "type": int,
        "default": PANNS_SAMPLE_RATE,
        "help": f"target rate (default {PANNS_SAMPLE_RATE}, the PANNs front end)",
    },
    "--clip-seconds": {
        "type": float,
        "default": 10.0,
        "help": "pad/crop every clip to this length (default %(default)g)",
    },
    "--storage": {"choices": ("int16", "flac"), "default": "int16", "help": "how clips are stored (default int16)"},
    "--resample": {
        "choices": ("sinc", "decimate"),
        "default": "sinc",
        "help": "sinc: band-limited resampling to --sample-rate (default); decimate: upstream PANNs' way, "
        "the clip at 32 kHz then every k-th sample (--sample-rate 16000 or 8000), for fine-tuning its 16/8 kHz checkpoints",
    },
    "--decode-timeout": {
        "type": float,
        "default": 60.0,
        "metavar": "SECONDS",
        "help": "skip a file still decoding after this long and replace its worker process, so that one file "
        "that hangs a decoder cannot stall the conversion (default 60; 0: no limit; needs --workers >= 1)",
    },
    "--clips-per-shard": {"type": int, "default": 256, "help": "clips per tar shard (default %(default)s)"},
    "--min-shards": {
        "type": int,
        "default": 8,
        "help": "at least this many shards (capped at the clip count), so every DataLoader worker gets one",
    },
    "--workers": {"type": int, "default": os.cpu_count() or 1, "help": "decoding processes (0: in this process)"},
    "--seed": {"type": int, "default": 0, "help": "seed of the shard assignment"},
    "--overwrite": {"action": "store_true", "help": "replace the shards in a non-empty --out"},
    "--quiet": {"action": "store_true", "help": "no progress bar"},
    "--split": {"default": None, "help": "split name in the manifest (default: from the input's name)"},
    "--val-fraction": {
        "type": float,
        "default": None,
        "metavar": "F",
        "help": "hold out this fraction of the clips (stratified by label) as a validation shard set in --val-out; "
        "the rest goes to --out (e.g. 0.02)",
    },
    "--val-out": {
        "type": Path,
        "default": None,
        "metavar": "DIR",
        "help": "shard directory of the held-out clips (default: --out with '_val' appended)",
    },
}
"""Every flag more than one command takes, with its default and help text."""

WRITER_FLAGS = (
    "--out",
    "--sample-rate",
    "--clip-seconds",
    "--storage",
    "--resample",
    "--decode-timeout",
    "--clips-per-shard",
    "--min-shards",
    "--workers",
    "--seed",
    "--overwrite",
    "--quiet",
)
"""The shard writer's flags: what every conversion command takes."""
HOLDOUT_FLAGS = ("--split", "--val-fraction", "--val-out")
"""The AudioSet commands' split name and held-out validation set."""
POSITIVE_FLAGS = ("--sample-rate", "--clip-seconds", "--clips-per-shard")
"""Writer flags that must be > 0 when given."""


def add_options(
    parser: argparse.ArgumentParser, flags: Iterable[str], changes: Mapping[str, Mapping[str, Any]] | None = None
) -> None:
    """Declare ``flags`` from :data:`OPTIONS` on ``parser``; ``changes`` overrides a flag's default, help, ..."""
    changes = changes or {}
    unknown = set(changes) - set(flags)
    if unknown:
        raise ValueError(f"changes to flags the command does not take: {sorted(unknown)}")
    for flag in flags:
        parser.add_argument(flag, **{**OPTIONS[flag], **changes.get(flag, {})})


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def positive_problems(args: argparse.Namespace, flags: Iterable[str] = POSITIVE_FLAGS) -> list[str]:
    """One message per flag in ``flags`` whose value was given (not ``None``) and is not > 0."""
    values = {flag: getattr(args, _dest(flag)) for flag in flags}
    return [
        f"{flag} must be positive, got {value:g}" for flag, value in values.items() if value is not None and value <= 0
    ]


def writer_problems(args: argparse.Namespace) -> list[str]:
    """Everything wrong with the writer flags (:data:`WRITER_FLAGS`), checked before any file is read."""
    problems = positive_problems(args)
    if args.sample_rate > 0:
        problems += filter(None, [_rate_problem(args), _resample_problem(args)])
    if args.decode_timeout < 0:
        problems.append(f"--decode-timeout must be >= 0 seconds (0: no limit), got {args.decode_timeout:g}")
    return problems


def writer_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """``write_shards``'s keyword arguments from the :data:`WRITER_FLAGS` (``--out`` aside: a command may write two)."""
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


def _rate_problem(args: argparse.Namespace) -> str | None:
    from panns_lightning.input_limits import SampleRateError, check_sample_rate

    try:
        check_sample_rate(args.sample_rate, "--sample-rate")
    except SampleRateError as error:
        return str(error)
    return None


def _resample_problem(args: argparse.Namespace) -> str | None:
    """Why ``--resample decimate`` cannot give ``--sample-rate`` (``None`` if it can)."""
    if args.resample != "decimate":
        return None
    from panns_lightning.audio import decimation_step

    try:
        decimation_step(args.sample_rate)
    except ValueError as error:
        return f"--resample decimate: {error}"
    return None

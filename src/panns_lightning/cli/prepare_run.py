"""How a ``panns-prepare`` conversion ends: its exit code and the lines it prints.

Exit codes: 0 ok, 1 nothing usable, 2 usage error (an existing ``--out`` without ``--overwrite``
included: conversions never resume), 3 the output could not be written (disk full, permissions).
Unusable audio files are never an error: the writer lists them in the manifest's ``skipped``.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO, TypeVar

EXIT_OK, EXIT_NOTHING_USABLE, EXIT_USAGE, EXIT_WRITE_FAILED = 0, 1, 2, 3

T = TypeVar("T")


def usage_error(command: str, message: str) -> int:
    """Say what is wrong with the command line on stderr; the usage exit code."""
    print(f"panns-prepare {command}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def run_conversion(command: str, out: Path, convert: Callable[[], T]) -> T | int:
    """Run a shard writer; its result, or the exit code after saying why it wrote nothing."""
    from panns_lightning.shardset.writer import DuplicateKeyError, NoUsableClipsError, OutputNotEmptyError

    try:
        written = convert()
    except (OutputNotEmptyError, DuplicateKeyError) as error:
        return usage_error(command, str(error))
    except OSError as error:
        # Only the writer's own files can fail here (audio errors are skips); no manifest was written.
        print(
            f"panns-prepare {command}: error: writing {out} failed: {error}; no manifest was written, rerun with --overwrite",
            file=sys.stderr,
        )
        return EXIT_WRITE_FAILED
    except NoUsableClipsError as error:
        print(f"panns-prepare {command}: nothing usable: {error}", file=sys.stderr)
        print_skips(error.skipped, stream=sys.stderr)
        return EXIT_NOTHING_USABLE
    manifest = written[0] if isinstance(written, tuple) else written
    print(
        f"wrote {manifest.num_clips} clips in {len(manifest.shards)} shards to {out} "
        f"({manifest.storage}, {manifest.sample_rate} Hz, {manifest.clip_samples} samples per clip)"
    )
    return written


def print_skips(skipped: Sequence, *, stream: TextIO) -> None:
    """The skipped clips by reason, most common first, with one example each."""
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

"""``panns-tag``: tag audio files and folders with a model file; optionally write SED outputs and embeddings.

``panns-tag a.wav b.mp3 --checkpoint best.ckpt`` prints each file's top labels;
``panns-tag DIR --checkpoint best.ckpt --out tags.jsonl`` tags every audio file under ``DIR``
(recursively), writing one line per file as it goes (``--resume`` continues an interrupted run).
Windows of many files run through the network together (``--batch-size``) while worker processes
decode ahead (``--workers``); results keep the input order. ``--backend`` picks PyTorch or ONNX
Runtime (``auto``: ONNX Runtime on the CPU when installed, docs/speed.md says why).
``--sed DIR`` writes ``<stem>.csv`` / ``<stem>.npz`` / ``<stem>.png`` (framewise probabilities,
SED models only) and ``--embed DIR|FILE.npz`` the clip embeddings. A file that cannot be read is
reported on one line and skipped. Exit codes: 0 all files tagged, 1 some file failed (or the
checkpoint could not be loaded), 2 usage error.

``panns-tag --stream - --checkpoint best.ckpt`` tags live or endless audio from stdin instead
(raw PCM or a WAV stream): onset/offset lines as sounds start and stop (``cli/tag_stream.py``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from panns_lightning.cli import tag_stream
from panns_lightning.cli.entry import console_entry

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
PROG = "panns-tag"
DEFAULT_TOP_K = 10
# Options that only mean something for files and folders (tag_stream checks its own).
_COLLECTION_ONLY = ("out", "resume", "batch_size", "workers", "progress")


@console_entry
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    tag_stream.check_arguments(parser, args)
    check_arguments(parser, args)
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(message)s")
    from panns_lightning.tagging.backends import BackendError, open_tagger
    from panns_lightning.tagging.prefetch import default_workers
    from panns_lightning.tagging.run import CollectionOptions, tag_files
    from panns_lightning.tagging.sources import collect_inputs
    from panns_lightning.tagging.writers import OutputError

    paths = collect_inputs(args.audio) if args.stream is None else []
    if args.stream is None and not paths:
        print(f"{PROG}: no audio files found in {', '.join(map(str, args.audio))}", file=sys.stderr)
        return EXIT_FAILED
    try:
        tagger = open_tagger(
            args.checkpoint,
            backend=args.backend,
            device=args.device,
            precision=args.precision,
            model_name=args.model,
            labels_csv=args.labels,
            window_seconds=args.window_seconds,
            batch_size=args.batch_size,
            onnx_cache=args.onnx_cache,
            threads=args.threads,
            files=len(paths),
        )
    except BackendError as error:
        print(f"{PROG}: {_one_line(error)}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, ValueError, RuntimeError) as error:
        print(f"{PROG}: cannot load checkpoint {args.checkpoint}: {_one_line(error)}", file=sys.stderr)
        return EXIT_FAILED
    if args.stream is not None:
        return tag_stream.run(args, tagger, PROG)
    if args.sed is not None and not tagger.is_sed:
        print(
            f"{PROG}: --sed needs a sound event detection model (Cnn14_DecisionLevelMax/Avg/Att); "
            f"{args.checkpoint} holds {tagger.model_name}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    options = CollectionOptions(
        top_k=args.top_k or DEFAULT_TOP_K,
        batch_size=tagger.batch_size,
        workers=default_workers(args.device) if args.workers is None else args.workers,
        json=args.json,
        out=args.out,
        resume=args.resume,
        sed=args.sed,
        embed=args.embed,
        progress=True if args.progress else None,
        prog=PROG,
        checkpoint=str(args.checkpoint),
    )
    try:
        return tag_files(tagger, paths, options)
    except OutputError as error:
        print(f"{PROG}: {_one_line(error)}", file=sys.stderr)
        return EXIT_USAGE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Tag audio files and folders with a PANNs model file: this project's .ckpt or exports (.pth, "
        ".onnx, .torchscript.pt, read through their model card), or a published PANNs .pth.",
    )
    parser.add_argument(
        "audio", nargs="*", type=Path, metavar="AUDIO", help="audio files or folders (searched recursively)"
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        type=Path,
        help="a .ckpt, an export (.pth / .onnx / .torchscript.pt) or a published .pth",
    )
    parser.add_argument(
        "--model", default=None, help="zoo model name for published files without a model card (inferred when omitted)"
    )
    parser.add_argument(
        "--labels", type=Path, default=None, help="class_labels_indices.csv naming a published file's classes"
    )
    parser.add_argument(
        "--top-k",
        type=_positive_int,
        default=None,
        help="labels shown per file (default 10; per line with --stream: 3)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    parser.add_argument(
        "--out", type=Path, default=None, metavar="FILE", help="write one record per file to FILE.jsonl or FILE.csv"
    )
    parser.add_argument("--resume", action="store_true", help="skip files that already have a result in --out")
    parser.add_argument("--sed", type=Path, default=None, metavar="OUT_DIR", help="write framewise CSV/NPZ/PNG here")
    parser.add_argument(
        "--embed",
        type=Path,
        default=None,
        metavar="OUT",
        help="embeddings: a folder (<stem>.npy each), FILE.npz (keyed by path) or FILE.parquet (needs pyarrow)",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    parser.add_argument(
        "--backend",
        choices=("auto", "torch", "onnxruntime"),
        default="auto",
        help="auto (default): onnxruntime on the CPU when installed (the 'fast' extra), else torch",
    )
    parser.add_argument(
        "--precision", choices=("32", "bf16"), default="32", help="torch backend: bf16 autocast (default 32)"
    )
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        help="windows per forward pass (default: CPU 4 with onnxruntime, 8 with torch; GPU 32)",
    )
    parser.add_argument(
        "--workers", type=_non_negative_int, default=None, help="decoding processes (0: in this one; default 1-4)"
    )
    parser.add_argument("--threads", type=_positive_int, default=None, help="onnxruntime intra-op threads")
    parser.add_argument(
        "--onnx-cache", type=Path, default=None, metavar="DIR", help="where ONNX exports are cached ($PANNS_ONNX_CACHE)"
    )
    parser.add_argument("--progress", action="store_true", help="show the progress bar even when stderr is no TTY")
    parser.add_argument(
        "--window-seconds",
        type=float,
        default=None,
        help="analysis window for long files (default: the training clip length, else 10 s)",
    )
    tag_stream.add_stream_arguments(parser)
    return parser


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors (exit 2) of the collection options."""
    if args.stream is not None:
        used = [name for name in _COLLECTION_ONLY if getattr(args, name) not in (None, False)]
        if used:
            parser.error(f"--{used[0].replace('_', '-')} does not apply to --stream")
        return
    if args.resume and args.out is None:
        parser.error("--resume continues an --out file; give --out")


def _one_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return " ".join(text.split())


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


if __name__ == "__main__":
    sys.exit(main())

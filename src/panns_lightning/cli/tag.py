"""``panns-tag``: tag audio files with a checkpoint; optionally write SED outputs and embeddings.

``panns-tag a.wav b.mp3 --checkpoint best.ckpt`` prints each file's top labels.
``--sed DIR`` writes ``<stem>.csv`` / ``<stem>.npz`` / ``<stem>.png`` (framewise probabilities,
SED models only) and ``--embed DIR`` writes ``<stem>.npy`` (the clip embedding). A file that cannot
be read is reported on one line and skipped; the exit code is then 1. Exit codes: 0 all files
tagged, 1 some file failed (or the checkpoint could not be loaded), 2 usage error.

``panns-tag --stream - --checkpoint best.ckpt`` tags live or endless audio from stdin instead
(raw PCM or a WAV stream): onset/offset lines as sounds start and stop (``cli/tag_stream.py``).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from panns_lightning.cli import tag_stream
from panns_lightning.cli.entry import console_entry

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
PROG = "panns-tag"
DEFAULT_TOP_K = 10


@console_entry
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    tag_stream.check_arguments(parser, args)
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(message)s")
    from panns_lightning.audio import AudioDecodeError
    from panns_lightning.inference import AudioTagger

    try:
        tagger = AudioTagger(
            args.checkpoint,
            model_name=args.model,
            labels_csv=args.labels,
            device=args.device,
            window_seconds=args.window_seconds,
        )
    except (OSError, ValueError, RuntimeError) as error:
        print(f"{PROG}: cannot load checkpoint {args.checkpoint}: {_one_line(error)}", file=sys.stderr)
        return EXIT_FAILED
    if args.stream is not None:
        return tag_stream.run(args, tagger, PROG)
    top_k = args.top_k or DEFAULT_TOP_K
    if args.sed is not None and not tagger.is_sed:
        print(
            f"{PROG}: --sed needs a sound event detection model (Cnn14_DecisionLevelMax/Avg/Att); "
            f"{args.checkpoint} holds {tagger.model_name}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    for folder in (args.sed, args.embed):
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)

    results: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []
    stems: set[str] = set()
    for path in args.audio:
        try:
            waveform = tagger.load_audio(path)
            output = tagger.infer(waveform, tagger.sample_rate)
        except AudioDecodeError as error:
            failures.append(_report_failure(path, error.reason))
            continue
        except (OSError, ValueError, RuntimeError) as error:
            failures.append(_report_failure(path, _one_line(error)))
            continue
        stem = _unique_stem(path, stems)
        result = describe(path, tagger, output, top_k)
        if args.sed is not None:
            result["sed"] = write_sed(args.sed / stem, tagger, output, waveform, path, top_k)
        if args.embed is not None:
            embedding_path = args.embed / f"{stem}.npy"
            np.save(embedding_path, output.embedding)
            result["embedding"] = str(embedding_path)
        results.append(result)
        if not args.json:
            print(format_table(result))

    if args.json:
        payload = {
            "checkpoint": str(args.checkpoint),
            "model": tagger.model_name,
            "task": tagger.card.task,
            "probabilities": tagger.card.activation,
            "sample_rate": tagger.sample_rate,
            "window_seconds": tagger.window_seconds,
            "results": results,
            "failures": failures,
        }
        print(json.dumps(payload, indent=2))
    return EXIT_FAILED if failures else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Tag audio files with a PANNs model file: this project's .ckpt or exports (.pth, .onnx, "
        ".torchscript.pt, read through their model card), or a published PANNs .pth.",
    )
    parser.add_argument("audio", nargs="*", type=Path, metavar="AUDIO", help="audio files (wav, flac, ogg, mp3, ...)")
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
    parser.add_argument("--sed", type=Path, default=None, metavar="OUT_DIR", help="write framewise CSV/NPZ/PNG here")
    parser.add_argument("--embed", type=Path, default=None, metavar="OUT_DIR", help="write <stem>.npy embeddings here")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    parser.add_argument(
        "--window-seconds",
        type=float,
        default=None,
        help="analysis window for long files (default: the training clip length, else 10 s)",
    )
    tag_stream.add_stream_arguments(parser)
    return parser


def describe(path: Path, tagger: Any, output: Any, top_k: int) -> dict[str, Any]:
    """The JSON-ready summary of one file: duration, windows and top labels."""
    order = np.argsort(-output.clipwise, kind="stable")[:top_k]  # as AudioTagger.top_labels ranks
    return {
        "file": str(path),
        "duration_s": round(float(output.duration), 3),
        "windows": int(len(output.window_starts)),
        "top": [
            {"label": tagger.labels[index], "index": int(index), "probability": round(float(output.clipwise[index]), 6)}
            for index in order
        ],
    }


def format_table(result: dict[str, Any]) -> str:
    """One file's top labels as an aligned text table."""
    windows = result["windows"]
    lines = [
        f"{result['file']}  ({result['duration_s']:.2f} s, {windows} window{'s' if windows != 1 else ''})",
        f"  {'rank':>4}  {'prob':>6}  label",
    ]
    for rank, entry in enumerate(result["top"], 1):
        lines.append(f"  {rank:>4}  {entry['probability']:6.3f}  {entry['label']}")
    return "\n".join(lines) + "\n"


def write_sed(base: Path, tagger: Any, output: Any, waveform: np.ndarray, source: Path, top_k: int) -> dict[str, str]:
    """Write ``base.csv`` (time_s + one column per class), ``base.npz`` and ``base.png``."""
    framewise, times = output.framewise, output.frame_times
    csv_path, npz_path, png_path = (base.with_name(base.name + suffix) for suffix in (".csv", ".npz", ".png"))
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["time_s", *tagger.labels])
        for time, row in zip(times, framewise):
            writer.writerow([f"{time:.3f}", *(f"{value:.6f}" for value in row)])
    np.savez_compressed(
        npz_path,
        framewise=framewise,
        frame_times=times,
        clipwise=output.clipwise,
        labels=np.array(tagger.labels),
        sample_rate=np.array(tagger.sample_rate),
    )
    plot_sed(png_path, tagger.logmel(waveform), framewise, times, tagger, source, top_k)
    return {"csv": str(csv_path), "npz": str(npz_path), "png": str(png_path)}


def plot_sed(
    path: Path,
    logmel: np.ndarray,
    framewise: np.ndarray,
    times: np.ndarray,
    tagger: Any,
    source: Path,
    top_k: int,
) -> None:
    """Log-mel spectrogram above the top-k classes' probabilities over time (PANNs' SED figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = np.argsort(-framewise.max(axis=0), kind="stable")[:top_k]
    end = float(times[-1]) if len(times) > 1 else tagger.hop_size / tagger.sample_rate
    figure, (spectrogram_axis, probability_axis) = plt.subplots(
        2, 1, sharex=True, figsize=(12, 7), gridspec_kw={"height_ratios": [1, 1.2]}, constrained_layout=True
    )
    spectrogram_axis.imshow(
        logmel.T,
        origin="lower",
        aspect="auto",
        cmap="magma",
        interpolation="nearest",
        extent=(0.0, end, 0, logmel.shape[1]),
    )
    spectrogram_axis.set_ylabel("Mel bin")
    spectrogram_axis.set_title("Log-mel spectrogram (dB)")
    colors = plt.get_cmap("tab10" if top_k <= 10 else "tab20")
    for rank, index in enumerate(top):
        probability_axis.plot(
            times,
            framewise[:, index],
            color=colors(rank % colors.N),
            linewidth=1.5,
            label=f"{tagger.labels[index]} ({framewise[:, index].max():.2f})",
        )
    probability_axis.set_ylim(0.0, 1.02)
    probability_axis.set_xlim(0.0, end)
    probability_axis.set_xlabel("Time (s)")
    probability_axis.set_ylabel("Probability")
    probability_axis.set_title(f"Top-{len(top)} classes by peak framewise probability")
    probability_axis.grid(alpha=0.3)
    probability_axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title="class (peak)")
    figure.suptitle(f"{source.name} — {tagger.model_name} sound event detection")
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _unique_stem(path: Path, taken: set[str]) -> str:
    """``a.wav`` and ``a.mp3`` in one run must not overwrite each other's outputs."""
    candidates = [path.stem, f"{path.stem}_{path.suffix.lstrip('.')}"]
    candidates += [f"{path.stem}_{number}" for number in range(2, len(taken) + 3)]
    stem = next(candidate for candidate in candidates if candidate not in taken)
    taken.add(stem)
    return stem


def _report_failure(path: Path, reason: str) -> dict[str, str]:
    print(f"{PROG}: {path}: {reason}", file=sys.stderr)
    return {"file": str(path), "error": reason}


def _one_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return " ".join(text.split())


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


if __name__ == "__main__":
    sys.exit(main())

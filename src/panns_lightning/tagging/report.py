"""What ``panns-tag`` says about one file: its summary record, a text table, SED files and plot."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from panns_lightning.atomic import atomic_open


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
    with atomic_open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["time_s", *tagger.labels])
        for time, row in zip(times, framewise):
            writer.writerow([f"{time:.3f}", *(f"{value:.6f}" for value in row)])
    with atomic_open(npz_path, "wb") as stream:
        np.savez_compressed(
            stream,
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
    with atomic_open(path, "wb") as stream:
        figure.savefig(stream, format="png", dpi=100)
    plt.close(figure)


def unique_stem(path: Path, taken: set[str]) -> str:
    """``a.wav`` and ``a.mp3`` in one run must not overwrite each other's outputs."""
    candidates = [path.stem, f"{path.stem}_{path.suffix.lstrip('.')}"]
    candidates += [f"{path.stem}_{number}" for number in range(2, len(taken) + 3)]
    stem = next(candidate for candidate in candidates if candidate not in taken)
    taken.add(stem)
    return stem

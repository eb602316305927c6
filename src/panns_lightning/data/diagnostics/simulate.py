"""Labels-only simulation at AudioSet scale: PANNs' sampler vs our train stream on ~1.9 M clips.

    python -m panns_lightning.data.diagnostics.simulate \\
        --class-counts class_counts_full_train.csv --clips 1900000 --draws 1000000

The simulated label set (:func:`simulated_label_set`) matches the CSV's per-class clip counts
exactly: every class c contributes n_c label tokens; the tokens are shuffled and cut into clips of
1 + k labels (k ~ Poisson-like, so the mean is Σn_c / clips ≈ 2 with the real counts); a clip that
got one class twice has the duplicate swapped with a random token elsewhere until no clip has
duplicates. Co-occurrence is therefore random (real AudioSet co-occurrence is not, e.g. "Music"
with its genres), which is also how the PANNs figures quoted below were simulated. Clips are cut
into ``--shards`` shards of equal size in that random order (the writer's stratification would only
spread rare classes more evenly).

Our sampler runs through ``TrainClipStream.iter_slot`` (the training code path) with a labels-only
in-memory reader, for ``--ranks`` × ``--workers`` slots in this process; the peak resident memory
it adds is measured (Linux ``clear_refs``/``VmHWM``).
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path
from typing import Any

import numpy as np

from panns_lightning.data.diagnostics.balance import (
    ClipLabels,
    balance_figures,
    clips_of_classes,
    draw_panns,
    draw_stream,
    format_figures,
    format_gaps,
    gap_stats,
    peak_rss_mb,
    rarest_decile,
    reset_peak_rss,
    rss_mb,
)

# PANNs' figures on ~2.0 M simulated clips, 1 M draws (an earlier simulation of the same kind).
NOTES_PANNS = {"max_min_ratio": 226, "kl_uniform": 1.341, "min_count": 1927, "rare_coverage": 1.00}
_DUPLICATE_REPAIR_ROUNDS = 1000


def read_class_counts(path: str | Path) -> np.ndarray:
    """Per-class clip counts from a CSV with columns ``index`` and ``clips_in_full_train`` (or ``count``)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{path}: no rows")
    column = next((name for name in ("clips_in_full_train", "count", "clips") if name in rows[0]), None)
    if column is None or "index" not in rows[0]:
        raise ValueError(f"{path}: expected columns 'index' and 'clips_in_full_train', found {list(rows[0])}")
    counts = np.zeros(len(rows), dtype=np.int64)
    for row in rows:
        counts[int(row["index"])] = int(row[column])
    return counts


def simulated_label_set(class_counts: np.ndarray, num_clips: int, num_shards: int, seed: int = 0) -> ClipLabels:
    """A random multi-label set with exactly ``class_counts`` clips per class (see module docstring)."""
    rng = np.random.default_rng(seed)
    num_classes = len(class_counts)
    tokens = rng.permutation(np.repeat(np.arange(num_classes, dtype=np.int32), class_counts))
    if len(tokens) < num_clips:
        raise ValueError(f"{len(tokens)} label tokens cannot give each of {num_clips} clips a label")
    lengths = 1 + np.bincount(rng.integers(0, num_clips, len(tokens) - num_clips), minlength=num_clips)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    owner = np.repeat(np.arange(num_clips, dtype=np.int64), lengths)
    for _ in range(_DUPLICATE_REPAIR_ROUNDS):
        duplicates = _duplicate_positions(owner, tokens, num_classes)
        if duplicates.size == 0:
            break
        # Swap each duplicate with a distinct random position elsewhere: counts stay exact.
        partners = np.unique(rng.integers(0, len(tokens), 2 * duplicates.size))
        partners = rng.permutation(partners[~np.isin(partners, duplicates)])[: duplicates.size]
        chosen = duplicates[: partners.size]
        tokens[chosen], tokens[partners] = tokens[partners], tokens[chosen]
    else:
        raise RuntimeError("could not remove duplicate labels within clips; are the counts larger than the clips?")
    sizes = [len(part) for part in np.array_split(np.arange(num_clips), num_shards)]
    return ClipLabels(offsets, tokens, num_classes, np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64))


def _duplicate_positions(owner: np.ndarray, tokens: np.ndarray, num_classes: int) -> np.ndarray:
    pair = owner * num_classes + tokens
    order = np.argsort(pair, kind="stable")
    same = pair[order][1:] == pair[order][:-1]
    return order[1:][same]


def run_simulation(
    class_counts: np.ndarray,
    *,
    clips: int,
    draws: int,
    shards: int,
    ranks: int,
    workers: int,
    batch_size: int,
    seed: int,
    stream_options: dict[str, Any] | None = None,
    plain: bool = False,
) -> dict[str, Any]:
    """Build the label set, draw from PANNs' sampler and ours, print the figures table; returns the figures."""
    started = time.perf_counter()
    label_set = simulated_label_set(class_counts, clips, shards, seed)
    counts = label_set.class_counts()
    print(
        f"label set      {label_set.num_clips} clips, {int((counts > 0).sum())} classes, "
        f"{len(label_set.values) / label_set.num_clips:.2f} labels/clip, {label_set.num_shards} shards, "
        f"counts {'match' if np.array_equal(counts, class_counts) else 'DIFFER from'} the CSV "
        f"({time.perf_counter() - started:.1f} s)"
    )
    rows: dict[str, dict[str, Any]] = {}
    memory: dict[str, float] = {}
    timing: dict[str, float] = {}

    def measured(name: str, run: Any) -> None:
        reset_peak_rss()
        base = rss_mb()
        start = time.perf_counter()
        drawn = run()
        timing[name] = time.perf_counter() - start
        memory[name] = peak_rss_mb() - base
        rows[name] = balance_figures(label_set, drawn, batch_size)
        gaps[name] = gap_stats(drawn)
        gaps[f"{name}, rarest-decile clips"] = gap_stats(drawn, rare_clips)

    options = dict(stream_options or {})
    gaps: dict[str, dict[str, float]] = {}
    rare_clips = clips_of_classes(label_set, rarest_decile(label_set.class_counts()))
    measured("PANNs BalancedTrainSampler", lambda: draw_panns(label_set, draws, seed=seed))
    measured(
        f"ours, {ranks} ranks x {workers} workers",
        lambda: draw_stream(
            label_set, draws, ranks=ranks, workers=workers, batch_size=batch_size, seed=seed, **options
        ),
    )
    if plain:
        measured(
            "plain stream (balanced=False)",
            lambda: draw_stream(
                label_set,
                draws,
                ranks=ranks,
                workers=workers,
                batch_size=batch_size,
                seed=seed,
                balanced=False,
                **options,
            ),
        )
    print(f"draws          {draws} per sampler, batch size {batch_size}; stream options {options or 'defaults'}")
    print()
    print(format_figures(rows))
    print()
    print("earlier simulation (PANNs, ~2.0 M clips): max/min 226, KL 1.341, min count 1927, rare coverage 1.00")
    print()
    print("gaps, in draws, between consecutive draws of the same clip:")
    print(format_gaps(gaps))
    for name in rows:
        print(f"{name:<32} {timing[name]:6.1f} s, peak memory added {memory[name]:7.1f} MB")
    return {"figures": rows, "gaps": gaps, "memory_mb": memory, "seconds": timing}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--class-counts", required=True, help="CSV with index,...,clips_in_full_train")
    parser.add_argument("--clips", type=int, default=1_900_000)
    parser.add_argument("--draws", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, default=2000)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shuffle-buffer", type=int, default=2000)
    parser.add_argument("--repeat-scale", type=float, default=1.0)
    parser.add_argument("--plain", action="store_true", help="also measure the unbalanced stream")
    args = parser.parse_args(argv)
    run_simulation(
        read_class_counts(args.class_counts),
        clips=args.clips,
        draws=args.draws,
        shards=args.shards,
        ranks=args.ranks,
        workers=args.workers,
        batch_size=args.batch_size,
        seed=args.seed,
        stream_options={"shuffle_buffer": args.shuffle_buffer, "repeat_scale": args.repeat_scale},
        plain=args.plain,
    )


if __name__ == "__main__":
    main()

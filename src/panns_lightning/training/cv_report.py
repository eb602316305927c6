"""Cross-validation report: per-fold results of a sweep → ``cv_summary.json``, ``cv_summary.md``, a confusion PNG.

Each fold's run writes ``fold_result.json`` (:func:`fold_result`) into its own output directory;
the report collects every such file under a sweep directory, checks they describe one experiment
(same labels, each fold once) and summarises:

- accuracy per fold, their mean and standard deviation (sample std, ddof = 1, as papers report
  the spread of fold scores); the same for mAP, the score of multi-label sets (where accuracy
  is top-1 precision: is the top prediction one of the clip's labels);
- per-class accuracy (recall) from the confusion matrix summed over folds: every clip is tested
  exactly once in k-fold CV, so the summed matrix is the whole dataset's;
- ``confusion_matrix.png``: that summed matrix, rows = true class, normalised per row.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from panns_lightning.training.metrics import score_tagging

RESULT_NAME = "fold_result.json"
SUMMARY_JSON = "cv_summary.json"
SUMMARY_MD = "cv_summary.md"
CONFUSION_PNG = "confusion_matrix.png"


class CVReportError(ValueError):
    """Fold results that cannot be summarised together; the message names the files."""


def fold_result(
    *,
    fold: int | None,
    label_names: Sequence[str],
    probs: torch.Tensor,
    targets: torch.Tensor,
    multilabel: bool,
    metrics: dict[str, Any] | None = None,
    info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One fold's result as JSON-ready dict: accuracy, mAP, clip count and (single-label) confusion counts."""
    num_classes = len(label_names)
    if probs.shape != targets.shape or probs.shape[-1] != num_classes:
        raise ValueError(f"probs {tuple(probs.shape)} and targets {tuple(targets.shape)} must be [N, {num_classes}]")
    predicted = probs.argmax(1)
    confusion = None
    if len(probs) == 0:
        accuracy = float("nan")
    elif multilabel:
        accuracy = float((targets[torch.arange(len(probs)), predicted] > 0.5).float().mean())
    else:
        truth = targets.argmax(1)
        accuracy = float((predicted == truth).float().mean())
        matrix = torch.zeros(num_classes, num_classes, dtype=torch.long)
        matrix.index_put_((truth, predicted), torch.ones_like(truth), accumulate=True)
        confusion = matrix.tolist()
    return {
        "fold": fold,
        "labels": list(label_names),
        "multilabel": multilabel,
        "num_clips": int(len(probs)),
        "accuracy": accuracy,
        "mAP": score_tagging(probs.float(), targets.float(), multilabel).mAP,
        "confusion": confusion,
        "metrics": dict(metrics or {}),
        **dict(info or {}),
    }


def collect_fold_results(sweep_dir: str | os.PathLike) -> list[tuple[Path, dict[str, Any]]]:
    """Every ``fold_result.json`` below ``sweep_dir`` (any depth), sorted by fold."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise CVReportError(f"{sweep_dir} is not a directory")
    found = []
    for path in sorted(sweep_dir.rglob(RESULT_NAME)):
        try:
            found.append((path, json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, json.JSONDecodeError) as error:
            raise CVReportError(f"{path}: cannot read ({error})") from error
    if not found:
        raise CVReportError(
            f"no {RESULT_NAME} under {sweep_dir}: did the fold runs finish (each writes one after testing)?"
        )
    return sorted(found, key=lambda item: (item[1].get("fold") is None, item[1].get("fold") or 0, str(item[0])))


def summarize(results: Sequence[tuple[Path, dict[str, Any]]]) -> dict[str, Any]:
    """Mean ± std accuracy over folds, per-class accuracy and the summed confusion matrix."""
    if not results:
        raise CVReportError("no fold results to summarise")
    first_path, first = results[0]
    labels = list(first["labels"])
    folds_seen: dict[Any, Path] = {}
    for path, result in results:
        if list(result["labels"]) != labels:
            raise CVReportError(
                f"{path} has other labels than {first_path} ({len(result['labels'])} vs {len(labels)} classes): not one experiment"
            )
        fold = result.get("fold")
        if fold in folds_seen:
            raise CVReportError(f"fold {fold} appears twice: {folds_seen[fold]} and {path}; report one sweep at a time")
        folds_seen[fold] = path
    accuracies = [float(result["accuracy"]) for _, result in results]
    per_fold = [
        {
            "fold": result.get("fold"),
            "accuracy": float(result["accuracy"]),
            "num_clips": int(result["num_clips"]),
            "path": str(path),
            **({"mAP": float(result["mAP"])} if result.get("mAP") is not None else {}),
        }
        for path, result in results
    ]
    summary: dict[str, Any] = {
        "labels": labels,
        "multilabel": bool(first.get("multilabel")),
        "num_folds": len(results),
        "folds": per_fold,
        "accuracy_mean": float(np.mean(accuracies)),
        "accuracy_std": float(np.std(accuracies, ddof=1)) if len(accuracies) > 1 else 0.0,
        "num_clips": sum(item["num_clips"] for item in per_fold),
        "confusion": None,
        "per_class_accuracy": None,
    }
    if all("mAP" in item for item in per_fold):  # older fold results have no mAP
        maps = [item["mAP"] for item in per_fold]
        summary["mAP_mean"] = float(np.mean(maps))
        summary["mAP_std"] = float(np.std(maps, ddof=1)) if len(maps) > 1 else 0.0
    expected = first.get("num_folds")
    if isinstance(expected, int):
        missing = sorted(set(range(1, expected + 1)) - set(folds_seen))
        summary["missing_folds"] = missing
    confusions = [result.get("confusion") for _, result in results]
    if all(c is not None for c in confusions):
        total = np.sum([np.asarray(c, dtype=np.int64) for c in confusions], axis=0)
        rows = total.sum(axis=1)
        summary["confusion"] = total.tolist()
        summary["per_class_accuracy"] = {
            name: (float(total[i, i] / rows[i]) if rows[i] else None) for i, name in enumerate(labels)
        }
    return summary


def write_report(
    sweep_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, *, title: str | None = None
) -> dict[str, Any]:
    """Collect, summarise and write the three report files into ``out_dir`` (default ``sweep_dir``)."""
    sweep_dir = Path(sweep_dir)
    out = Path(out_dir) if out_dir is not None else sweep_dir
    summary = summarize(collect_fold_results(sweep_dir))
    out.mkdir(parents=True, exist_ok=True)
    summary["title"] = title or sweep_dir.name
    (out / SUMMARY_JSON).write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    (out / SUMMARY_MD).write_text(markdown_report(summary), encoding="utf-8")
    if summary["confusion"] is not None:
        plot_confusion(np.asarray(summary["confusion"]), summary["labels"], out / CONFUSION_PNG, title=summary["title"])
    return summary


def format_cv_table(summary: dict[str, Any]) -> str:
    """Plain-text table: one row per fold, then mean ± std (with mAP first for multi-label sets)."""
    with_map = summary.get("multilabel") and "mAP_mean" in summary
    lines = [f"{'fold':<8}{'clips':>7}" + (f"{'mAP':>10}" if with_map else "") + f"{'accuracy':>10}"]
    lines.append("-" * len(lines[0]))
    for item in summary["folds"]:
        score = f"{item['mAP']:>10.4f}" if with_map else ""
        lines.append(f"{str(item['fold']):<8}{item['num_clips']:>7}{score}{item['accuracy']:>10.4f}")
    lines.append("-" * len(lines[0]))
    accuracy = f"{summary['accuracy_mean']:>10.4f} ± {summary['accuracy_std']:.4f}"
    if with_map:
        accuracy = f"{summary['mAP_mean']:>10.4f} ± {summary['mAP_std']:.4f} (mAP), accuracy {accuracy.strip()}"
    lines.append(f"{'mean':<8}{summary['num_clips']:>7}{accuracy}")
    return "\n".join(lines)


def markdown_report(summary: dict[str, Any]) -> str:
    """``cv_summary.md``: fold table, mean ± std, per-class accuracy (weakest first)."""
    lines = [f"# Cross-validation: {summary.get('title', '')}", "", "| fold | clips | accuracy |", "|---:|---:|---:|"]
    for item in summary["folds"]:
        lines.append(f"| {item['fold']} | {item['num_clips']} | {item['accuracy']:.4f} |")
    lines.append(
        f"| **mean ± std** | {summary['num_clips']} | **{summary['accuracy_mean']:.4f} ± {summary['accuracy_std']:.4f}** |"
    )
    if summary.get("multilabel") and "mAP_mean" in summary:
        lines += ["", "Multi-label set: mAP is its score (accuracy is top-1 precision).", "", "| fold | mAP |"]
        lines += ["|---:|---:|", *(f"| {item['fold']} | {item['mAP']:.4f} |" for item in summary["folds"])]
        lines.append(f"| **mean ± std** | **{summary['mAP_mean']:.4f} ± {summary['mAP_std']:.4f}** |")
    if summary.get("missing_folds"):
        lines += ["", f"Missing folds: {summary['missing_folds']} (the mean is over the folds present)."]
    per_class = summary.get("per_class_accuracy")
    if per_class:
        lines += ["", "## Per-class accuracy (all folds)", "", "| class | accuracy |", "|---|---:|"]
        ranked = sorted(per_class.items(), key=lambda item: (item[1] is None, item[1] if item[1] is not None else 0.0))
        for name, value in ranked:
            lines.append(f"| {name} | {'n/a' if value is None else f'{value:.4f}'} |")
        lines += ["", f"Confusion matrix summed over folds: `{CONFUSION_PNG}`."]
    return "\n".join(lines) + "\n"


def plot_confusion(confusion: np.ndarray, labels: Sequence[str], path: Path, *, title: str = "") -> None:
    """Row-normalised confusion matrix (true class per row) as a PNG; counts annotated when small."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = confusion.sum(axis=1, keepdims=True)
    normalised = np.divide(confusion, rows, out=np.zeros_like(confusion, dtype=float), where=rows > 0)
    size = max(4.0, 0.3 * len(labels) + 2)
    figure, axes = plt.subplots(figsize=(size + 1, size))
    image = axes.imshow(normalised, vmin=0, vmax=1, cmap="Blues")
    axes.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    axes.set_yticks(range(len(labels)), labels, fontsize=7)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(f"{title} (summed over folds)" if title else "summed over folds", fontsize=9)
    if len(labels) <= 15:
        for i in range(len(labels)):
            for j in range(len(labels)):
                if confusion[i, j]:
                    axes.text(
                        j,
                        i,
                        str(int(confusion[i, j])),
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="white" if normalised[i, j] > 0.5 else "black",
                    )
    figure.colorbar(image, ax=axes, fraction=0.046)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)

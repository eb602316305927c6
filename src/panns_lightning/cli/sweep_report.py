"""panns-sweep-report: one table and one figure for a Hydra multirun of panns-train.

    panns-sweep-report outputs/demo/multiruns/2026-01-01_12-00-00 [--metric val/loss]

Every job directory of the sweep holds ``metrics.json`` (written by ``MetricsJSONWriter``), the
job's overrides in ``.hydra/overrides.yaml`` and, with the CSV logger, ``csv/metrics.csv``. This
writes ``sweep_summary.md`` / ``sweep_summary.csv`` (one row per job, best first, the overrides
that vary across jobs as columns) and ``sweep_summary.png`` (the metric per configuration, and
the metric against step for every job). The metric is the sweep's own ``optimized_metric`` (each
job's ``.hydra/config.yaml``) unless ``--metric`` names another. It also runs at the end of each multirun through
:class:`panns_lightning.cli.hydra_callbacks.SweepReportCallback`.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from panns_lightning.cli.entry import console_entry

SUMMARY_NAME = "sweep_summary"
# Columns shown after the sort metric when the jobs logged them.
EXTRA_COLUMNS = ("val/mAP", "val/AUC", "val/d_prime", "test/mAP", "global_step")


@dataclass
class SweepJob:
    """One job of a sweep: where it ran, what it overrode, what it scored."""

    directory: Path
    overrides: dict[str, str]
    metrics: dict[str, float]
    curve: list[tuple[int, float]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.directory.name


@dataclass
class SweepReport:
    sweep_dir: Path
    metric: str
    jobs: list[SweepJob]  # best first; jobs without the metric last
    varying_keys: list[str]
    constant_overrides: dict[str, str]
    files: list[Path] = field(default_factory=list)


def write_sweep_report(
    sweep_dir: str | Path,
    metric: str | None = None,
    higher_is_better: bool | None = None,
    out_dir: str | Path | None = None,
    plot: bool = True,
) -> SweepReport:
    """Collect the sweep's jobs and write the summary files.

    ``metric=None`` (or ``"auto"``, what a panns-finetune sweep's callback is handed): the metric the
    sweep's jobs optimised; ``higher_is_better=None`` guesses from the name.
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep directory not found: {sweep_dir}")
    if metric is None or metric == "auto":
        metric = optimized_metric(sweep_dir)
    jobs = collect_jobs(sweep_dir, metric)
    if not jobs:
        raise FileNotFoundError(
            f"no job of {sweep_dir} has a .hydra/overrides.yaml: is this the sweep dir of a panns-train multirun?"
        )
    if higher_is_better is None:
        higher_is_better = "loss" not in metric
    jobs = sort_jobs(jobs, metric, higher_is_better)
    varying, constant = split_overrides(jobs)
    report = SweepReport(sweep_dir, metric, jobs, varying, constant)
    out = Path(out_dir) if out_dir is not None else sweep_dir
    out.mkdir(parents=True, exist_ok=True)
    report.files.append(_write_csv(report, out / f"{SUMMARY_NAME}.csv"))
    report.files.append(_write_markdown(report, out / f"{SUMMARY_NAME}.md"))
    if plot:
        report.files.append(_write_plot(report, out / f"{SUMMARY_NAME}.png"))
    return report


def optimized_metric(sweep_dir: Path) -> str:
    """The ``optimized_metric`` the sweep's jobs ran with (their ``.hydra/config.yaml``).

    ``auto`` (panns-finetune: mAP or accuracy, from the task) is what the job resolved it to, as its
    ``fold_result.json`` records.
    """
    found = set()
    for config_file in sorted(sweep_dir.rglob(".hydra/config.yaml")):
        value = (yaml.safe_load(config_file.read_text()) or {}).get("optimized_metric")
        result = config_file.parent.parent / "fold_result.json"
        if value == "auto" and result.is_file():
            value = json.loads(result.read_text()).get("optimized_metric")
        if isinstance(value, str) and value and value != "auto":
            found.add(value)
    if len(found) != 1:
        seen = f"found {sorted(found)}" if found else "no job's .hydra/config.yaml has one"
        raise ValueError(f"{sweep_dir}: cannot tell the sweep's optimized_metric ({seen}); pass --metric")
    return found.pop()


def collect_jobs(sweep_dir: Path, metric: str) -> list[SweepJob]:
    """Every directory under ``sweep_dir`` holding ``.hydra/overrides.yaml`` is a job (failed ones too)."""
    jobs = []
    for overrides_file in sorted(sweep_dir.rglob(".hydra/overrides.yaml")):
        directory = overrides_file.parent.parent
        if ".submitit" in directory.parts:
            continue
        logged = directory / "csv" / "metrics.csv"
        jobs.append(
            SweepJob(
                directory=directory,
                overrides=read_overrides(overrides_file),
                # metrics.json holds the final scores; the CSV log adds what it lacks (losses).
                metrics={**read_last_logged(logged), **read_metrics(directory / "metrics.json")},
                curve=read_curve(logged, metric),
            )
        )
    return jobs


def read_overrides(path: Path) -> dict[str, str]:
    """``["a.b=1", "+c=x"]`` → ``{"a.b": "1", "c": "x"}`` (Hydra's ``+``/``++``/``~`` prefixes dropped)."""
    entries = yaml.safe_load(path.read_text()) or []
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a list of 'key=value' overrides, found {type(entries).__name__}")
    overrides = {}
    for entry in entries:
        key, _, value = str(entry).partition("=")
        overrides[key.lstrip("+~")] = value
    return overrides


def read_metrics(path: Path) -> dict[str, float]:
    """``metrics.json`` flattened to ``{"val/mAP": ..., "test/AUC": ..., "global_step": ...}``; ``{}`` if absent."""
    if not path.is_file():
        return {}
    payload = json.loads(path.read_text())
    flat: dict[str, float] = {}
    for stage in ("val", "test"):
        for key, value in (payload.get(stage) or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                flat[f"{stage}/{key}"] = float(value)
    for key in ("global_step", "epoch"):
        if isinstance(payload.get(key), (int, float)):
            flat[key] = float(payload[key])
    return flat


def read_last_logged(path: Path) -> dict[str, float]:
    """The last value of every column of a CSVLogger ``metrics.csv`` (``{}`` if absent)."""
    if not path.is_file():
        return {}
    last: dict[str, float] = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            last.update({k: float(v) for k, v in row.items() if k not in ("epoch", "step") and v not in ("", None)})
    return last


def read_curve(path: Path, metric: str) -> list[tuple[int, float]]:
    """``(step, value)`` rows of a CSVLogger ``metrics.csv`` where ``metric`` is logged; ``[]`` if absent."""
    if not path.is_file():
        return []
    curve = []
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            value, step = row.get(metric, ""), row.get("step", "")
            if value not in ("", None) and step not in ("", None):
                curve.append((int(float(step)), float(value)))
    return curve


def sort_jobs(jobs: list[SweepJob], metric: str, higher_is_better: bool) -> list[SweepJob]:
    def key(job: SweepJob) -> tuple[int, float]:
        value = job.metrics.get(metric, math.nan)
        if math.isnan(value):
            return (1, 0.0)  # failed or unfinished jobs last
        return (0, -value if higher_is_better else value)

    return sorted(jobs, key=key)


def split_overrides(jobs: list[SweepJob]) -> tuple[list[str], dict[str, str]]:
    """Override keys whose value differs between jobs (the table's columns) and the shared rest."""
    keys: list[str] = []
    for job in jobs:
        keys += [k for k in job.overrides if k not in keys]
    varying = [k for k in keys if len({job.overrides.get(k) for job in jobs}) > 1]
    constant = {k: jobs[0].overrides[k] for k in keys if k not in varying}
    return varying, constant


# ---- writers ------------------------------------------------------------------------------------


def _metric_columns(report: SweepReport) -> list[str]:
    present = {k for job in report.jobs for k in job.metrics}
    preferred = [report.metric, *EXTRA_COLUMNS]
    return [k for i, k in enumerate(preferred) if k in present and k not in preferred[:i]] or [report.metric]


def _rows(report: SweepReport) -> tuple[list[str], list[list[str]]]:
    metrics = _metric_columns(report)
    header = ["rank", "job", *report.varying_keys, *metrics]
    rows = []
    for rank, job in enumerate(report.jobs, start=1):
        values = [_format(job.metrics.get(m)) for m in metrics]
        rows.append([str(rank), job.name, *(job.overrides.get(k, "") for k in report.varying_keys), *values])
    return header, rows


def _format(value: float | None) -> str:
    if value is None or math.isnan(value):
        return ""
    return str(int(value)) if float(value).is_integer() and abs(value) >= 1 else f"{value:.4f}"


def _write_csv(report: SweepReport, path: Path) -> Path:
    header, rows = _rows(report)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def format_markdown_table(report: SweepReport) -> str:
    header, rows = _rows(report)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _write_markdown(report: SweepReport, path: Path) -> Path:
    shared = " ".join(f"`{k}={v}`" for k, v in report.constant_overrides.items()) or "none"
    missing = [job.name for job in report.jobs if report.metric not in job.metrics]
    text = [
        f"# Sweep summary: {report.sweep_dir}",
        "",
        f"{len(report.jobs)} jobs, sorted by `{report.metric}` (best first). Shared overrides: {shared}.",
        "",
        format_markdown_table(report),
        "",
    ]
    if missing:
        text += [f"Jobs without `{report.metric}` (failed or unfinished): {', '.join(missing)}.", ""]
    text += [f"![sweep]({SUMMARY_NAME}.png)", ""]
    path.write_text("\n".join(text))
    return path


def _write_plot(report: SweepReport, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    labels = [
        " ".join(f"{_short_key(k)}={job.overrides.get(k, '')}" for k in report.varying_keys) or job.name
        for job in report.jobs
    ]
    values = [job.metrics.get(report.metric, math.nan) for job in report.jobs]
    figure, (bars, curves) = plt.subplots(1, 2, figsize=(13, max(3.5, 0.45 * len(report.jobs) + 1.5)))
    positions = list(range(len(report.jobs)))[::-1]  # best on top
    bars.barh(positions, [0.0 if math.isnan(v) else v for v in values], color="tab:blue")
    bars.set_yticks(positions, labels, fontsize=8)
    bars.set_xlabel(report.metric)
    bars.set_title(f"{report.metric} per configuration")
    for position, value in zip(positions, values):
        if not math.isnan(value):
            bars.text(value, position, f" {value:.3f}", va="center", fontsize=8)
    for job, label in zip(report.jobs, labels):
        if job.curve:
            steps, points = zip(*job.curve)
            curves.plot(steps, points, marker="o", markersize=3, label=label)
    curves.set_xlabel("step")
    curves.set_ylabel(report.metric)
    curves.set_title(f"{report.metric} during training")
    if any(job.curve for job in report.jobs):
        curves.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _short_key(key: str) -> str:
    """``augment.specaugment.enabled`` → ``specaugment.enabled``: enough to tell columns apart in a legend."""
    return ".".join(key.split(".")[-2:])


@console_entry
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="panns-sweep-report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sweep_dir", type=Path, help="the multirun directory (hydra.sweep.dir)")
    parser.add_argument(
        "--metric", default=None, help="sort key (default: the optimized_metric the sweep ran with, e.g. val/mAP)"
    )
    order = parser.add_mutually_exclusive_group()
    order.add_argument("--higher-is-better", dest="higher", action="store_true", default=None)
    order.add_argument("--lower-is-better", dest="higher", action="store_false")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: the sweep dir)")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    try:
        report = write_sweep_report(args.sweep_dir, args.metric, args.higher, args.out, plot=not args.no_plot)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"panns-sweep-report: {error}") from None
    print(format_markdown_table(report))
    print("\nwritten: " + ", ".join(str(p) for p in report.files))


if __name__ == "__main__":
    main()

"""``panns-cv-report SWEEP_DIR``: summarise the folds of a cross-validation sweep (see training/cv_report.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from panns_lightning.cli.entry import console_entry
from panns_lightning.training.cv_report import (
    CONFUSION_PNG,
    SUMMARY_JSON,
    SUMMARY_MD,
    CVReportError,
    format_cv_table,
    write_report,
)


@console_entry
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="panns-cv-report", description="Summarise a k-fold fine-tuning sweep.")
    parser.add_argument("sweep_dir", type=Path, help="the multirun directory (its jobs each wrote fold_result.json)")
    parser.add_argument("--out", type=Path, default=None, help="where to write the report (default: SWEEP_DIR)")
    parser.add_argument("--title", default=None, help="report title (default: the directory name)")
    args = parser.parse_args(argv)
    try:
        summary = write_report(args.sweep_dir, args.out, title=args.title)
    except CVReportError as error:
        print(f"panns-cv-report: error: {error}", file=sys.stderr)
        return 1
    out = args.out or args.sweep_dir
    print(format_cv_table(summary))
    if summary.get("missing_folds"):
        print(f"missing folds: {summary['missing_folds']}")
    written = [SUMMARY_JSON, SUMMARY_MD] + ([CONFUSION_PNG] if summary["confusion"] is not None else [])
    print("wrote " + ", ".join(str(out / name) for name in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())

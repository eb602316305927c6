"""``panns-export``: a checkpoint → ONNX or TorchScript, verified against PyTorch.

``panns-export best.ckpt --format onnx`` writes ``best.onnx`` plus ``best.onnx.json`` (model name,
sample rate, input/outputs, dynamic axes, label names, the verification's max abs differences),
so the exported file can be used without this package. Exit codes: 0 written and verified,
1 export, load or verification failed, 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
PROG = "panns-export"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(message)s")
    from panns_lightning.export import FORMATS, default_output_path, export_model
    from panns_lightning.inference import load_model

    assert args.format in FORMATS
    try:
        loaded = load_model(args.checkpoint, model_name=args.model, labels_csv=args.labels)
    except (OSError, ValueError, RuntimeError) as error:
        print(f"{PROG}: cannot load checkpoint {args.checkpoint}: {' '.join(str(error).split())}", file=sys.stderr)
        return EXIT_FAILED
    out = args.out or default_output_path(args.checkpoint, args.format)
    sample_rate = int(loaded.frontend["sample_rate"])
    try:
        report = export_model(loaded.model, out, args.format, sample_rate, seconds=args.seconds)
    except Exception as error:  # exporter/runtime errors come in many types; name the step and go
        print(
            f"{PROG}: exporting {loaded.model_name} from {args.checkpoint} to {out} failed: "
            f"{type(error).__name__}: {' '.join(str(error).split())[:500]}",
            file=sys.stderr,
        )
        return EXIT_FAILED

    sidecar = Path(f"{out}.json")
    sidecar.write_text(
        json.dumps(
            {
                "checkpoint": str(args.checkpoint),
                "model_name": loaded.model_name,
                "format": report.format,
                "frontend": loaded.frontend,
                "input": {
                    "name": "waveform",
                    "dtype": "float32",
                    "shape": ["batch", "samples" if report.dynamic_time else report.input_samples],
                    "sample_rate": sample_rate,
                    "channels": "mono",
                },
                "outputs": report.outputs,
                "dynamic_time": report.dynamic_time,
                "max_abs_diff": report.max_abs_diff,
                "notes": report.notes,
                "labels": loaded.label_names,
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    time_axis = "dynamic" if report.dynamic_time else f"fixed at {report.input_samples} samples"
    print(
        f"wrote {out} ({report.format}, {loaded.model_name}, {sample_rate} Hz; batch axis dynamic, time axis {time_axis})"
    )
    for note in report.notes:
        print(f"  note: {note}")
    for check, difference in report.max_abs_diff.items():
        print(f"  verified against PyTorch at {check}: max abs diff {difference:.2e}")
    print(f"  outputs: {', '.join(report.outputs)}; metadata in {sidecar}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Export a PANNs checkpoint to ONNX or TorchScript.")
    parser.add_argument("checkpoint", type=Path, metavar="CKPT", help="Lightning .ckpt or PANNs {'model': ...} file")
    parser.add_argument("--format", required=True, choices=("onnx", "torchscript"))
    parser.add_argument("--model", default=None, help="zoo model name for published files (inferred when omitted)")
    parser.add_argument("--labels", type=Path, default=None, help="class_labels_indices.csv, copied into the metadata")
    parser.add_argument(
        "--out", type=Path, default=None, help="output file (default: <ckpt stem>.onnx / .torchscript.pt)"
    )
    parser.add_argument(
        "--seconds",
        type=_positive_float,
        default=10.0,
        help="example input length; the time axis is fixed to it when it cannot be dynamic (default 10)",
    )
    return parser


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


if __name__ == "__main__":
    sys.exit(main())

"""``panns-export``: a checkpoint → ONNX, TorchScript or upstream PANNs' ``.pth``, verified.

``panns-export best.ckpt --format onnx`` writes ``best.onnx`` with the model card inside (ONNX
metadata ``model_card``; TorchScript: the extra file ``model_card.json``), so panns-tag,
``AudioTagger`` and any runtime reading the metadata know its rate, labels and outputs.
``--format panns`` writes upstream's ``{"model": state_dict}`` (what upstream's code and
``panns_inference`` load) with the card beside it under ``"model_card"``, from any checkpoint this
package reads. Every export also writes ``OUT.json``, a human-readable copy of the card plus the
verification's max abs differences and notes; no reader uses it (the file carries its card).
The checkpoint is the positional argument or ``--checkpoint``. Exit codes: 0 written and
verified, 1 export, load or verification failed, 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from panns_lightning.atomic import atomic_write
from panns_lightning.cli.entry import console_entry

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
PROG = "panns-export"


@console_entry
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    checkpoint = _checkpoint_argument(parser, args)
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(message)s")
    from panns_lightning.export import FORMATS, NotRepresentableError, default_output_path, export_model, graph_card
    from panns_lightning.export import export_panns_checkpoint as export_panns
    from panns_lightning.inference import load_model
    from panns_lightning.models.reader import file_kind

    assert args.format in FORMATS
    out = args.out or default_output_path(checkpoint, args.format)
    if out.resolve() == checkpoint.resolve():
        print(f"{PROG}: the output {out} is the checkpoint being exported; choose another --out", file=sys.stderr)
        return EXIT_USAGE
    try:
        kind = file_kind(checkpoint)
        if kind != "torch":
            print(
                f"{PROG}: {checkpoint} is already an exported {kind} graph; export from the .ckpt or .pth",
                file=sys.stderr,
            )
            return EXIT_USAGE
        loaded = load_model(checkpoint, model_name=args.model, labels_csv=args.labels)
    except (OSError, ValueError, RuntimeError) as error:
        print(f"{PROG}: cannot load checkpoint {checkpoint}: {' '.join(str(error).split())}", file=sys.stderr)
        return EXIT_FAILED
    assert loaded.network is not None  # a torch file holds weights
    card = loaded.card
    sample_rate = card.sample_rate
    try:
        if args.format == "panns":
            report = export_panns(loaded.network, out, card.model, card.frontend, seconds=args.seconds, card=card)
        else:
            report = export_model(loaded.network, out, args.format, sample_rate, seconds=args.seconds, card=card)
    except NotRepresentableError as error:
        print(f"{PROG}: {checkpoint} cannot be written in upstream's format: {error}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as error:  # exporter/runtime errors come in many types; name the step and go
        print(
            f"{PROG}: exporting {loaded.model_name} from {checkpoint} to {out} failed: "
            f"{type(error).__name__}: {' '.join(str(error).split())[:500]}",
            file=sys.stderr,
        )
        return EXIT_FAILED

    written = (
        card.with_artifact("panns", clipwise_output="sigmoid") if report.format == "panns" else graph_card(card, report)
    )
    sidecar = Path(f"{out}.json")
    atomic_write(
        sidecar,
        json.dumps(
            {
                "note": "a human-readable copy of the model card inside the exported file; readers use the file's own",
                "checkpoint": str(checkpoint),
                "model_name": loaded.model_name,
                "format": report.format,
                "frontend": card.frontend,
                "input": {
                    "name": "waveform",
                    "dtype": "float32",
                    "shape": ["batch", "samples" if report.dynamic_time else report.input_samples],
                    "sample_rate": sample_rate,
                    "channels": "mono",
                },
                "outputs": report.outputs,
                "clipwise_output": written.clipwise_activation,
                "dynamic_time": report.dynamic_time,
                "max_abs_diff": report.max_abs_diff,
                "notes": report.notes,
                "labels": card.labels,
                "model_card": written.to_dict(),
            },
            indent=2,
        )
        + "\n",
    )
    if report.format == "panns":
        print(
            f"wrote {out} (upstream PANNs' {{'model': state_dict}}, fp32; {loaded.model_name}, {sample_rate} Hz, "
            f"{len(loaded.label_names)} classes)"
        )
        verified = f"read back into a fresh {loaded.model_name}"
    else:
        time_axis = "dynamic" if report.dynamic_time else f"fixed at {report.input_samples} samples"
        print(
            f"wrote {out} ({report.format}, {loaded.model_name}, {sample_rate} Hz; batch axis dynamic, time axis {time_axis}; "
            f"clipwise_output: {report.clipwise_output} probabilities)"
        )
        verified = "verified against PyTorch"
    for note in report.notes:
        print(f"  note: {note}")
    for check, difference in report.max_abs_diff.items():
        print(f"  {verified} at {check}: max abs diff {difference:.2e}")
    print(f"  outputs: {', '.join(report.outputs)}; model card inside the file, a readable copy in {sidecar}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Export a PANNs checkpoint to ONNX, TorchScript or upstream PANNs' .pth format."
    )
    parser.add_argument(
        "checkpoint", type=Path, nargs="?", metavar="CKPT", help="Lightning .ckpt or PANNs {'model': ...} file"
    )
    parser.add_argument("--checkpoint", dest="checkpoint_option", type=Path, metavar="CKPT", help="same as CKPT")
    parser.add_argument(
        "--format",
        required=True,
        choices=("onnx", "torchscript", "panns"),
        help="panns: upstream's {'model': state_dict} (fp32), for upstream's code and panns_inference",
    )
    parser.add_argument(
        "--model", default=None, help="zoo model name for published files without a model card (inferred when omitted)"
    )
    parser.add_argument(
        "--labels", type=Path, default=None, help="class_labels_indices.csv naming a published file's classes"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output file (default: <ckpt stem>.onnx / .torchscript.pt / .pth)"
    )
    parser.add_argument(
        "--seconds",
        type=_positive_float,
        default=10.0,
        help="example input length; the time axis is fixed to it when it cannot be dynamic (default 10)",
    )
    return parser


def _checkpoint_argument(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Path:
    """The checkpoint, given as CKPT or --checkpoint CKPT (not two different ones)."""
    given = [path for path in (args.checkpoint, args.checkpoint_option) if path is not None]
    if not given:
        parser.error("the checkpoint is required (CKPT or --checkpoint CKPT)")
    if len(given) == 2 and given[0] != given[1]:
        parser.error(f"two checkpoints given ({given[0]} and --checkpoint {given[1]}); give one")
    return given[0]


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


if __name__ == "__main__":
    sys.exit(main())

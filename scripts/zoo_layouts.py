"""Regenerate src/panns_lightning/models/zoo_layouts.json: every zoo model's state_dict keys and shapes.

    .venv/bin/python scripts/zoo_layouts.py [--check]

Guessing which network a published file holds compares its keys and shapes with each zoo model's
(models/checkpoint.py, ``best_matching_models``). Reading them from this table instead of building
26 networks saves seconds per guess. Each model is built on the meta device at its paper front
end with 527 classes. ``--check`` exits 1 when the file differs from what the zoo builds now
(tests/test_zoo_layouts.py runs the same comparison).
"""

from __future__ import annotations

import argparse
import sys

from panns_lightning.atomic import atomic_open
from panns_lightning.models.checkpoint import LAYOUTS_FILE, built_layout, layouts_json
from panns_lightning.models.registry import list_models


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    text = layouts_json({name: built_layout(name) for name in list_models()})
    if args.check:
        same = LAYOUTS_FILE.is_file() and LAYOUTS_FILE.read_text(encoding="utf-8") == text
        print(f"{LAYOUTS_FILE}: {'up to date' if same else 'OUT OF DATE: run scripts/zoo_layouts.py'}")
        return 0 if same else 1
    with atomic_open(LAYOUTS_FILE, "w", encoding="utf-8") as stream:
        stream.write(text)
    print(f"wrote {LAYOUTS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

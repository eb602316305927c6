"""Write docs/reference/config.md: every Hydra config group, its options and what each is for.

The page is generated from ``conf/`` and ``experiments/`` themselves (each option's description is
the comment at the top of its YAML file), so it cannot drift from them; ``tests/test_docs.py``
checks that the committed page equals what this script writes.

    python scripts/config_reference.py            # rewrite the page
    python scripts/config_reference.py --check    # exit 1 if the page is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "reference" / "config.md"

HEADER = """# Config groups

`panns-train` and `panns-finetune` compose their config from the groups below (`conf/train.yaml`
lists the defaults); pick an option with `GROUP=OPTION` and change one value with
`GROUP.KEY=VALUE`, e.g. `panns-train experiment=demo model=Cnn10 data.batch_size=16`.
`panns-train --cfg job experiment=demo` prints the composed config without running it.
Every value is checked against the schema in `src/panns_lightning/cli/config_schema.py` before any
work starts; a misspelt key or a value out of range stops the run with one line naming it.

This page is generated from the YAML files (`python scripts/config_reference.py`): each
description is the comment at the top of its file.
"""


def describe(path: Path) -> str:
    """The leading comment block of a YAML file, without ``# @package`` lines, as one paragraph."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if not text.startswith("@package"):
            lines.append(text)
    return " ".join(lines).replace("|", "\\|")


def group_tables(conf: Path, experiments: Path) -> list[tuple[str, list[tuple[str, str]]]]:
    """(group, [(option, description)]) for every group folder under conf/, then ``experiment``."""
    groups = []
    for folder in sorted(p for p in conf.rglob("*") if p.is_dir()):
        options = [(f.stem, describe(f)) for f in sorted(folder.glob("*.yaml"))]
        if options:
            groups.append((folder.relative_to(conf).as_posix(), options))
    groups.append(("experiment", [(f.stem, describe(f)) for f in sorted(experiments.glob("*.yaml"))]))
    return groups


def render(conf: Path = REPO / "conf", experiments: Path = REPO / "experiments") -> str:
    parts = [HEADER]
    primaries = sorted(conf.glob("*.yaml"))
    parts.append("## Primary configs\n\n| file | what |\n|---|---|")
    parts.extend(f"| `conf/{f.name}` | {describe(f)} |" for f in primaries)
    for group, options in group_tables(conf, experiments):
        folder = "experiments" if group == "experiment" else f"conf/{group}"
        parts.append(f"\n## `{group}`\n\nFiles: `{folder}/`.\n\n| option | what |\n|---|---|")
        parts.extend(f"| `{name}` | {text or '(no description)'} |" for name, text in options)
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed page is not up to date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = PAGE.read_text(encoding="utf-8") if PAGE.exists() else ""
        if current != text:
            print(f"{PAGE.relative_to(REPO)} is stale: run python scripts/config_reference.py", file=sys.stderr)
            return 1
        return 0
    PAGE.parent.mkdir(parents=True, exist_ok=True)
    PAGE.write_text(text, encoding="utf-8")
    print(f"wrote {PAGE.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

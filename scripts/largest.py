"""The largest files and the longest functions under src/, as Markdown tables.

Why: the project keeps every module small (a test holds each src file to 600 lines); this prints
where the size is, so a refactor can say what it changed ("before" and "after" tables).

    python scripts/largest.py [--top 15] [--root src]
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def file_lengths(root: Path) -> list[tuple[int, str]]:
    """(lines, path relative to the repo) of every .py file under ``root``, longest first."""
    rows = [(len(p.read_text(encoding="utf-8").splitlines()), str(p.relative_to(REPO))) for p in root.rglob("*.py")]
    return sorted(rows, reverse=True)


def function_lengths(root: Path) -> list[tuple[int, str]]:
    """(lines, ``path:qualified.name``) of every function and method under ``root``, longest first."""
    rows: list[tuple[int, str]] = []
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        rows.extend(_walk(tree, [], str(path.relative_to(REPO))))
    return sorted(rows, reverse=True)


def _walk(node: ast.AST, names: list[str], path: str) -> list[tuple[int, str]]:
    rows: list[tuple[int, str]] = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            start = min([child.lineno, *(d.lineno for d in child.decorator_list)])
            rows.append((child.end_lineno - start + 1, f"{path}:{'.'.join([*names, child.name])}"))
            rows.extend(_walk(child, [*names, child.name], path))
        elif isinstance(child, ast.ClassDef):
            rows.extend(_walk(child, [*names, child.name], path))
        else:
            rows.extend(_walk(child, names, path))
    return rows


def table(title: str, rows: list[tuple[int, str]]) -> str:
    lines = [f"| {title} | lines |", "|---|---:|"]
    lines += [f"| `{name}` | {n} |" for n, name in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=15, help="rows per table (default 15)")
    parser.add_argument("--root", type=Path, default=REPO / "src", help="folder to measure (default src/)")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    print(table("file", file_lengths(root)[: args.top]))
    print()
    print(table("function", function_lengths(root)[: args.top]))


if __name__ == "__main__":
    main()

"""The documentation stays true to the repository: the README's size, the pages the site lists, the
paths of "where to change what", the generated config reference, every command documented.

``make docs`` (run by ``.ci/run``) builds the site with ``--strict``, which checks the links; these
tests check what a link checker cannot.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
README_MAX_LINES = 150
tomllib = pytest.importorskip("tomllib")  # Python 3.11+


def section(markdown: str, heading: str) -> str:
    """The text under ``heading`` up to the next heading of the same or a higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    start = markdown.index(heading + "\n")
    following = re.compile(rf"^#{{1,{level}}} ", re.MULTILINE)
    end = following.search(markdown, start + len(heading))
    return markdown[start : end.start() if end else len(markdown)]


def test_readme_is_a_door_not_a_wall() -> None:
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; the site holds the rest"
    text = "\n".join(lines)
    assert "make demo" in text and "make test" in text


def nav_pages(mkdocs_yml: str) -> set[str]:
    """Every ``*.md`` named in mkdocs.yml's nav (a flat scan: nav entries are the only .md values)."""
    return set(re.findall(r":\s*([\w./-]+\.md)\s*$", mkdocs_yml, re.MULTILINE))


def test_every_page_is_in_the_site_navigation() -> None:
    listed = nav_pages((REPO / "mkdocs.yml").read_text(encoding="utf-8"))
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert pages - listed == set(), "pages the site would hide (add them to nav in mkdocs.yml)"
    assert listed - pages == set(), "nav names pages that do not exist"


def test_every_path_in_where_to_change_what_exists() -> None:
    table = section((DOCS / "architecture.md").read_text(encoding="utf-8"), "## Where to change what")
    paths = [p for p in re.findall(r"`([^`\s]+)`", table) if "/" in p]
    assert len(paths) >= 20, paths  # the table names real files, not only prose
    missing = [p for p in paths if not (REPO / p).exists()]
    assert missing == [], f"docs/architecture.md names paths that do not exist: {missing}"


def test_config_reference_is_generated_from_conf() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "config_reference.py"), "--check"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("source", ["scripts", "make targets"])
def test_every_command_is_in_the_commands_reference(source: str) -> None:
    page = (DOCS / "reference" / "commands.md").read_text(encoding="utf-8")
    if source == "scripts":
        names = list(tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"])
    else:
        phony = re.search(r"^\.PHONY:(.*)$", (REPO / "Makefile").read_text(encoding="utf-8"), re.MULTILINE)
        names = [f"make {t}" for t in phony.group(1).split() if t not in {"help", "install"}]
    assert names, source
    assert [n for n in names if f"`{n}" not in page] == []

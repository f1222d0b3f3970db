"""The documentation: the MkDocs site builds with --strict, and README.md stays a small landing page.

`mkdocs build --strict` fails on a page missing from the nav's targets, a relative link to a missing
page or anchor, and any other warning, so the site's cross-links are checked here. README.md is not
part of the site: its relative links are checked by hand.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_MAX_BYTES = 12 * 1024

#: Markdown links and images: [text](target) / ![alt](target "title"); the target up to a space or ")".
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def _readme() -> str:
    return README.read_text(encoding="utf-8")


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -e '.[dev]')")
    cmd = [
        sys.executable,
        "-m",
        "mkdocs",
        "build",
        "--strict",
        "--config-file",
        str(ROOT / "mkdocs.yml"),
        "--site-dir",
        str(tmp_path / "site"),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        print(proc.stdout)
        print(proc.stderr)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stderr[-4000:]}"
    assert (tmp_path / "site" / "index.html").is_file()


def test_readme_is_a_small_landing_page() -> None:
    size = README.stat().st_size
    assert size <= README_MAX_BYTES, (
        f"README.md is {size} bytes; keep it <= {README_MAX_BYTES}: move detail to docs/"
    )
    text = _readme()
    assert "make test" in text
    assert "make bench" in text


def _relative_links(text: str) -> list[str]:
    """Targets of the Markdown links and images that point into the repository (no URL, no anchor)."""
    targets = []
    for target in LINK.findall(text):
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("#"):
            continue  # http:, https:, mailto: ... or an anchor on this page
        targets.append(target.split("#", 1)[0])
    return targets


def test_readme_relative_links_exist() -> None:
    links = _relative_links(_readme())
    assert links, "README.md links to no docs page"
    missing = sorted({t for t in links if not (README.parent / t).exists()})
    assert not missing, f"README.md links to missing files: {missing}"


def test_link_pattern() -> None:
    text = '[a](docs/cli.md) ![b](docs/demo.png "t") [c](https://x.org) [d](#top) [e](docs/proof.md#results)'
    assert _relative_links(text) == ["docs/cli.md", "docs/demo.png", "docs/proof.md"]

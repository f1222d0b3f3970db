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


# ---- every Python block of README.md and docs/ runs ------------------------------------------------

DOC_PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]
#: `<!-- docs-test: skip (REASON) -->` on the last non-blank line before a block: it is not run.
SKIP_MARK = re.compile(r"^<!--\s*docs-test:\s*skip\s*(?:\((?P<reason>[^)]*)\))?\s*-->$")
FENCE = re.compile(r"^```python[ \t]*\n(?P<code>.*?)^```[ \t]*$", re.S | re.M)
#: Blocks that need what no test machine here has (a GPU, a Triton server, the network): keep few.
MAX_SKIPPED = 2


def python_blocks(text: str) -> list[tuple[int, str, str | None]]:
    """(line, code, skip reason or None) of every ```python block of a Markdown text.

    A reason is "" when the skip mark gives none (which the tests refuse).
    """
    blocks = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = [ln.strip() for ln in text[: match.start()].splitlines() if ln.strip()]
        mark = SKIP_MARK.match(before[-1]) if before else None
        reason = None if mark is None else (mark.group("reason") or "").strip()
        blocks.append((line, match.group("code"), reason))
    return blocks


def _rel(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


RUN_PAGES = [p for p in DOC_PAGES if any(r is None for _, _, r in python_blocks(p.read_text("utf-8")))]

#: Runs one page's blocks in order in one interpreter (as a reader pastes them into one session);
#: a failing block is named by its page and line.
RUNNER = """
import json, sys, traceback
ns = {"__name__": "__main__"}
for line, code in json.loads(sys.stdin.read()):
    try:
        exec(compile(code, f"PAGE:{line}", "exec"), ns)
    except BaseException:
        traceback.print_exc()
        sys.exit(f"the block at PAGE:{line} failed")
"""


def test_python_block_parser_and_skip_marks() -> None:
    text = (
        "x\n\n```python\nprint(1)\n```\n\n<!-- docs-test: skip (needs a CUDA GPU) -->\n```python\n"
        "gpu()\n```\n<!-- docs-test: skip -->\n\n```python\nalso()\n```\n```bash\nls\n```\n"
    )
    assert python_blocks(text) == [(3, "print(1)\n", None), (8, "gpu()\n", "needs a CUDA GPU"),
                                   (13, "also()\n", "")]  # fmt: skip


def test_skipped_blocks_say_why_and_stay_few() -> None:
    """A block may be left out of the run only with a reason in its mark (a GPU, a TensorRT build,
    a Triton server, the network), and only a few may be."""
    skipped = [
        (f"{_rel(page)}:{line}", reason)
        for page in DOC_PAGES
        for line, _, reason in python_blocks(page.read_text("utf-8"))
        if reason is not None
    ]
    assert all(reason for _, reason in skipped), f"skip marks without a reason: {skipped}"
    assert len(skipped) <= MAX_SKIPPED, f"{len(skipped)} blocks skipped (at most {MAX_SKIPPED}): {skipped}"
    assert RUN_PAGES, "no Python block found to run"


@pytest.fixture(scope="module")
def docs_workspace(tmp_path_factory) -> Path:
    """A working folder with what the blocks name, made as the quick start makes it: ShapeWorld
    scenes (`zeroseg synth`) in data/scenes and (all val) data/voc, scene.jpg / scene.png / photo.jpg, an
    ONNX bundle of the bundled model with a vocabulary and int8 graphs as `bundle`, an AOTInductor
    bundle as `DIR` and an ExecuTorch bundle (fp32 + int8) as `et_bundle` (all shared with the export
    tests and cached)."""
    import shutil

    import export_helpers as eh
    from aoti_cache import cached_bundle, cached_executorch_bundle
    from PIL import Image

    work = tmp_path_factory.mktemp("docs")
    for folder, more in (("data/scenes", ["--n", "8"]), ("data/voc", ["--n", "4", "--val-fraction", "1"])):
        cmd = [sys.executable, "-m", "zeroseg", "synth", "--out", folder, "--kind", "scenes", *more]
        subprocess.run(cmd, cwd=work, check=True, capture_output=True, timeout=300)
    first = work / "data" / "scenes" / "JPEGImages" / "000000.jpg"
    shutil.copy(first, work / "scene.jpg")
    shutil.copy(first, work / "photo.jpg")
    Image.open(first).save(work / "scene.png")
    (work / "bundle").symlink_to(eh.shapeworld_bundle(tmp_path_factory)[0], target_is_directory=True)
    (work / "DIR").symlink_to(cached_bundle(), target_is_directory=True)
    (work / "et_bundle").symlink_to(cached_executorch_bundle(), target_is_directory=True)
    return work


@pytest.mark.slow
@pytest.mark.parametrize("page", RUN_PAGES, ids=_rel)
def test_every_python_block_runs(docs_workspace: Path, page: Path) -> None:
    """Every ```python block of README.md and docs/ runs (the blocks of a page in order, in one
    interpreter, in a prepared working folder): a snippet that broke (onnxruntime 1.32 refused a
    numpy scalar where the docs passed one) fails here, not on a reader's machine."""
    import json

    blocks = [(line, code) for line, code, reason in python_blocks(page.read_text("utf-8")) if reason is None]
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER.replace("PAGE", _rel(page))], input=json.dumps(blocks), text=True,
        cwd=docs_workspace, capture_output=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, f"{_rel(page)}:\n{proc.stderr[-4000:]}"

"""The documentation is tested like code.

* every ```python block of README.md and the docs pages runs (each page's blocks in order, in one
  namespace; a block preceded by ``<!-- no-run -->`` is shown, not run);
* the docstring examples (``>>>``) of every advtrade module pass under doctest;
* every public name of ``advtrade.__all__`` is in the API reference, and the site builds with
  ``mkdocs build --strict`` with an anchor for each of them;
* the version is the same everywhere, and the README's commands are the ones CI runs.
"""

from __future__ import annotations

import doctest
import importlib
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import advtrade

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
API = DOCS / "api"

# --------------------------------------------------------------------------- code blocks

FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w+-]*)(?P<info>[^\n]*)$")
NO_RUN = "<!-- no-run -->"


def code_blocks(path: Path) -> list[tuple[int, str, bool]]:
    """(line number, source, runnable) of each ```python block of a Markdown file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, lang, start = len(match["indent"]), match["lang"], i
        body = []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][indent:])
            i += 1
        i += 1  # the closing fence
        if lang in ("python", "py"):
            previous = next((ln.strip() for ln in reversed(lines[:start]) if ln.strip()), "")
            blocks.append((start + 1, "\n".join(body) + "\n", previous != NO_RUN))
    return blocks


PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md")), *sorted(DOCS.glob("guide/*.md"))]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_code_blocks_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = [b for b in code_blocks(page) if b[2]]
    if not blocks:
        pytest.skip(f"{page.name} has no runnable python blocks")
    monkeypatch.chdir(tmp_path)  # blocks that write files write them here
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    with torch.random.fork_rng():  # pages may seed the global RNG; other tests keep theirs
        for line, source, _ in blocks:
            code = compile(source, f"{page.relative_to(ROOT)}:{line}", "exec")
            exec(code, namespace)  # a failure's traceback names the page and the block's line


def test_every_docs_page_is_in_the_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for page in [*DOCS.glob("*.md"), *DOCS.glob("guide/*.md"), *API.glob("*.md")]:
        assert str(page.relative_to(DOCS)) in nav, f"{page} is not in mkdocs.yml's nav"


def test_no_run_marker_is_rare() -> None:
    """Most examples must run: only a few blocks (torchrun scripts, long runs) may opt out."""
    blocks = [b for page in PAGES for b in code_blocks(page)]
    skipped = [b for b in blocks if not b[2]]
    assert blocks and len(skipped) <= len(blocks) // 3, "too many <!-- no-run --> blocks"


# --------------------------------------------------------------------------- doctests


def _modules() -> list[str]:
    """advtrade and its public top-level modules and subpackages (what the reference covers)."""
    names = ["advtrade"]
    for info in pkgutil.iter_modules(advtrade.__path__, "advtrade."):
        if not info.name.rsplit(".", 1)[1].startswith("_"):
            names.append(info.name)
    return names


def _all_modules() -> list[str]:
    """Every module of the package, private implementation modules included (their docstrings
    hold the examples of the names the subpackages export)."""
    names = ["advtrade"]
    for info in pkgutil.walk_packages(advtrade.__path__, "advtrade."):
        if not info.name.endswith("__main__"):
            names.append(info.name)
    return names


NEEDS = {"advtrade.datasets._bundled": "sklearn", "advtrade.datasets._split": "sklearn"}


@pytest.mark.parametrize("name", _all_modules())
def test_doctests(name: str) -> None:
    if name in NEEDS:
        pytest.importorskip(NEEDS[name])
    module = importlib.import_module(name)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=flags)
    tests = [t for t in finder.find(module, name) if t.examples]
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} doctest example(s) failed in {name}"


def test_the_finished_modules_have_doctest_examples() -> None:
    """The core modules carry runnable examples (the promise of the docstrings)."""
    for name in ("attacks", "threats", "losses", "synthetic", "evaluation"):
        root = f"advtrade.{name}"
        modules = [m for m in _all_modules() if m == root or m.startswith(root + ".")]
        found = [
            t
            for m in modules
            for t in doctest.DocTestFinder().find(importlib.import_module(m), m)
        ]
        assert any(t.examples for t in found), f"advtrade.{name} has no doctest examples"


# --------------------------------------------------------------------------- API reference

DIRECTIVE = re.compile(r"^::: (?P<module>[\w.]+)\n(?P<options>(?:[ \t]+.*\n)*)", re.MULTILINE)
MEMBERS = re.compile(r"members:\s*\[(?P<names>[^\]]*)\]")
ROW = re.compile(r"^\| \[`(?P<name>[\w]+)`\]\[(?P<ident>[\w.]+)\] \|", re.MULTILINE)


def directives() -> dict[str, list[str] | None]:
    """Each ``::: module`` of the API pages and its explicit ``members`` list (None: all)."""
    found: dict[str, list[str] | None] = {}
    for page in sorted(API.glob("*.md")):
        for match in DIRECTIVE.finditer(page.read_text(encoding="utf-8") + "\n"):
            members = MEMBERS.search(match["options"])
            names = None if members is None else [n.strip() for n in members["names"].split(",")]
            found[match["module"]] = names
    return found


def documented(ident: str, docs: dict[str, list[str] | None]) -> bool:
    """Whether the object ``ident`` (module.name) is rendered by some directive."""
    if ident in docs:
        return True
    module, _, name = ident.rpartition(".")
    if module not in docs:
        return False
    members = docs[module]
    public = getattr(importlib.import_module(module), "__all__", None)
    return name in members if members is not None else public is None or name in public


def test_every_public_module_has_a_reference_section() -> None:
    docs = directives()
    missing = [m for m in _modules()[1:] if m not in docs]
    assert not missing, f"modules without a '::: module' section in docs/api/: {missing}"


def test_every_public_name_is_in_the_api_reference() -> None:
    """Each name of ``advtrade.__all__`` has a row in docs/api/index.md that links to the object
    itself, in a module whose section renders it (mkdocs --strict then proves the link)."""
    docs = directives()
    rows = {m["name"]: m["ident"] for m in ROW.finditer((API / "index.md").read_text("utf-8"))}
    for name in advtrade.__all__:
        if name == "__version__":
            assert "advtrade.__version__" in (API / "index.md").read_text("utf-8")
            continue
        assert name in rows, f"advtrade.{name} has no row in docs/api/index.md"
        ident = rows[name]
        module, _, attr = ident.rpartition(".")
        target = (
            importlib.import_module(ident)
            if ident in docs
            else getattr(importlib.import_module(module), attr)
        )
        assert target is getattr(advtrade, name), f"{ident} is not advtrade.{name}"
        assert documented(ident, docs), f"{ident} is not rendered by any '::: module' section"
    extra = set(rows) - set(advtrade.__all__)
    assert not extra, f"docs/api/index.md lists names that are not public: {sorted(extra)}"


def test_site_builds_strict_with_every_public_name(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python")
    site = tmp_path / "site"
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    ids = set()
    for page in (site / "api").rglob("*.html"):
        ids |= set(re.findall(r'id="(advtrade[\w.]*)"', page.read_text(encoding="utf-8")))
    rows = {m["name"]: m["ident"] for m in ROW.finditer((API / "index.md").read_text("utf-8"))}
    missing = [name for name, ident in rows.items() if ident not in ids]
    assert not missing, f"public names without an anchor in the built API reference: {missing}"


# --------------------------------------------------------------------------- version, README


def test_version_is_the_same_everywhere() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    declared = re.search(r'^version = "([^"]+)"$', pyproject, re.MULTILINE)
    assert declared and advtrade.__version__ == declared.group(1) == "0.2.0"
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    first = re.search(r"^## \[?(\d+\.\d+\.\d+)", changelog, re.MULTILINE)
    assert first and first.group(1) == advtrade.__version__, "CHANGELOG's top entry"


@pytest.mark.skipif(
    not (ROOT / "src" / "advtrade" / "__main__.py").exists(), reason="no advtrade/__main__.py"
)
def test_python_m_advtrade_version() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "advtrade", "--version"], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert advtrade.__version__ in run.stdout + run.stderr


def test_readme_test_command_is_one_line_that_ci_runs() -> None:
    """.ci/run extracts the lines between the markers that are not fences or comments."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- test-command -->\n(.*?)<!-- /test-command -->", text, re.DOTALL)
    assert block, "README.md lost its <!-- test-command --> block"
    lines = [ln for ln in block.group(1).splitlines() if not ln.startswith(("<!--", "```"))]
    assert len(lines) == 1, f"the test command must be one line, got {lines}"
    command = lines[0]
    for part in ('pip install -e ".[dev]"', "ruff check .", "mkdocs build --strict", "pytest"):
        assert part in command
    assert 'pip install -e ".[all]"' in text, "README lost the install-and-run command"

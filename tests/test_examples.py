"""Every script in examples/ runs as a user would run it, in quick mode, so none can rot.

Each runs in a subprocess with ``--quick`` (and ``--out``/``--checkpoint-dir`` pointing into a
temporary folder when the script takes them), on one thread, from a temporary working
directory. Scripts launched with torchrun are run by their own test when one exists.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
TIMEOUT_S = 900  # quick mode takes seconds to about a minute on two shared CPU cores


def run_elsewhere(script: Path) -> str | None:
    """The test file that already runs ``script`` (torchrun examples), if any."""
    for test in (ROOT / "tests").glob("test_*.py"):
        if test.name != Path(__file__).name and script.name in test.read_text(encoding="utf-8"):
            return test.name
    return None


def test_there_are_examples() -> None:
    assert EXAMPLES, "examples/ holds no scripts"


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs_quick(script: Path, tmp_path: Path) -> None:
    source = script.read_text(encoding="utf-8")
    assert '"--quick"' in source, f"{script.name} must accept --quick (a CPU run of seconds)"
    if "torchrun" in source and (other := run_elsewhere(script)):
        pytest.skip(f"launched with torchrun; run by tests/{other}")
    args = [sys.executable, str(script), "--quick"]
    out = tmp_path / "out"
    for flag in ("--out", "--checkpoint-dir"):
        if f'"{flag}"' in source:
            args += [flag, str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    run = subprocess.run(
        args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert run.returncode == 0, f"{script.name} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    if '"--out"' in source:
        assert out.is_dir() and any(out.iterdir()), f"{script.name} wrote nothing to --out"

"""Every script in examples/ runs to completion, so the examples cannot rot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))
# The examples import the threadline of this tree, whatever PYTHONPATH the suite runs with
# (a relative one does not hold in the examples' own working directory).
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent / "src")}


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(script: Path, tmp_path: Path) -> None:
    args = [sys.executable, str(script)]
    if script.stem == "quickstart":
        args.append(f"sqlite:///{tmp_path / 'quickstart.db'}")
    # approval_flow keeps its database in the temp dir by default: shared by every checkout
    # on this machine, where another threadline may have written a newer schema.
    env = {**ENV, "APPROVAL_DB": str(tmp_path / "approval.db")}
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip(), "an example should show what it does"


def test_quickstart_prints_every_checkpoint(tmp_path: Path) -> None:
    script = Path(__file__).parent.parent / "examples" / "quickstart.py"
    url = f"sqlite:///{tmp_path / 'q.db'}"
    proc = subprocess.run(
        [sys.executable, str(script), url], capture_output=True, text=True, timeout=120, env=ENV
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.strip().startswith("step")]
    # the input checkpoint, step 0 with the input applied, then one per node
    assert [line.split()[1] for line in lines] == ["3", "2", "1", "0", "-1"]
    assert "reviewed: looks good" in proc.stdout

"""bench/server.py keeps working: its graph builds in both libraries, and the script skips what
cannot run instead of crashing (it must still give the langgraph dev baseline)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "server.py"
sys.path.insert(0, str(ROOT / "bench"))

import server_graph  # noqa: E402


@pytest.mark.parametrize("library", server_graph.LIBRARIES)
def test_graph_builds_and_runs_in_each_library(library: str) -> None:
    if importlib.util.find_spec(library) is None:
        pytest.skip(f"{library} is not installed (pip install -e '.[bench]')")
    graph = server_graph.build(library)
    assert graph.invoke({"count": 0}) == {"count": 2, "last": "second"}


def test_graph_refuses_an_unknown_library() -> None:
    with pytest.raises(ValueError, match="library must be one of"):
        server_graph.build("langchain")


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
    )


def test_threadline_targets_without_a_server_are_skipped_with_the_reason(tmp_path: Path) -> None:
    # A threadline without the server package, found before the installed one.
    (tmp_path / "threadline").mkdir()
    (tmp_path / "threadline" / "__init__.py").write_text("")
    out = run_script("--quick", "--only", "sqlite,postgres2", "--threadline-src", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("skipped:") == 2
    assert f"{tmp_path} has no threadline.server" in out.stdout
    assert "no target ran" in out.stdout


def test_unknown_target_is_a_usage_error() -> None:
    out = run_script("--only", "redis")
    assert out.returncode == 2
    assert "unknown target(s) ['redis']" in out.stderr


def test_langgraph_dev_baseline_prints_its_rows() -> None:
    if importlib.util.find_spec("langgraph_api") is None:
        pytest.skip("langgraph-cli[inmem] is not installed (pip install -e '.[bench]')")
    out = run_script(
        *("--only", "langgraph", "--clients", "2", "--runs-per-client", "2"),
        *("--warmup", "1", "--stream-runs", "2"),
    )
    assert out.returncode == 0, out.stderr
    assert "runs.wait, 2 clients x 2 runs" in out.stdout
    assert "failed" not in out.stdout
    rows = [line for line in out.stdout.splitlines() if line.startswith("langgraph dev (memory) ")]
    assert len(rows) == 2  # the runs.wait row and the runs.stream row

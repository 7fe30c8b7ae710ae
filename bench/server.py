"""Server benchmark: ``threadline serve`` beside ``langgraph dev``, same graph, same client load.

Targets (``--only``, comma-separated):

- ``langgraph``: ``langgraph dev`` (in memory, one process, ``--no-reload``), the baseline;
- ``sqlite``: ``threadline serve`` on a SQLite file, one replica;
- ``postgres``: ``threadline serve`` on PostgreSQL, one replica;
- ``postgres2``: two ``threadline serve`` replicas on one PostgreSQL database, each its own
  process on its own port; every client spreads its calls over them round-robin.

Each PostgreSQL target gets a fresh database, dropped afterwards. The graph is the 2-node graph
of bench/server_graph.py. The load is the official ``langgraph_sdk`` async client: for 10 and
50 concurrent clients (``--clients``), each on its own thread with its own event loop and its own
thread on the server, a few warm-up ``runs.wait`` calls, then a fixed number of measured ones.
Printed: runs/s over the measured phase, p50/p95/p99 latency of ``runs.wait``, the CPU time of
the server processes per run (and of the PostgreSQL backends serving the bench database, and of
the client process, so that a saturated client shows), and the median time to the first event
of ``runs.stream`` over sequential runs. Ratios are threadline / langgraph.

Run: `.venv/bin/python bench/server.py [--quick] [--only langgraph,sqlite,postgres,postgres2]`.
``threadline serve`` is started as ``python -m threadline.server serve`` with this checkout's
``src`` on ``PYTHONPATH`` (``--threadline-src`` to use another); a threadline target that cannot
start is skipped with the reason, and the rest still runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
PG_URL = os.environ.get("THREADLINE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
TARGETS = ("langgraph", "sqlite", "postgres", "postgres2")
LABELS = {
    "langgraph": "langgraph dev (memory)",
    "sqlite": "threadline sqlite x1",
    "postgres": "threadline postgres x1",
    "postgres2": "threadline postgres x2",
}
ASSISTANT = "bench"  # the graph's name in langgraph.json; both servers accept it as assistant id
LISTENING = re.compile(r"listening on (http://\S+)")
START_TIMEOUT = 60.0
QUIET_ENV = {
    # langgraph dev: no analytics or tracing calls leave the machine during the benchmark.
    "LANGGRAPH_CLI_NO_ANALYTICS": "1",
    "LANGSMITH_TRACING": "false",
    "LANGCHAIN_TRACING_V2": "false",
}


class Skip(Exception):
    """A target that cannot run here; the message says why."""


# --- processes and CPU --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _proc_cpu(pid: int) -> float:
    """utime + stime of one process in seconds, from /proc (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(c) for c in f.read().split())
    return out


def process_tree(pids: list[int]) -> list[int]:
    """The processes and all their descendants (uvicorn or a CLI may fork the real server)."""
    seen: list[int] = []
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.append(pid)
            todo.extend(_children(pid))
    return seen


def cpu_by_pid(pids: list[int]) -> dict[int, float]:
    """CPU seconds per process: psutil when installed, else /proc/<pid>/stat."""
    try:
        import psutil
    except ImportError:
        return {pid: _proc_cpu(pid) for pid in pids}
    out = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            out[pid] = t.user + t.system
    return out


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU spent between two samples by the processes alive at the second one."""
    return sum(max(0.0, t - before.get(pid, 0.0)) for pid, t in after.items())


def client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Server:
    """One server process, its log file and the URL it serves on."""

    proc: subprocess.Popen[bytes]
    log: Path
    url: str = ""

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join("    " + line for line in text[-lines:])

    def stop(self) -> None:
        """SIGTERM (a graceful shutdown), then SIGKILL if it has not exited within 15 s."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def spawn(cmd: list[str], cwd: Path, log: Path, env: dict[str, str]) -> Server:
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # its own process group: stop() reaches its children too
        )
    return Server(proc, log)


def wait_ready(server: Server, url: str | None, what: str) -> None:
    """Wait for the URL (or, with ``url=None``, the "listening on" line) and a 200 from /ok."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise Skip(f"{what} exited with code {server.proc.returncode}:\n{server.tail()}")
        if url is None:
            found = LISTENING.search(server.log.read_text(errors="replace"))
            if found is None:
                time.sleep(0.1)
                continue
            url = found.group(1)
        try:
            with urllib.request.urlopen(f"{url}/ok", timeout=2) as response:
                if response.status == 200:
                    server.url = url
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    server.stop()
    raise Skip(f"{what} did not answer /ok within {START_TIMEOUT:.0f} s:\n{server.tail()}")


def graph_module(folder: Path, library: str) -> None:
    """Write graph.py, which builds bench/server_graph.py's graph with ``library``."""
    (folder / "graph.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(BENCH_DIR)!r})\n"
        "from server_graph import build\n"
        f"graph = build({library!r})\n"
    )


def start_langgraph(folder: Path, jobs: int | None) -> Server:
    graph_module(folder, "langgraph")
    config = {"graphs": {ASSISTANT: "./graph.py:graph"}, "dependencies": ["."]}
    (folder / "langgraph.json").write_text(json.dumps(config))
    exe = Path(sys.executable).with_name("langgraph")
    if not exe.exists():
        raise Skip(f"{exe} not found (pip install -e '.[bench]' installs langgraph-cli[inmem])")
    port = free_port()  # langgraph dev has no port 0; a race with another process is unlikely
    cmd = [str(exe), "dev", "--no-browser", "--no-reload", "--port", str(port)]
    cmd += ["--config", str(folder / "langgraph.json"), "--server-log-level", "WARNING"]
    if jobs is not None:
        cmd += ["--n-jobs-per-worker", str(jobs)]
    server = spawn(cmd, folder, folder / "langgraph.log", {**os.environ, **QUIET_ENV})
    wait_ready(server, f"http://127.0.0.1:{port}", "langgraph dev")
    return server


def threadline_env(src: Path) -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    pythonpath = f"{src}{os.pathsep}{path}" if path else str(src)
    return {**os.environ, **QUIET_ENV, "PYTHONPATH": pythonpath}


def threadline_missing(src: Path) -> str | None:
    """Why ``python -m threadline.server`` cannot run from ``src``, or None if it can."""
    probe = "import importlib.util as u; print(u.find_spec('threadline.server') is not None)"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env=threadline_env(src),
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        return f"importing threadline from {src} failed: {out.stderr.strip()[-300:]}"
    if out.stdout.strip() != "True":
        return f"{src} has no threadline.server (pass --threadline-src to a checkout that has it)"
    return None


def start_threadline(folder: Path, src: Path, database_url: str, workers: int | None) -> Server:
    graph_module(folder, "threadline")
    (folder / "langgraph.json").write_text(json.dumps({"graphs": {ASSISTANT: "./graph.py:graph"}}))
    cmd = [sys.executable, "-m", "threadline.server", "serve", "--config"]
    cmd += [str(folder / "langgraph.json"), "--host", "127.0.0.1", "--port", "0"]
    cmd += ["--database-url", database_url]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    log = folder / f"threadline-{uuid.uuid4().hex[:6]}.log"
    server = spawn(cmd, folder, log, threadline_env(src))
    wait_ready(server, None, "threadline serve")
    return server


@contextlib.contextmanager
def fresh_database() -> Iterator[tuple[str, str]]:
    """A new PostgreSQL database (its URL and name), dropped afterwards."""
    try:
        import psycopg
    except ImportError:
        raise Skip("psycopg is not installed (pip install -e '.[bench]')") from None
    name = f"bench_server_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as e:
        raise Skip(f"PostgreSQL at {PG_URL} is not usable: {e}") from None
    parts = urllib.parse.urlsplit(PG_URL)
    try:
        yield urllib.parse.urlunsplit(parts._replace(path=f"/{name}")), name
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def backend_pids(database: str | None) -> list[int]:
    """The PostgreSQL backends connected to the bench database (same machine only)."""
    if database is None:
        return []
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (database,)
        ).fetchall()
    return [int(r[0]) for r in rows]


# --- the client load ----------------------------------------------------------------------------


@dataclass
class Load:
    """What the client threads record; one instance per measured phase."""

    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def error(self, e: BaseException) -> None:
        with self.lock:
            self.errors.append(f"{type(e).__name__}: {e}"[:300])


async def one_client(
    index: int, urls: list[str], warmup: int, runs: int, gates: threading.Barrier, load: Load
) -> None:
    from langgraph_sdk import get_client

    clients = [get_client(url=url, api_key=None) for url in urls]
    thread_id = ""
    done = 0

    async def run_once(call: int) -> None:
        nonlocal done
        client = clients[(index + call) % len(clients)]  # round-robin over the replicas
        result = await client.runs.wait(thread_id, ASSISTANT, input={"count": 0})
        done += 1
        if not isinstance(result, dict) or result.get("count") != 2 * done:
            raise RuntimeError(f"unexpected state after run {done}: {result!r}")

    measured: list[float] = []
    try:
        thread = await clients[index % len(clients)].threads.create()
        thread_id = thread["thread_id"]
        for call in range(warmup):
            await run_once(call)
    except Exception as e:
        load.error(e)
        runs = 0  # still meet the others at both gates, so the phase ends cleanly
    gates.wait()  # everyone warmed up; the main thread samples CPU and the clock
    gates.wait()  # go
    for call in range(warmup, warmup + runs):
        start = time.perf_counter()
        try:
            await run_once(call)
        except Exception as e:
            load.error(e)
            break
        measured.append(time.perf_counter() - start)
    with load.lock:
        load.latencies.extend(measured)
    for client in clients:
        await client.aclose()


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def wait_load(
    urls: list[str], pids: list[int], database: str | None, clients: int, warmup: int, runs: int
) -> dict[str, Any]:
    """``clients`` threads, each ``warmup`` then ``runs`` calls of runs.wait on its own thread."""
    load = Load()
    gates = threading.Barrier(clients + 1, timeout=600)
    threads = [
        threading.Thread(
            target=lambda i=i: asyncio.run(one_client(i, urls, warmup, runs, gates, load)),
            name=f"client-{i}",
        )
        for i in range(clients)
    ]
    for t in threads:
        t.start()
    gates.wait()
    server_before = cpu_by_pid(process_tree(pids))
    db_before = cpu_by_pid(backend_pids(database))
    client_before = client_cpu()
    start = time.perf_counter()
    gates.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    client_spent = client_cpu() - client_before
    server_spent = cpu_delta(server_before, cpu_by_pid(process_tree(pids)))
    db_spent = cpu_delta(db_before, cpu_by_pid(backend_pids(database)))
    n = len(load.latencies)
    if n == 0:
        first = load.errors[0] if load.errors else "?"
        raise RuntimeError(f"no run completed; first error: {first}")
    return {
        "runs": n,
        "errors": len(load.errors),
        "first_error": load.errors[0] if load.errors else "",
        "runs_per_s": n / elapsed,
        "p50_ms": percentile(load.latencies, 0.50) * 1e3,
        "p95_ms": percentile(load.latencies, 0.95) * 1e3,
        "p99_ms": percentile(load.latencies, 0.99) * 1e3,
        "cpu_ms_per_run": server_spent / n * 1e3,
        "db_cpu_ms_per_run": db_spent / n * 1e3 if database else None,
        "client_cpu_ms_per_run": client_spent / n * 1e3,
    }


async def first_events(urls: list[str], count: int, warmup: int) -> dict[str, float]:
    """Sequential runs.stream calls, each on a new thread: median time to first event and to end."""
    from langgraph_sdk import get_client

    clients = [get_client(url=url, api_key=None) for url in urls]
    first: list[float] = []
    whole: list[float] = []
    for i in range(warmup + count):
        client = clients[i % len(clients)]
        thread = await client.threads.create()
        start = time.perf_counter()
        first_at = None
        async for _part in client.runs.stream(
            thread["thread_id"], ASSISTANT, input={"count": 0}, stream_mode="values"
        ):
            if first_at is None:
                first_at = time.perf_counter()
        end = time.perf_counter()
        if first_at is None:
            raise RuntimeError("runs.stream ended without any event")
        if i >= warmup:
            first.append(first_at - start)
            whole.append(end - start)
    for client in clients:
        await client.aclose()
    return {
        "first_event_ms": statistics.median(first) * 1e3,
        "stream_done_ms": statistics.median(whole) * 1e3,
    }


# --- targets ------------------------------------------------------------------------------------


def measure_servers(
    servers: list[Server], database: str | None, args: argparse.Namespace
) -> dict[str, Any]:
    urls = [s.url for s in servers]
    pids = [s.proc.pid for s in servers]
    result: dict[str, Any] = {"urls": urls}
    for clients in args.client_counts:
        result[f"wait_{clients}"] = wait_load(
            urls, pids, database, clients, args.warmup, args.runs_per_client
        )
    result.update(asyncio.run(first_events(urls, args.stream_runs, args.warmup)))
    return result


def run_target(target: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"bench-server-{target}-") as tmp:
        folder = Path(tmp)
        servers: list[Server] = []
        try:
            if target == "langgraph":
                servers.append(start_langgraph(folder, args.langgraph_jobs))
                return measure_servers(servers, None, args)
            reason = threadline_missing(args.threadline_src)
            if reason:
                raise Skip(reason)
            if target == "sqlite":
                url = f"sqlite:///{folder / 'threadline.db'}"  # absolute path: four slashes
                servers.append(start_threadline(folder, args.threadline_src, url, args.workers))
                return measure_servers(servers, None, args)
            replicas = 2 if target == "postgres2" else 1
            with fresh_database() as (url, name):
                try:
                    for _ in range(replicas):
                        servers.append(
                            start_threadline(folder, args.threadline_src, url, args.workers)
                        )
                    return measure_servers(servers, name, args)
                finally:  # the replicas must be gone before the database can be dropped
                    for server in servers:
                        server.stop()
        finally:
            for server in servers:
                server.stop()


# --- the table ----------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def ratio(tl: float | None, lg: float | None) -> str:
    if tl is None or lg is None or lg == 0:
        return ""
    return f"{tl / lg:.2f}x"


WAIT_COLUMNS = (
    ("runs_per_s", "runs/s", 1),
    ("p50_ms", "p50 ms", 1),
    ("p95_ms", "p95 ms", 1),
    ("p99_ms", "p99 ms", 1),
    ("cpu_ms_per_run", "srv CPU", 2),
    ("db_cpu_ms_per_run", "db CPU", 2),
    ("client_cpu_ms_per_run", "client CPU", 2),
)


def print_table(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    base = results.get("langgraph")
    for clients in args.client_counts:
        key = f"wait_{clients}"
        print(
            f"\nruns.wait, {clients} clients x {args.runs_per_client} runs"
            f" (after {args.warmup} warm-up runs each)"
        )
        header = f"{'target':<26}" + "".join(f"{label:>11}" for _, label, _ in WAIT_COLUMNS)
        print(header)
        print("-" * len(header))
        for target, row in results.items():
            w = row[key]
            print(
                f"{LABELS[target]:<26}" + "".join(f"{fmt(w[c], d):>11}" for c, _, d in WAIT_COLUMNS)
            )
            if base is not None and target != "langgraph":
                b = base[key]
                print(
                    f"{'  / langgraph':<26}"
                    + "".join(f"{ratio(w[c], b[c]):>11}" for c, _, _ in WAIT_COLUMNS)
                )
            if w["errors"]:
                print(f"  {w['errors']} failed calls; first: {w['first_error']}")
    print(f"\nruns.stream, median over {args.stream_runs} sequential runs, each on a new thread")
    header = f"{'target':<26}{'first event ms':>18}{'stream done ms':>18}"
    print(header)
    print("-" * len(header))
    for target, row in results.items():
        print(f"{LABELS[target]:<26}{row['first_event_ms']:>18.1f}{row['stream_done_ms']:>18.1f}")
        if base is not None and target != "langgraph":
            print(
                f"{'  / langgraph':<26}{ratio(row['first_event_ms'], base['first_event_ms']):>18}"
                f"{ratio(row['stream_done_ms'], base['stream_done_ms']):>18}"
            )
    print(
        "\nratio = threadline / langgraph dev: above 1 is better for runs/s, below 1 is better"
        " for latency and CPU.\nCPU in ms per run. srv: the server processes and their children;"
        " db: the PostgreSQL backends\nof the bench database; client: this process (all clients)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (fewer runs per client)")
    parser.add_argument("--only", default=",".join(TARGETS), help=f"targets among {TARGETS}")
    parser.add_argument("--clients", default="10,50", help="concurrent clients, comma-separated")
    parser.add_argument("--runs-per-client", type=int, help="measured runs.wait per client")
    parser.add_argument("--warmup", type=int, help="warm-up runs per client (and stream runs)")
    parser.add_argument("--stream-runs", type=int, help="runs.stream calls for the first event")
    parser.add_argument("--workers", type=int, help="threadline serve --workers (its default)")
    parser.add_argument(
        "--langgraph-jobs",
        type=int,
        help="langgraph dev --n-jobs-per-worker (default: its own, 1 run at a time)",
    )
    parser.add_argument(
        "--threadline-src",
        type=Path,
        default=ROOT / "src",
        help="the src folder threadline serve runs from (default: this checkout's)",
    )
    args = parser.parse_args()
    args.runs_per_client = args.runs_per_client or (10 if args.quick else 40)
    args.warmup = args.warmup if args.warmup is not None else (2 if args.quick else 5)
    args.stream_runs = args.stream_runs or (20 if args.quick else 100)
    args.client_counts = [int(c) for c in args.clients.split(",") if c]
    targets = [t for t in args.only.split(",") if t]
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        parser.error(f"unknown target(s) {unknown}; choose among {', '.join(TARGETS)}")
    results: dict[str, dict[str, Any]] = {}
    for target in targets:
        print(f"{LABELS[target]}: running...", flush=True)
        try:
            results[target] = run_target(target, args)
        except Skip as e:
            print(f"{LABELS[target]}: skipped: {e}", flush=True)
        except Exception as e:  # one broken target must not cost the others' figures
            print(f"{LABELS[target]}: failed: {type(e).__name__}: {e}", flush=True)
    if results:
        print_table(results, args)
    else:
        print("no target ran")


if __name__ == "__main__":
    main()

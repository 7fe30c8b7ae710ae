"""Engine overhead per step, and per-turn cost as a conversation grows, beside LangGraph.

Run: `make bench` or `.venv/bin/python bench/engine.py [--quick]` (LangGraph comes with the
bench extra: `pip install -e '.[bench]'`). Prints medians of several repetitions and ratios.

Each library is measured in its own fresh interpreter (a `--worker` subprocess that prints JSON):
importing LangGraph leaves ~90k objects for the garbage collector, so a shared process would make
every full collection cost ~60 ms to whichever library happened to be running.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import operator
import random
import shlex
import statistics
import string
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Annotated, Any, TypedDict


class ChainState(TypedDict):
    count: Annotated[int, operator.add]


class ChatState(TypedDict):
    messages: Annotated[list[dict[str, str]], operator.add]


def text(n: int, rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_letters + " ", k=n))


NO_LANGGRAPH = "langgraph is not installed (pip install -e '.[bench]'): threadline figures only\n"


def libraries(only: str | None = None) -> dict[str, dict[str, Any]]:
    """The graph API of each library; ``only`` names one, so that the other is never imported."""
    libs: dict[str, dict[str, Any]] = {}
    if only in (None, "threadline"):
        from threadline.checkpoint.memory import MemorySaver
        from threadline.graph import END, START, StateGraph

        libs["threadline"] = {
            "StateGraph": StateGraph,
            "START": START,
            "END": END,
            "memory": MemorySaver,
        }
    if only in (None, "langgraph"):
        try:
            from langgraph.checkpoint.memory import InMemorySaver
            from langgraph.graph import END as LG_END
            from langgraph.graph import START as LG_START
            from langgraph.graph import StateGraph as LGStateGraph
        except ImportError:
            if only:
                raise
            print(NO_LANGGRAPH)
        else:
            libs["langgraph"] = {
                "StateGraph": LGStateGraph,
                "START": LG_START,
                "END": LG_END,
                "memory": InMemorySaver,
            }
    return libs


def library_names() -> list[str]:
    """The libraries to measure, found without importing them (the workers import them)."""
    if importlib.util.find_spec("langgraph") is None:
        print(NO_LANGGRAPH)
        return ["threadline"]
    return ["threadline", "langgraph"]


def run_worker(script: str, *args: str) -> dict[str, float]:
    """Run ``script --worker *args`` in a fresh interpreter; return the JSON line it prints last.

    The worker's stderr passes through; a failing worker ends the benchmark with its command line.
    """
    cmd = [sys.executable, script, "--worker", *args]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark worker failed (exit {proc.returncode}): {shlex.join(cmd)}")
    *other, last = proc.stdout.splitlines() or [""]
    for line in other:  # anything else the worker printed
        print(line)
    try:
        result: dict[str, float] = json.loads(last)
    except ValueError:
        raise SystemExit(f"benchmark worker printed no JSON result: {shlex.join(cmd)}") from None
    return result


def chain_graph(lib: dict[str, Any], length: int, checkpointer: Any) -> Any:
    builder = lib["StateGraph"](ChainState)

    def make(i: int) -> Callable[[ChainState], dict[str, int]]:
        def node(state: ChainState) -> dict[str, int]:
            return {"count": 1}

        node.__name__ = f"n{i}"
        return node

    names = [f"n{i}" for i in range(length)]
    for i, name in enumerate(names):
        builder.add_node(name, make(i))
    builder.add_edge(lib["START"], names[0])
    for a, b in itertools.pairwise(names):
        builder.add_edge(a, b)
    builder.add_edge(names[-1], lib["END"])
    return builder.compile(checkpointer=checkpointer)


def per_step_us(lib: dict[str, Any], with_saver: bool, runs: int, length: int = 20) -> float:
    """Median microseconds per superstep of a chain of trivial nodes."""
    samples = []
    for r in range(runs):
        saver = lib["memory"]() if with_saver else None
        app = chain_graph(lib, length, saver)
        invocations = 20
        start = time.perf_counter()
        for i in range(invocations):
            config = {"configurable": {"thread_id": f"t{r}-{i}"}} if with_saver else {}
            app.invoke({"count": 0}, config)
        samples.append((time.perf_counter() - start) / (invocations * length) * 1e6)
    return statistics.median(samples)


def chat_graph(lib: dict[str, Any], checkpointer: Any, rng: random.Random) -> Any:
    builder = lib["StateGraph"](ChatState)
    # Random 1 KB texts, made up front so the nodes cost the same tiny time in both libraries.
    texts = [text(1024, rng) for _ in range(256)]

    def assistant(state: ChatState) -> dict[str, list[dict[str, str]]]:
        return {"messages": [{"role": "assistant", "content": rng.choice(texts)}]}

    def critic(state: ChatState) -> dict[str, list[dict[str, str]]]:
        return {"messages": [{"role": "critic", "content": rng.choice(texts)}]}

    builder.add_node("assistant", assistant)
    builder.add_node("critic", critic)
    builder.add_edge(lib["START"], "assistant")
    builder.add_edge("assistant", "critic")
    builder.add_edge("critic", lib["END"])
    return builder.compile(checkpointer=checkpointer)


def async_chat_graph(lib: dict[str, Any], checkpointer: Any, rng: random.Random) -> Any:
    """The chat graph with async nodes, as an async server would write it."""
    builder = lib["StateGraph"](ChatState)
    texts = [text(1024, rng) for _ in range(256)]

    async def assistant(state: ChatState) -> dict[str, list[dict[str, str]]]:
        return {"messages": [{"role": "assistant", "content": rng.choice(texts)}]}

    async def critic(state: ChatState) -> dict[str, list[dict[str, str]]]:
        return {"messages": [{"role": "critic", "content": rng.choice(texts)}]}

    builder.add_node("assistant", assistant)
    builder.add_node("critic", critic)
    builder.add_edge(lib["START"], "assistant")
    builder.add_edge("assistant", "critic")
    builder.add_edge("critic", lib["END"])
    return builder.compile(checkpointer=checkpointer)


def conversation_ms(lib: dict[str, Any], turns: int) -> tuple[float, float]:
    """Median ms per turn over turns 1-10 and over the last 10 turns of one long thread."""
    rng = random.Random(7)
    app = chat_graph(lib, lib["memory"](), rng)
    config = {"configurable": {"thread_id": "long"}}
    times = []
    for _ in range(turns):
        message = {"role": "user", "content": text(1024, rng)}
        start = time.perf_counter()
        app.invoke({"messages": [message]}, config)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times[:10]), statistics.median(times[-10:])


def measure(lib: dict[str, Any], turns: int, runs: int) -> dict[str, float]:
    first, last = conversation_ms(lib, turns)
    return {
        "step_us_no_saver": per_step_us(lib, False, runs),
        "step_us_memory": per_step_us(lib, True, runs),
        "turn_first_ms": first,
        "turn_last_ms": last,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--worker", choices=["threadline", "langgraph"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    runs = 3 if args.quick else 7
    if args.worker:
        lib = libraries(only=args.worker)[args.worker]
        print(json.dumps(measure(lib, args.turns, runs)))
        return
    options = ["--turns", str(args.turns)] + (["--quick"] if args.quick else [])
    rows = {name: run_worker(__file__, name, *options) for name in library_names()}
    labels = {
        "step_us_no_saver": "engine overhead per step, no checkpointer (us)",
        "step_us_memory": "engine overhead per step, memory saver (us)",
        "turn_first_ms": "conversation turns 1-10, median per turn (ms)",
        "turn_last_ms": f"conversation turns {args.turns - 9}-{args.turns}, median per turn (ms)",
    }
    names = list(rows)
    header = f"{'measure':<56}" + "".join(f"{n:>12}" for n in names)
    if "langgraph" in rows:
        header += f"{'ratio':>10}"
    print(header)
    print("-" * len(header))
    for key, label in labels.items():
        line = f"{label:<56}" + "".join(f"{rows[n][key]:>12.3f}" for n in names)
        if "langgraph" in rows:
            line += f"{rows['langgraph'][key] / rows['threadline'][key]:>9.1f}x"
        print(line)
    for name in names:
        growth = rows[name]["turn_last_ms"] / rows[name]["turn_first_ms"]
        print(f"{name}: turn {args.turns} costs {growth:.2f}x turn 1")
    if "langgraph" in rows:
        print("ratio = langgraph / threadline (higher is better for threadline)")


if __name__ == "__main__":
    main()

"""Storage benchmark: a 300-turn conversation on memory, SQLite and PostgreSQL, beside LangGraph.

Each turn appends a 1 KB user message and runs 2 nodes that each append a 1 KB message of
random text (900 messages, about 0.9 MB of payload): as dicts in ``Annotated[list,
operator.add]`` (workload "chat"), and as langchain-core messages in ``MessagesState`` through
``add_messages``, with nodes that read the conversation (workload "messages"). For each
backend and library it prints the median per-turn time over turns 1-10 and 291-300, bytes
stored after the last turn, the time to read the full history, the median time of get_state,
and the ratios. Then 50 threads at once on the async Postgres saver with a pool (async nodes),
20 turns each from a new thread: steps (checkpoints) per second, over the whole run (the
threads' creation included).

With `--long N` (off by default: building the thread dominates the run), one more table: a
thread of N checkpoints (N/2 turns of a one-node graph appending a 45-byte message, so the
messages list grows to N items) on memory and SQLite, then in a fresh process the time and the
tracemalloc peak of get_state and of get_state_history(limit=10). LangGraph stores every
checkpoint's whole list (quadratic storage: 20,000 checkpoints would be ~20 GB), so it is
measured at `--long-langgraph` checkpoints (default 2,000), and the row says so.

Run: `make bench`, or `.venv/bin/python bench/storage.py [--turns N] [--only memory,sqlite]
[--workloads chat,messages]`;
`--encrypt` has both libraries encrypt every stored value with AES-256-GCM.
PostgreSQL: THREADLINE_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test).

Each measurement runs in a fresh interpreter that imports only one library (a `--worker`
subprocess that sets up and tears down its own saver and prints JSON): importing LangGraph leaves
~90k objects for the garbage collector, so in a shared process a full collection during a timed
read would cost threadline ~60 ms that its users never pay.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import random
import statistics
import string
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import engine  # the graphs are the same as in bench/engine.py

PG_URL = os.environ.get("THREADLINE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
MSG = 1024
KINDS = ("memory", "sqlite", "postgres", "postgres-nosync")
# --encrypt: both libraries encrypt every stored value with AES-256-GCM (one fixed bench key).
ENCRYPT = False
BENCH_KEY = bytes(range(32))


def threadline_options() -> dict[str, Any]:
    if not ENCRYPT:
        return {}
    from threadline.checkpoint.serde import MsgpackSerializer

    return {"serde": MsgpackSerializer(encryption_key=BENCH_KEY)}


def langgraph_serde() -> Any:
    """LangGraph's EncryptedSerializer over AES-256-GCM from ``cryptography`` (its built-in
    helper needs pycryptodome), or None when not encrypting."""
    if not ENCRYPT:
        return None
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from langgraph.checkpoint.serde.encrypted import EncryptedSerializer

    aead = AESGCM(BENCH_KEY)

    class Cipher:
        def encrypt(self, plaintext: bytes) -> tuple[str, bytes]:
            nonce = os.urandom(12)
            return "aesgcm", nonce + aead.encrypt(nonce, plaintext, None)

        def decrypt(self, ciphername: str, ciphertext: bytes) -> bytes:
            return aead.decrypt(ciphertext[:12], ciphertext[12:], None)

    return EncryptedSerializer(Cipher())


def _lg_encrypt(saver: Any) -> Any:
    serde = langgraph_serde()
    if serde is not None:
        saver.serde = serde
    return saver


def text(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_letters + " ", k=MSG))


# ---------------------------------------------------------------------- backends per library


@contextlib.contextmanager
def threadline_saver(kind: str, workdir: str) -> Iterator[tuple[Any, Callable[[], int]]]:
    from threadline.checkpoint.memory import MemorySaver

    if kind == "memory":
        saver = MemorySaver(**threadline_options())
        yield saver, saver.stored_bytes
        return
    if kind == "sqlite":
        from threadline.checkpoint.sqlite import SqliteSaver

        path = os.path.join(workdir, "threadline.db")
        with SqliteSaver.from_conn_string(path, **threadline_options()) as saver:
            yield saver, lambda: sqlite_bytes(path)
        return
    from threadline.checkpoint.postgres import PostgresSaver

    schema = f"bench_tl_{uuid.uuid4().hex[:8]}"
    sync = "off" if kind == "postgres-nosync" else None
    try:
        with PostgresSaver.from_conn_string(
            PG_URL, schema=schema, synchronous_commit=sync, **threadline_options()
        ) as saver:
            yield saver, lambda: pg_bytes(schema)
    finally:
        drop_schema(schema)


@contextlib.contextmanager
def langgraph_saver(kind: str, workdir: str) -> Iterator[tuple[Any, Callable[[], int]]]:
    if kind == "memory":
        from langgraph.checkpoint.memory import InMemorySaver

        saver = _lg_encrypt(InMemorySaver())
        yield saver, lambda: langgraph_memory_bytes(saver)
        return
    if kind == "sqlite":
        from langgraph.checkpoint.sqlite import SqliteSaver

        path = os.path.join(workdir, "langgraph.db")
        with SqliteSaver.from_conn_string(path) as saver:
            saver.setup()
            yield _lg_encrypt(saver), lambda: sqlite_bytes(path)
        return
    from langgraph.checkpoint.postgres import PostgresSaver

    schema = f"bench_lg_{uuid.uuid4().hex[:8]}"
    create_schema(schema)
    url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    if kind == "postgres-nosync":
        url += "%20-csynchronous_commit%3Doff"
    try:
        with PostgresSaver.from_conn_string(url) as saver:
            saver.setup()
            yield _lg_encrypt(saver), lambda: pg_bytes(schema)
    finally:
        drop_schema(schema)


def sqlite_bytes(path: str) -> int:
    import sqlite3

    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))


def pg_bytes(schema: str) -> int:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind = 'r'",
            (schema,),
        ).fetchone()
    return int(row[0]) if row else 0


def create_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')


def drop_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def langgraph_memory_bytes(saver: Any) -> int:
    """Bytes LangGraph's InMemorySaver holds in serialized form (checkpoints, blobs, writes)."""

    def size(obj: Any) -> int:
        if isinstance(obj, (bytes, bytearray)):
            return len(obj)
        if isinstance(obj, dict):
            return sum(size(v) for v in obj.values())
        if isinstance(obj, (list, tuple)):
            return sum(size(v) for v in obj)
        return 0

    return size(saver.storage) + size(saver.writes) + size(saver.blobs)


# ---------------------------------------------------------------------- the workload


def messages_graph(name: str, lib: dict[str, Any], saver: Any, rng: random.Random) -> Any:
    """The chat graph on ``MessagesState``: langchain-core messages merged by ``add_messages``.

    Each node reads the conversation (as a chatbot passes it to its model) and appends an
    ``AIMessage``; the user's message comes in as a ``{"role", "content"}`` dict.
    """
    import importlib

    from langchain_core.messages import AIMessage

    messages_state = importlib.import_module(f"{name}.graph").MessagesState
    builder = lib["StateGraph"](messages_state)
    texts = [text(rng) for _ in range(256)]

    def assistant(state: Any) -> dict[str, Any]:
        assert state["messages"][-1].type == "human"
        return {"messages": [AIMessage(rng.choice(texts))]}

    def critic(state: Any) -> dict[str, Any]:
        assert len(state["messages"]) % 3 == 2
        return {"messages": [AIMessage(rng.choice(texts), name="critic")]}

    builder.add_node("assistant", assistant)
    builder.add_node("critic", critic)
    builder.add_edge(lib["START"], "assistant")
    builder.add_edge("assistant", "critic")
    builder.add_edge("critic", lib["END"])
    return builder.compile(checkpointer=saver)


WORKLOADS = ("chat", "messages")


def conversation(
    lib: dict[str, Any], saver: Any, turns: int, workload: str = "chat", name: str = ""
) -> dict[str, float]:
    rng = random.Random(7)
    if workload == "messages":
        app = messages_graph(name, lib, saver, rng)
    else:
        app = engine.chat_graph(lib, saver, rng)
    config = {"configurable": {"thread_id": "bench"}}
    times = []
    for _ in range(turns):
        message = {"role": "user", "content": text(rng)}
        start = time.perf_counter()
        app.invoke({"messages": [message]}, config)
        times.append((time.perf_counter() - start) * 1e3)
    # Collect the 300 turns' garbage first, as timeit does for its timings: otherwise a full
    # collection owed to them may fall inside the read (~20-30 ms here, for either library).
    gc.collect()
    start = time.perf_counter()
    history = list(app.get_state_history(config))
    history_ms = (time.perf_counter() - start) * 1e3
    get_times = []
    for _ in range(20):
        start = time.perf_counter()
        state = app.get_state(config)
        get_times.append((time.perf_counter() - start) * 1e3)
    assert len(state.values["messages"]) == 3 * turns
    return {
        "first_ms": statistics.median(times[:10]),
        "last_ms": statistics.median(times[-10:]),
        "history_ms": history_ms,
        "get_state_ms": statistics.median(get_times),
        "checkpoints": float(len(history)),
    }


async def concurrent_steps(lib_name: str, threads: int, turns: int, sync: str | None) -> float:
    """Checkpoints per second with ``threads`` threads running at once through one pool."""
    rng = random.Random(11)
    lib = engine.libraries(only=lib_name)[lib_name]
    schema = f"bench_cc_{uuid.uuid4().hex[:8]}"
    if lib_name == "threadline":
        from threadline.checkpoint.postgres.aio import AsyncPostgresSaver

        cm: Any = AsyncPostgresSaver.from_conn_string(
            PG_URL,
            schema=schema,
            pool_min_size=10,
            pool_max_size=20,
            synchronous_commit=sync,
            **threadline_options(),
        )
    else:
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver as LGAsync
        from psycopg.rows import dict_row
        from psycopg_pool import AsyncConnectionPool

        create_schema(schema)
        extra = "%20-csynchronous_commit%3Doff" if sync == "off" else ""
        pool = AsyncConnectionPool(
            f"{PG_URL}?options=-csearch_path%3D{schema}{extra}",
            min_size=10,
            max_size=20,
            kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
            open=False,
        )
        await pool.open()
        cm = contextlib.nullcontext(_lg_encrypt(LGAsync(pool)))  # type: ignore[arg-type]
    try:
        async with cm as saver:
            if lib_name == "threadline":
                await saver.asetup()
            else:
                await saver.setup()
            app = engine.async_chat_graph(lib, saver, rng)

            async def one(i: int) -> None:
                config = {"configurable": {"thread_id": f"t{i}"}}
                for _ in range(turns):
                    msg = {"role": "user", "content": "x" * MSG}
                    await app.ainvoke({"messages": [msg]}, config)

            start = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(threads)))
            elapsed = time.perf_counter() - start
    finally:
        if lib_name != "threadline":
            await pool.close()
        drop_schema(schema)
    return threads * turns * 3 / elapsed


def long_thread(lib: dict[str, Any], saver: Any, checkpoints: int) -> dict[str, float]:
    """Build a thread of ``checkpoints`` checkpoints, then time and trace its reads."""
    import tracemalloc

    builder = lib["StateGraph"](engine.ChatState)
    builder.add_node("echo", lambda state: {"messages": [{"role": "ai", "content": "echo"}]})
    builder.add_edge(lib["START"], "echo")
    builder.add_edge("echo", lib["END"])
    app = builder.compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "long"}}
    for k in range(checkpoints // 2):
        msg = {"role": "user", "content": f"turn {k:05d}: some user text of modest length"}
        app.invoke({"messages": [msg]}, config)

    def cold() -> None:
        """Forget what threadline caches (decoded values, heads): reads as a fresh process."""
        for attr in ("_cache", "_heads"):
            if hasattr(saver, attr):
                getattr(saver, attr).clear()
        gc.collect()

    out: dict[str, float] = {"checkpoints": float(checkpoints)}
    reads: dict[str, Callable[[], Any]] = {
        "get_state": lambda: app.get_state(config),
        "history10": lambda: list(app.get_state_history(config, limit=10)),
    }
    for name, read in reads.items():
        times = []
        for _ in range(3):
            cold()
            start = time.perf_counter()
            read()
            times.append((time.perf_counter() - start) * 1e3)
        out[f"{name}_ms"] = statistics.median(times)
        cold()
        tracemalloc.start()
        read()
        out[f"{name}_peak"] = float(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    return out


def long_worker(kind: str, name: str, checkpoints: int) -> dict[str, float]:
    factory = threadline_saver if name == "threadline" else langgraph_saver
    with tempfile.TemporaryDirectory() as workdir, factory(kind, workdir) as (saver, _):
        return long_thread(engine.libraries(only=name)[name], saver, checkpoints)


def conversation_worker(kind: str, name: str, turns: int, workload: str) -> dict[str, float]:
    factory = threadline_saver if name == "threadline" else langgraph_saver
    with tempfile.TemporaryDirectory() as workdir, factory(kind, workdir) as (saver, size):
        r = conversation(engine.libraries(only=name)[name], saver, turns, workload, name)
        r["bytes"] = float(size())
    return r


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--only", default=",".join(KINDS))
    parser.add_argument("--threads", type=int, default=50)
    parser.add_argument("--thread-turns", type=int, default=20)
    parser.add_argument(
        "--encrypt", action="store_true", help="both libraries encrypt stored values (AES-GCM)"
    )
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help="chat (dict messages, operator.add) and/or messages (MessagesState, langchain-core)",
    )
    parser.add_argument("--workload", choices=WORKLOADS, default="chat", help=argparse.SUPPRESS)
    # One measurement in this fresh process, printed as JSON: --worker conversation|concurrent
    # --kind KIND --library LIB (concurrent: --kind postgres or postgres-nosync).
    parser.add_argument("--long", type=int, default=0, help="checkpoints of the long thread")
    parser.add_argument("--long-langgraph", type=int, default=2000)
    parser.add_argument(
        "--worker", choices=["conversation", "concurrent", "long"], help=argparse.SUPPRESS
    )
    parser.add_argument("--kind", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--library", choices=["threadline", "langgraph"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    global ENCRYPT
    ENCRYPT = args.encrypt
    if args.worker == "conversation":
        print(json.dumps(conversation_worker(args.kind, args.library, args.turns, args.workload)))
        return
    if args.worker == "long":
        print(json.dumps(long_worker(args.kind, args.library, args.long)))
        return
    if args.worker == "concurrent":
        sync = "off" if args.kind == "postgres-nosync" else None
        rate = asyncio.run(concurrent_steps(args.library, args.threads, args.thread_turns, sync))
        print(json.dumps({"steps_per_s": rate}))
        return
    if unknown := set(args.only.split(",")) - set(KINDS):
        parser.error(f"--only: unknown backends {', '.join(sorted(unknown))}")
    if unknown := set(args.workloads.split(",")) - set(WORKLOADS):
        parser.error(f"--workloads: unknown workloads {', '.join(sorted(unknown))}")

    def worker(*options: str) -> dict[str, float]:
        return engine.run_worker(
            __file__,
            *options,
            *("--turns", str(args.turns), "--threads", str(args.threads)),
            *("--thread-turns", str(args.thread_turns)),
            *(["--encrypt"] if args.encrypt else []),
        )

    libs = engine.library_names()
    payload = 3 * args.turns * MSG
    titles = {
        "chat": "dict messages in Annotated[list, operator.add]",
        "messages": "MessagesState: langchain-core messages merged by add_messages",
    }
    for workload in args.workloads.split(","):
        print(f"workload ({workload}): {titles[workload]}")
        print(f"one thread, {args.turns} turns, {3 * args.turns} messages of {MSG} B")
        encrypted = ", every value encrypted" if args.encrypt else ""
        print(f"payload: {payload / 1e6:.2f} MB{encrypted}\n")
        header = (
            f"{'backend':<16}{'library':<12}{'turn 1-10':>11}{'last 10':>10}{'growth':>8}"
            f"{'stored':>11}{'x payload':>10}{'history':>11}{'get_state':>11}{'checkpoints':>13}"
        )
        print(header)
        print(
            f"{'':<28}{'ms/turn':>11}{'ms/turn':>10}{'':>8}{'MB':>11}{'':>10}{'ms':>11}{'ms':>11}"
        )
        print("-" * len(header))
        results: dict[tuple[str, str], dict[str, float]] = {}
        for kind in args.only.split(","):
            for name in libs:
                r = worker(
                    "conversation", "--kind", kind, "--library", name, "--workload", workload
                )
                results[(kind, name)] = r
                print(
                    f"{kind:<16}{name:<12}{r['first_ms']:>11.2f}{r['last_ms']:>10.2f}"
                    f"{r['last_ms'] / r['first_ms']:>7.2f}x{r['bytes'] / 1e6:>11.2f}"
                    f"{r['bytes'] / payload:>9.2f}x{r['history_ms']:>11.1f}"
                    f"{r['get_state_ms']:>11.3f}{int(r['checkpoints']):>13}",
                    flush=True,
                )
            if (kind, "langgraph") in results:
                t, lg = results[(kind, "threadline")], results[(kind, "langgraph")]
                print(
                    f"{'':<16}{'ratio':<12}{lg['first_ms'] / t['first_ms']:>10.1f}x"
                    f"{lg['last_ms'] / t['last_ms']:>9.1f}x{'':>8}"
                    f"{lg['bytes'] / t['bytes']:>10.1f}x"
                    f"{'':>10}{lg['history_ms'] / t['history_ms']:>10.1f}x"
                    f"{lg['get_state_ms'] / t['get_state_ms']:>10.1f}x"
                )
        print("ratio = langgraph / threadline (higher is better for threadline)\n")
    if args.long:
        long_table(args.long, args.long_langgraph, [k for k in args.only.split(",")], libs)
    if "postgres" in args.only:
        print(
            f"{args.threads} threads at once, {args.thread_turns} turns each, async Postgres"
            " saver with a pool of 20:"
        )
        for kind in KINDS[2:]:
            label = "synchronous_commit=" + ("off" if kind == "postgres-nosync" else "on")
            for name in libs:
                rate = worker("concurrent", "--kind", kind, "--library", name)["steps_per_s"]
                print(f"  {label:<24}{name:<12}{rate:>10.0f} steps/s", flush=True)


def long_table(checkpoints: int, lg_checkpoints: int, kinds: list[str], libs: list[str]) -> None:
    print(f"long thread: {checkpoints} checkpoints (LangGraph: {lg_checkpoints}), cold reads")
    print(
        f"{'backend':<16}{'library':<12}{'checkpoints':>12}{'get_state':>11}{'peak':>9}"
        f"{'history10':>11}{'peak':>9}"
    )
    print(f"{'':<40}{'ms':>11}{'MB':>9}{'ms':>11}{'MB':>9}")
    for kind in kinds:
        if kind not in ("memory", "sqlite"):
            continue
        for name in libs:
            n = checkpoints if name == "threadline" else lg_checkpoints
            r = engine.run_worker(
                __file__, "long", "--kind", kind, "--library", name, "--long", str(n)
            )
            print(
                f"{kind:<16}{name:<12}{n:>12}{r['get_state_ms']:>11.1f}"
                f"{r['get_state_peak'] / 1e6:>9.1f}{r['history10_ms']:>11.1f}"
                f"{r['history10_peak'] / 1e6:>9.1f}",
                flush=True,
            )
    print()


if __name__ == "__main__":
    main()

"""Store benchmark: threadline's stores beside LangGraph's, on the same workload in the same run.

10,000 items in 100 namespaces (``("users", "u<i>", "memories")``, 100 items each, values of
~200 bytes with a ``kind`` field). For each backend and library it prints the median time of a
put, a get, a filtered search (``kind`` equal to one of 5 values, in one namespace, limit 10) and
a semantic search over all 10,000 items (limit 10, a fixed 64-dimension fake embedding), and the
ratio LangGraph / threadline (above 1: threadline is faster). On PostgreSQL it also prints one
round trip (``SELECT 1`` on a pooled connection), the unit of the put/get target.

LangGraph's stores only search by meaning with pgvector (PostgreSQL) or sqlite-vec (SQLite);
where those are missing its cell reads "n/a".

Run: `.venv/bin/python bench/store.py [--only memory,sqlite,postgres] [--items N]`.
Each library runs in its own interpreter (``--worker``), as in bench/storage.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

PG_URL = os.environ.get("THREADLINE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
KINDS = ("memory", "sqlite", "postgres")
DIMS = 64
WORDS = [
    "tea",
    "coffee",
    "hiking",
    "chess",
    "jazz",
    "python",
    "rust",
    "travel",
    "books",
    "garden",
    "cats",
    "dogs",
]


def embed(texts: Any) -> list[list[float]]:
    """A fixed fake embedding: hashed word counts in 64 dimensions (same for both libraries)."""
    out = []
    for text in texts:
        v = [0.0] * DIMS
        for word in str(text).split():
            h = hashlib.blake2b(word.encode(), digest_size=2).digest()
            v[int.from_bytes(h, "big") % DIMS] += 1.0
        out.append(v)
    return out


def value(rng: random.Random, i: int) -> dict[str, Any]:
    words = " ".join(rng.choices(WORDS, k=20))
    return {"text": words, "kind": f"k{i % 5}", "n": i, "source": "bench"}


def med_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


@contextlib.contextmanager
def open_store(lib: str, kind: str, index: bool, workdir: str) -> Iterator[Any]:
    idx = {"embed": embed, "dims": DIMS, "fields": ["text"]} if index else None
    schema = f"bench_store_{uuid.uuid4().hex[:8]}"
    if lib == "threadline":
        if kind == "memory":
            from threadline.store.memory import InMemoryStore

            yield InMemoryStore(index=idx)
        elif kind == "sqlite":
            from threadline.store.sqlite import SqliteStore

            with SqliteStore.from_conn_string(os.path.join(workdir, "s.db"), index=idx) as s:
                yield s
        else:
            from threadline.store.postgres import PostgresStore

            try:
                with PostgresStore.from_conn_string(PG_URL, schema=schema, index=idx) as s:
                    yield s
            finally:
                drop_schema(schema)
        return
    if kind == "memory":
        from langgraph.store.memory import InMemoryStore as LGMemory

        yield LGMemory(index=idx)  # type: ignore[arg-type]
    elif kind == "sqlite":
        from langgraph.store.sqlite import SqliteStore as LGSqlite

        with LGSqlite.from_conn_string(os.path.join(workdir, "s.db"), index=idx) as s:  # type: ignore[arg-type]
            s.setup()
            yield s
    else:
        from langgraph.store.postgres import PostgresStore as LGPostgres

        url = f"{PG_URL}?options=-csearch_path%3D{schema}"
        create_schema(schema)
        try:
            with LGPostgres.from_conn_string(url, index=idx) as s:  # type: ignore[arg-type]
                s.setup()
                yield s
        finally:
            drop_schema(schema)


def create_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')


def drop_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def timed(fn: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def measure(lib: str, kind: str, items: int) -> dict[str, Any]:
    rng = random.Random(7)
    spaces = 100
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as workdir:
        with open_store(lib, kind, False, workdir) as store:
            puts = []
            for i in range(items):
                ns = ("users", f"u{i % spaces}", "memories")
                v = value(rng, i)
                t = time.perf_counter()
                store.put(ns, f"m{i}", v)
                puts.append(time.perf_counter() - t)
            result["put"] = med_us(puts)
            keys = [(("users", f"u{i % spaces}", "memories"), f"m{i}") for i in range(items)]
            picks = [rng.choice(keys) for _ in range(1000)]
            it = iter(picks)
            result["get"] = med_us(timed(lambda: store.get(*next(it)), len(picks)))
            result["search"] = med_us(
                timed(
                    lambda: store.search(
                        ("users", f"u{rng.randrange(spaces)}"),
                        filter={"kind": f"k{rng.randrange(5)}"},
                        limit=10,
                    ),
                    300,
                )
            )
        semantic: float | None = None
        if lib == "threadline" or kind == "memory":
            with open_store(lib, kind, True, workdir) as store:
                ops_cls = _put_op(lib)
                for start in range(0, items, 500):
                    store.batch(
                        [
                            ops_cls(("users", f"u{i % spaces}", "memories"), f"m{i}", value(rng, i))
                            for i in range(start, min(items, start + 500))
                        ]
                    )
                queries = [" ".join(rng.choices(WORDS, k=3)) for _ in range(20)]
                q = iter(queries)
                semantic = med_us(
                    timed(lambda: store.search(("users",), query=next(q), limit=10), len(queries))
                )
        result["semantic"] = semantic
    if kind == "postgres":
        result["round_trip"] = round_trip()
    return result


def _put_op(lib: str) -> Any:
    if lib == "threadline":
        from threadline.store.base import PutOp
    else:
        from langgraph.store.base import PutOp  # type: ignore[no-redef]
    return PutOp


def round_trip() -> float:
    from psycopg_pool import ConnectionPool

    with ConnectionPool(PG_URL, min_size=1, max_size=1, kwargs={"autocommit": True}) as pool:
        for _ in range(50):
            with pool.connection() as c:
                c.execute("SELECT 1")
        samples = []
        for _ in range(500):
            t = time.perf_counter()
            with pool.connection() as c:
                c.execute("SELECT 1").fetchall()
            samples.append(time.perf_counter() - t)
    return med_us(samples)


def run_worker(lib: str, kind: str, items: int) -> dict[str, Any]:
    env = dict(os.environ)
    out = subprocess.run(
        [sys.executable, __file__, "--worker", lib, kind, "--items", str(items)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def fmt(us: float | None) -> str:
    if us is None:
        return "n/a"
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} us"


def ratio(lg: float | None, tl: float | None) -> str:
    if lg is None or tl is None or tl == 0:
        return ""
    return f"{lg / tl:.1f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(KINDS))
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--worker", nargs=2, metavar=("LIB", "KIND"))
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker[0], args.worker[1], args.items)))
        return
    print(f"{args.items} items in 100 namespaces; medians; ratio = LangGraph / threadline\n")
    print(f"{'backend':<10} {'operation':<16} {'threadline':>12} {'LangGraph':>12} {'ratio':>7}")
    for kind in args.only.split(","):
        tl = run_worker("threadline", kind, args.items)
        lg = run_worker("langgraph", kind, args.items)
        for op in ("put", "get", "search", "semantic"):
            label = {"search": "filtered search", "semantic": "semantic search"}.get(op, op)
            print(
                f"{kind:<10} {label:<16} {fmt(tl[op]):>12} {fmt(lg[op]):>12}"
                f" {ratio(lg[op], tl[op]):>7}"
            )
        if "round_trip" in tl:
            print(f"{kind:<10} {'one round trip':<16} {fmt(tl['round_trip']):>12}")
        sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(asyncio.sleep(0))
    main()

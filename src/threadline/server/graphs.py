"""``langgraph.json``: the graphs a server serves, loaded as LangGraph's server loads them.

A graph entry is ``"./file.py:attr"`` or ``"package.module:attr"``; the attribute is a compiled
graph, a ``StateGraph`` builder, or a factory function (no argument, or the run's config). Each
graph is an assistant whose id is the graph name's uuid5, as LangGraph derives it.
"""

from __future__ import annotations

import copy
import functools
import importlib
import importlib.util
import inspect
import json
import os
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..graph.builder import StateGraph
from ..runtime.compiled import CompiledStateGraph
from .threads import MAX_TTL_MINUTES, TTL_STRATEGIES

__all__ = [
    "GraphRegistry",
    "ServerConfig",
    "ThreadTTL",
    "assistant_id_of",
    "load_config",
    "store_options",
]

NAMESPACE_GRAPH = uuid.UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8")  # LangGraph's namespace
# Keys about building LangGraph's container images or its JS side: nothing to do here.
_IGNORED_KEYS = {
    "dependencies", "python_version", "pip_config_file", "dockerfile_lines", "ui",
    "node_version", "image_distro", "$schema", "base_image", "keep_pkg_tools", "api_version",
    "pip_installer", "webhooks",
}  # fmt: skip
_KNOWN_KEYS = {"graphs", "env", "store", "checkpointer", *_IGNORED_KEYS}
# Keys that change what the server does; running without doing it would be worse than refusing.
_REFUSED_KEYS = {
    "auth": "custom authentication is not supported yet; remove 'auth' and put the server"
    " behind a proxy that authenticates (see docs/server.md)",
    "http": "custom routes, middleware and CORS settings are not supported yet; remove 'http'",
}
_REFUSED_CHECKPOINTER_KEYS = {
    "path": "a custom checkpointer is not supported: threadline serve saves threads in its own"
    " database (--database-url); remove 'path'",
    "uri": "threadline serve saves threads in its own database (--database-url), not MongoDB;"
    " remove 'uri'",
    "serde": "serializer settings are not supported: threadline's serializer takes registered"
    " types only and never pickles (docs/security.md); remove 'serde'",
}
_THREAD_TTL_KEYS = {"strategy", "default_ttl", "sweep_interval_minutes", "sweep_limit"}
_STORE_KEYS = {"index", "ttl"}
_STORE_TTL_KEYS = {"refresh_on_read", "default_ttl", "sweep_interval_minutes"}
_STORE_INDEX_KEYS = {"embed", "dims", "fields"}


@functools.lru_cache(maxsize=1024)  # asked on every run that names its assistant
def assistant_id_of(graph_id: str) -> str:
    """The assistant id of a configured graph: ``uuid5(NAMESPACE_GRAPH, graph_id)``."""
    return str(uuid.uuid5(NAMESPACE_GRAPH, graph_id))


@dataclass
class ServerConfig:
    """What ``langgraph.json`` says: the graphs (name -> spec) and the folder it lives in."""

    graphs: dict[str, str]
    root: Path
    env: dict[str, str] = field(default_factory=dict)
    store: dict[str, Any] = field(default_factory=dict)
    """The ``"store"`` section: ``index`` (semantic search) and ``ttl``, as LangGraph's."""
    thread_ttl: ThreadTTL | None = None
    """The ``"checkpointer": {"ttl": ...}`` section."""


@dataclass(frozen=True)
class ThreadTTL:
    """``checkpointer.ttl``: the TTL of threads created without one, and the thread sweep."""

    strategy: str = "delete"
    default_minutes: float | None = None
    """Given to each thread created without a ``ttl`` (None: such threads live on)."""
    sweep_minutes: float | None = None
    """Minutes between sweeps of expired threads (None: ``--sweep-interval``)."""
    sweep_limit: int | None = None
    """At most this many expired threads acted on per sweep (None: all)."""

    def default(self) -> tuple[str, float] | None:
        """``(strategy, minutes)`` for a thread created without a TTL, or None."""
        return None if self.default_minutes is None else (self.strategy, self.default_minutes)


def load_config(path: str | os.PathLike[str]) -> ServerConfig:
    """Read and check a ``langgraph.json``."""
    file = Path(path)
    if not file.is_file():
        raise SystemExit(f"threadline serve: no config file at {file}; pass --config PATH")
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise SystemExit(f"threadline serve: {file} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("graphs"), dict) or not data["graphs"]:
        raise SystemExit(f'threadline serve: {file} needs "graphs": {{"name": "./file.py:graph"}}')
    for key, why in _REFUSED_KEYS.items():
        if key in data:
            raise SystemExit(f"threadline serve: {file}: {why}")
    unknown = sorted(set(data) - _KNOWN_KEYS)
    if unknown:
        raise SystemExit(
            f"threadline serve: {file} has unknown keys {unknown}; remove them"
            f" (known: {sorted(_KNOWN_KEYS | set(_REFUSED_KEYS))})"
        )
    env = data.get("env") or {}
    if isinstance(env, str):
        env = _read_env_file(file.parent / env)
    store = {} if data.get("store") is None else data["store"]
    _check_store_section(file, store)
    return ServerConfig(
        {str(k): str(v) for k, v in data["graphs"].items()},
        file.parent.resolve(),
        env,
        store,
        _thread_ttl(f"threadline serve: {file}:", data.get("checkpointer")),
    )


def _thread_ttl(where: str, section: Any) -> ThreadTTL | None:
    """The ``"checkpointer"`` section: its ``ttl`` is honoured; what cannot be, is refused."""
    if section is None:
        return None
    if not isinstance(section, dict):
        raise SystemExit(f'{where} "checkpointer" must be an object, e.g. {{"ttl": {{...}}}}')
    for key, why in _REFUSED_CHECKPOINTER_KEYS.items():
        if key in section:
            raise SystemExit(f"{where} checkpointer.{key}: {why}")
    if section.get("backend", "default") != "default":
        raise SystemExit(
            f"{where} checkpointer.backend {section['backend']!r} is not supported: threadline"
            ' serve saves threads in its own database; use "default" or leave it out'
        )
    unknown = sorted(set(section) - {"ttl", "backend"})
    if unknown:
        raise SystemExit(f"{where} checkpointer has unknown keys {unknown}; known: backend, ttl")
    ttl = section.get("ttl")
    if ttl is None:
        return None
    if not isinstance(ttl, dict):
        raise SystemExit(f"{where} checkpointer.ttl must be an object")
    unknown = sorted(set(ttl) - _THREAD_TTL_KEYS)
    if unknown:
        known = sorted(_THREAD_TTL_KEYS)
        raise SystemExit(f"{where} checkpointer.ttl has unknown keys {unknown}; known: {known}")
    strategy = ttl.get("strategy") or "delete"
    if strategy not in TTL_STRATEGIES:
        raise SystemExit(
            f"{where} checkpointer.ttl.strategy must be one of {list(TTL_STRATEGIES)},"
            f" got {strategy!r}"
        )
    return ThreadTTL(
        str(strategy),
        _minutes(where, "default_ttl", ttl.get("default_ttl")),
        _minutes(where, "sweep_interval_minutes", ttl.get("sweep_interval_minutes")),
        _count(where, "sweep_limit", ttl.get("sweep_limit")),
    )


def _minutes(where: str, key: str, value: Any) -> float | None:
    """``checkpointer.ttl.<key>``, a positive number of minutes, or None."""
    if value is None:
        return None
    most = MAX_TTL_MINUTES
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= most:
        raise SystemExit(
            f"{where} checkpointer.ttl.{key} must be a number of minutes above 0 and at most"
            f" {most} (100 years), got {value!r}"
        )
    return float(value)


def _count(where: str, key: str, value: Any) -> int | None:
    """``checkpointer.ttl.<key>``, a positive whole number, or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SystemExit(
            f"{where} checkpointer.ttl.{key} must be a whole number above 0, got {value!r}"
        )
    return value


def _check_store_section(file: Path, store: Any) -> None:
    where = f"threadline serve: {file}:"
    if not isinstance(store, dict):
        raise SystemExit(f'{where} "store" must be an object with "index" and/or "ttl"')
    sections = (("", _STORE_KEYS), ("ttl", _STORE_TTL_KEYS), ("index", _STORE_INDEX_KEYS))
    for section, known in sections:
        part = store if not section else store.get(section)
        if section and part is None:
            continue
        name = f"store.{section}" if section else "store"
        if not isinstance(part, dict):
            raise SystemExit(f"{where} {name} must be an object")
        unknown = sorted(set(part) - known)
        if unknown:
            raise SystemExit(f"{where} {name} has unknown keys {unknown}; known: {sorted(known)}")
    index = store.get("index")
    if index is not None and (
        not isinstance(index.get("embed"), str) or not isinstance(index.get("dims"), int)
    ):
        raise SystemExit(
            f'{where} store.index needs "embed" ("./file.py:function" or a provider string'
            ' such as "openai:text-embedding-3-small") and "dims" (an integer)'
        )


def store_options(config: ServerConfig) -> dict[str, Any]:
    """The keywords of the server's store (``index``, ``ttl``) from the config's ``"store"``.

    ``index.embed`` is ``path.py:function`` / ``module:attribute`` (a function of a list of
    texts, or a LangChain ``Embeddings``), or a provider string as LangChain's
    ``init_embeddings`` takes (``"openai:text-embedding-3-small"``, needs ``langchain``).
    """
    options: dict[str, Any] = {}
    if config.store.get("ttl"):
        options["ttl"] = dict(config.store["ttl"])
    index = config.store.get("index")
    if index:
        options["index"] = {**index, "embed": _embedder(str(index["embed"]), config.root)}
    return options


def _embedder(spec: str, root: Path) -> Any:
    target, _, attr = spec.rpartition(":")
    if target.endswith(".py") or "/" in target or attr.isidentifier():
        return _import_attr(spec, root)
    try:
        from langchain.embeddings import init_embeddings  # type: ignore[import-not-found]
    except ImportError:
        raise SystemExit(
            f"threadline serve: store.index.embed {spec!r} is a provider string, which needs"
            " langchain (pip install langchain and the provider's package), or name your own"
            " function: './embed.py:embed'"
        ) from None
    return init_embeddings(spec)


def _read_env_file(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise SystemExit(f"threadline serve: env file {path} not found")
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip().strip("'\"")
    return env


def _import_attr(spec: str, root: Path) -> Any:
    target, sep, attr = spec.rpartition(":")
    if not sep or not attr:
        raise SystemExit(f"threadline serve: graph {spec!r} must be 'path.py:attribute'")
    if target.endswith(".py") or "/" in target:
        file = (root / target).resolve()
        name = f"threadline_graph_{abs(hash(str(file)))}"
        module_spec = importlib.util.spec_from_file_location(name, file)
        if module_spec is None or module_spec.loader is None or not file.is_file():
            raise SystemExit(f"threadline serve: graph file {file} not found")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise SystemExit(f"threadline serve: {target} has no attribute {attr!r}") from None


class GraphRegistry:
    """The served graphs, each compiled onto the server's checkpointer and store."""

    def __init__(self, config: ServerConfig, checkpointer: Any, store: Any) -> None:
        self.specs = config.graphs
        self._checkpointer = checkpointer
        self._store = store
        self._objects: dict[str, Any] = {}
        if str(config.root) not in sys.path:
            sys.path.insert(0, str(config.root))
        for name, spec in config.graphs.items():
            obj = _import_attr(spec, config.root)
            if isinstance(obj, StateGraph):  # a builder: compiled once, not per run
                obj = obj.compile(checkpointer=checkpointer, store=store)
            self._objects[name] = obj

    def names(self) -> list[str]:
        return list(self.specs)

    def resolve(self, assistant_id: str) -> str | None:
        """The graph name of an assistant id or graph name, or None."""
        if assistant_id in self.specs:
            return assistant_id
        for name in self.specs:
            if assistant_id_of(name) == assistant_id:
                return name
        return None

    def get(self, graph_id: str, config: dict[str, Any] | None = None) -> CompiledStateGraph:
        """The graph ready to run on the server's database."""
        obj = self._objects[graph_id]
        if isinstance(obj, StateGraph):
            return obj.compile(checkpointer=self._checkpointer, store=self._store)
        if not isinstance(obj, CompiledStateGraph) and callable(obj):
            params = inspect.signature(obj).parameters
            obj = obj(config or {}) if params else obj()
            if isinstance(obj, StateGraph):
                return obj.compile(checkpointer=self._checkpointer, store=self._store)
        if not isinstance(obj, CompiledStateGraph):
            raise TypeError(f"graph {graph_id!r} is {type(obj).__name__}, not a graph")
        graph = copy.copy(obj)
        graph.checkpointer = self._checkpointer
        graph.store = self._store
        return graph

"""The LangChain ``Runnable`` methods programs call on a compiled graph, beyond running it.

``with_config`` binds configuration (LangGraph returns a copy of the graph that merges it into
every call), ``batch`` / ``abatch`` run several inputs, ``clear_cache`` forgets cached node
results. They are written over ``invoke`` / ``stream`` and the thread methods, so the graph
class only inherits them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from ..checkpoint.types import RunnableConfig
from .execute import cache_namespace

__all__ = ["ConfiguredGraph", "RunnableMethods", "merge_configs"]

# Config keys whose values are merged (dicts) or concatenated (lists) rather than replaced.
_MERGED = ("configurable", "metadata")
_JOINED = ("tags",)


def merge_configs(*configs: RunnableConfig | None) -> RunnableConfig:
    """Later configs win key by key; ``configurable`` and ``metadata`` merge, ``tags`` add up."""
    out: dict[str, Any] = {}
    for config in configs:
        for key, value in (config or {}).items():
            if value is None:
                continue
            if key in _MERGED and isinstance(out.get(key), dict):
                out[key] = {**out[key], **value}
            elif key in _JOINED and isinstance(out.get(key), list):
                out[key] = list(dict.fromkeys([*out[key], *value]))
            elif key in _MERGED:
                out[key] = dict(value)
            elif key in _JOINED:
                out[key] = list(value)
            else:
                out[key] = value
    return out


def _configs(config: RunnableConfig | Sequence[RunnableConfig] | None, n: int) -> list[Any]:
    if isinstance(config, Sequence) and not isinstance(config, (str, dict)):
        if len(config) != n:
            raise ValueError(f"batch() got {n} inputs but {len(config)} configs")
        return list(config)
    return [config] * n


class RunnableMethods:
    """Mixed into the compiled graph (and :class:`ConfiguredGraph`): written over the
    ``invoke`` / ``ainvoke`` those classes define."""

    def with_config(self, config: RunnableConfig | None = None, **kwargs: Any) -> ConfiguredGraph:
        """This graph with ``config`` (and keyword config keys, e.g. ``recursion_limit=5``,
        ``configurable={...}``) merged into every call's config."""
        return ConfiguredGraph(self, merge_configs(config, kwargs))

    def batch(
        self,
        inputs: Sequence[Any],
        config: RunnableConfig | Sequence[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        """``invoke`` each input (on a thread pool, at most ``max_concurrency`` at once when a
        config sets it); the results in input order."""
        configs = _configs(config, len(inputs))
        if not inputs:
            return []
        runner: Any = self

        def one(pair: tuple[Any, Any]) -> Any:
            try:
                return runner.invoke(pair[0], pair[1], **kwargs)
            except Exception as exc:
                if return_exceptions:
                    return exc
                raise

        limit = (configs[0] or {}).get("max_concurrency") or len(inputs)
        with concurrent.futures.ThreadPoolExecutor(min(limit, len(inputs))) as pool:
            return list(pool.map(one, zip(inputs, configs, strict=True)))

    async def abatch(
        self,
        inputs: Sequence[Any],
        config: RunnableConfig | Sequence[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        """Async :meth:`batch`: the inputs run concurrently on the event loop."""
        configs = _configs(config, len(inputs))
        limit = (configs[0] or {}).get("max_concurrency") if configs else None
        gate = asyncio.Semaphore(limit or max(len(inputs), 1))
        runner: Any = self

        async def one(value: Any, cfg: Any) -> Any:
            async with gate:
                return await runner.ainvoke(value, cfg, **kwargs)

        runs = [one(v, c) for v, c in zip(inputs, configs, strict=True)]
        return list(await asyncio.gather(*runs, return_exceptions=return_exceptions))

    def clear_cache(self, nodes: Sequence[str] | None = None) -> None:
        """Forget the cached results of ``nodes`` (default: every node with a cache policy)."""
        cache = getattr(self, "cache", None)
        if cache is not None:
            cache.clear(self._cache_namespaces(nodes))

    async def aclear_cache(self, nodes: Sequence[str] | None = None) -> None:
        """Async :meth:`clear_cache`."""
        cache = getattr(self, "cache", None)
        if cache is not None:
            await cache.aclear(self._cache_namespaces(nodes))

    def _cache_namespaces(self, nodes: Sequence[str] | None) -> list[tuple[str, ...]]:
        spec = getattr(self, "spec", None)
        found = [] if spec is None else list(spec.nodes.values())
        return [
            cache_namespace(n)
            for n in found
            if n.cache_policy is not None and (nodes is None or n.name in nodes)
        ]


class ConfiguredGraph(RunnableMethods):
    """What ``with_config`` returns: the graph, with a config merged into every call.

    Running (``invoke``, ``stream`` and their async twins) and the thread methods
    (``get_state``, ``update_state``, history) take the bound config first; any other
    attribute is the graph's.
    """

    def __init__(self, graph: Any, config: RunnableConfig) -> None:
        self.bound = graph
        self.config = config

    def __getattr__(self, name: str) -> Any:
        return getattr(self.bound, name)

    def _merged(self, config: RunnableConfig | None) -> RunnableConfig:
        return merge_configs(self.config, config)

    def with_config(self, config: RunnableConfig | None = None, **kwargs: Any) -> ConfiguredGraph:
        return ConfiguredGraph(self.bound, merge_configs(self.config, config, kwargs))

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return self.bound.invoke(input, self._merged(config), **kwargs)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return await self.bound.ainvoke(input, self._merged(config), **kwargs)

    def stream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        yield from self.bound.stream(input, self._merged(config), **kwargs)

    async def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        async for chunk in self.bound.astream(input, self._merged(config), **kwargs):
            yield chunk

    def get_state(self, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return self.bound.get_state(self._merged(config), **kwargs)

    async def aget_state(self, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return await self.bound.aget_state(self._merged(config), **kwargs)

    def get_state_history(self, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return self.bound.get_state_history(self._merged(config), **kwargs)

    def aget_state_history(self, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return self.bound.aget_state_history(self._merged(config), **kwargs)

    def update_state(self, config: RunnableConfig | None, values: Any, **kwargs: Any) -> Any:
        return self.bound.update_state(self._merged(config), values, **kwargs)

    async def aupdate_state(self, config: RunnableConfig | None, values: Any, **kwargs: Any) -> Any:
        return await self.bound.aupdate_state(self._merged(config), values, **kwargs)

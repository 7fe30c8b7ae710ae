"""Embedding for semantic search: what a store's ``index={"embed": ...}`` may be, and which
texts of a value get embedded (paths such as ``"text"``, ``"a.b"``, ``"tags[*]"``, ``"$"``)."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, runtime_checkable

__all__ = ["Embedder", "Embeddings", "ensure_embeddings", "get_text_at_path", "tokenize_path"]


@runtime_checkable
class Embeddings(Protocol):
    """What the store needs of an embedding model (LangChain's ``Embeddings`` has it)."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]: ...

    def embed_query(self, text: str) -> list[float]: ...


EmbedFunc = Callable[[Sequence[str]], Any]


class Embedder:
    """One way to call whatever was configured, sync or async.

    Sync functions and models are run in a thread from async code; async-only functions
    cannot be used by the sync API (a clear error says to use the ``a*`` methods).
    """

    def __init__(self, embed: Embeddings | EmbedFunc) -> None:
        self._model = embed if isinstance(embed, Embeddings) else None
        self._func: Any = None if self._model is not None else embed
        if self._model is None and not callable(embed):
            raise TypeError(
                "index['embed'] must be a LangChain Embeddings or a function of a list of"
                f" texts returning vectors, got {type(embed).__name__}"
            )
        self._async_func = self._func is not None and _is_async(self._func)

    def documents(self, texts: list[str]) -> list[list[float]]:
        if self._model is not None:
            return [list(map(float, v)) for v in self._model.embed_documents(texts)]
        if self._async_func:
            raise TypeError(
                "the store's embed function is async: use the async methods (aput, asearch,"
                " abatch), or give a sync function"
            )
        assert self._func is not None
        return [list(map(float, v)) for v in self._func(texts)]

    def query(self, text: str) -> list[float]:
        if self._model is not None:
            return list(map(float, self._model.embed_query(text)))
        return self.documents([text])[0]

    async def adocuments(self, texts: list[str]) -> list[list[float]]:
        if self._model is not None:
            aembed = getattr(self._model, "aembed_documents", None)
            if aembed is not None:
                return [list(map(float, v)) for v in await aembed(texts)]
            return await asyncio.to_thread(self.documents, texts)
        assert self._func is not None
        if self._async_func:
            return [list(map(float, v)) for v in await self._func(texts)]
        return await asyncio.to_thread(self.documents, texts)

    async def aquery(self, text: str) -> list[float]:
        if self._model is not None:
            aembed = getattr(self._model, "aembed_query", None)
            if aembed is not None:
                return list(map(float, await aembed(text)))
            return await asyncio.to_thread(self.query, text)
        return (await self.adocuments([text]))[0]


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    )


def ensure_embeddings(embed: Embeddings | EmbedFunc | Callable[..., Awaitable[Any]]) -> Embedder:
    """Wrap a LangChain ``Embeddings`` or a (sync or async) function of texts."""
    return Embedder(embed)


def tokenize_path(path: str) -> list[str]:
    """Split ``"a.b[0].c"`` into ``["a", "b", "[0]", "c"]``; ``"{x,y}"`` stays one token."""
    tokens: list[str] = []
    current = ""
    depth = 0
    for char in path:
        if depth:
            current += char
            if char in "]}":
                depth -= 1
                if not depth:
                    tokens.append(current)
                    current = ""
            elif char in "[{":
                depth += 1
        elif char == ".":
            if current:
                tokens.append(current)
            current = ""
        elif char in "[{":
            if current:
                tokens.append(current)
            current = char
            depth = 1
        else:
            current += char
    if current:
        tokens.append(current)
    return tokens


def _leaf_text(value: Any) -> list[str]:
    if isinstance(value, bool | int | float | str):
        return [str(value)]
    if isinstance(value, list | dict):
        return [json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)]
    return []


def get_text_at_path(obj: Any, path: str | list[str]) -> list[str]:
    """The texts at ``path`` in ``obj``: ``"$"`` is the whole value as JSON; ``[*]`` and ``*``
    expand every item; ``[-1]`` counts from the end; ``{a,b.c}`` picks several fields."""
    if path in ("", "$"):
        return [json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str)]
    tokens = tokenize_path(path) if isinstance(path, str) else path
    nodes = [obj]
    for token in tokens:
        found: list[Any] = []
        for node in nodes:
            found.extend(_step(node, token))
        nodes = found
    texts: list[str] = []
    for node in nodes:
        texts.extend(_leaf_text(node))
    return texts


def _step(node: Any, token: str) -> list[Any]:
    if token.startswith("[") and token.endswith("]"):
        if not isinstance(node, list):
            return []
        index = token[1:-1]
        if index == "*":
            return list(node)
        try:
            return [node[int(index)]]
        except (ValueError, IndexError):
            return []
    if token.startswith("{") and token.endswith("}"):
        out: list[Any] = []
        for field in token[1:-1].split(","):
            sub: list[Any] = [node]
            for part in tokenize_path(field.strip()):
                sub = [x for s in sub for x in _step(s, part)]
            out.extend(sub)
        return out
    if token == "*":
        if isinstance(node, dict):
            return list(node.values())
        return list(node) if isinstance(node, list) else []
    if isinstance(node, dict) and token in node:
        return [node[token]]
    return []

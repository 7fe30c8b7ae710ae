"""The Store: long-term memory shared across threads, with LangGraph's ``BaseStore`` API.

Items live under a *namespace* (a tuple of strings, e.g. ``("users", "42", "memories")``) and a
key. Every backend implements one method pair, :meth:`BaseStore.batch` / :meth:`BaseStore.abatch`,
over four operations (:class:`GetOp`, :class:`PutOp`, :class:`SearchOp`,
:class:`ListNamespacesOp`); ``get``/``put``/``search``/``delete``/``list_namespaces`` and their
``a*`` twins are written once here on top of it.
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any, Literal, NamedTuple, TypeVar

from typing_extensions import TypedDict

from ..errors import InvalidNamespaceError
from ._query import check_filter
from .embed import Embeddings, ensure_embeddings, get_text_at_path, tokenize_path

__all__ = [
    "NOT_PROVIDED",
    "BaseStore",
    "Embeddings",
    "GetOp",
    "IndexConfig",
    "InvalidNamespaceError",
    "Item",
    "ListNamespacesOp",
    "MatchCondition",
    "NamespaceMatchType",
    "NamespacePath",
    "NotProvided",
    "Op",
    "PutOp",
    "Result",
    "SearchItem",
    "SearchOp",
    "TTLConfig",
    "ensure_embeddings",
    "get_text_at_path",
    "tokenize_path",
    "validate_op_namespace",
    "validate_put",
]


class NotProvided:
    """The type of :data:`NOT_PROVIDED`: "argument not given" where ``None`` means something."""

    def __bool__(self) -> Literal[False]:
        return False

    def __repr__(self) -> str:
        return "NOT_PROVIDED"


NOT_PROVIDED = NotProvided()


def _as_datetime(value: dt.datetime | str) -> dt.datetime:
    return dt.datetime.fromisoformat(value) if isinstance(value, str) else value


class Item:
    """A stored value with its place (``namespace``, ``key``) and its times."""

    __slots__ = ("created_at", "key", "namespace", "updated_at", "value")

    def __init__(
        self,
        *,
        value: dict[str, Any],
        key: str,
        namespace: tuple[str, ...],
        created_at: dt.datetime | str,
        updated_at: dt.datetime | str,
    ) -> None:
        self.value = value
        self.key = key
        self.namespace = namespace if type(namespace) is tuple else tuple(namespace)
        self.created_at = (
            created_at if type(created_at) is dt.datetime else _as_datetime(created_at)
        )
        self.updated_at = (
            updated_at if type(updated_at) is dt.datetime else _as_datetime(updated_at)
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Item):
            return NotImplemented
        return (
            self.value == other.value
            and self.key == other.key
            and self.namespace == other.namespace
            and self.created_at == other.created_at
            and self.updated_at == other.updated_at
        )

    def __hash__(self) -> int:
        return hash((self.namespace, self.key))

    def dict(self) -> dict[str, Any]:
        """The item as JSON-ready data (times in ISO 8601)."""
        return {
            "namespace": list(self.namespace),
            "key": self.key,
            "value": self.value,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.dict().items())
        return f"{type(self).__name__}({fields})"


class SearchItem(Item):
    """An :class:`Item` found by :meth:`BaseStore.search`; ``score`` ranks a semantic query."""

    __slots__ = ("score",)

    def __init__(
        self,
        namespace: tuple[str, ...],
        key: str,
        value: dict[str, Any],
        created_at: dt.datetime | str,
        updated_at: dt.datetime | str,
        score: float | None = None,
    ) -> None:
        super().__init__(
            value=value,
            key=key,
            namespace=namespace,
            created_at=created_at,
            updated_at=updated_at,
        )
        self.score = score

    def dict(self) -> dict[str, Any]:
        return {**super().dict(), "score": self.score}


_I = TypeVar("_I", bound="Item")


def trusted_item(
    cls: type[_I],
    value: dict[str, Any],
    key: str,
    namespace: tuple[str, ...],
    created_at: dt.datetime,
    updated_at: dt.datetime,
) -> _I:
    """An ``Item`` (or ``SearchItem``, whose ``score`` the caller then sets) built without
    the conversions of ``__init__``: for stores, whose arguments already have the right types."""
    item = cls.__new__(cls)
    item.value = value
    item.key = key
    item.namespace = namespace
    item.created_at = created_at
    item.updated_at = updated_at
    return item


class GetOp(NamedTuple):
    """Read one item. ``refresh_ttl``: restart its time to live (if it has one)."""

    namespace: tuple[str, ...]
    key: str
    refresh_ttl: bool = True


class SearchOp(NamedTuple):
    """Items under ``namespace_prefix`` matching ``filter``, ranked by ``query`` if given.

    ``filter`` matches value fields: ``{"kind": "note"}`` (equality; nested dicts match nested
    fields) or operators ``{"score": {"$gte": 3}}`` (``$eq $ne $gt $gte $lt $lte``). Without a
    ``query`` the newest items (by ``updated_at``) come first.
    """

    namespace_prefix: tuple[str, ...]
    filter: dict[str, Any] | None = None
    limit: int = 10
    offset: int = 0
    query: str | None = None
    refresh_ttl: bool = True


NamespacePath = tuple[str, ...]
"""A namespace pattern; ``"*"`` matches any one label."""

NamespaceMatchType = Literal["prefix", "suffix"]


class MatchCondition(NamedTuple):
    """A namespace pattern anchored at its start (``prefix``) or end (``suffix``)."""

    match_type: NamespaceMatchType
    path: NamespacePath


class ListNamespacesOp(NamedTuple):
    """The distinct namespaces holding items, matched, cut to ``max_depth`` labels, sorted."""

    match_conditions: tuple[MatchCondition, ...] | None = None
    max_depth: int | None = None
    limit: int = 100
    offset: int = 0


class PutOp(NamedTuple):
    """Store (or, with ``value=None``, delete) one item.

    ``index``: which value fields to embed for semantic search: ``None`` the store's configured
    fields, ``False`` none, or a list of paths (``"text"``, ``"a.b"``, ``"tags[*]"``, ``"$"``).
    ``ttl``: minutes until the item expires (None: never).
    """

    namespace: tuple[str, ...]
    key: str
    value: dict[str, Any] | None
    index: Literal[False] | list[str] | None = None  # type: ignore[assignment]
    ttl: float | None = None


Op = GetOp | SearchOp | PutOp | ListNamespacesOp
Result = Item | list[Item] | list[SearchItem] | list[tuple[str, ...]] | None


class TTLConfig(TypedDict, total=False):
    """Time-to-live settings of a store (times in minutes, as LangGraph counts them)."""

    refresh_on_read: bool
    """Whether reads restart an item's time to live by default (default True)."""
    default_ttl: float | None
    """Minutes to live of items put without a ``ttl`` (default: forever)."""
    sweep_interval_minutes: int | None
    """How often the background sweeper (:meth:`BaseStore.start_ttl_sweeper`) runs."""


class IndexConfig(TypedDict, total=False):
    """Semantic search settings: how to embed values and which fields."""

    dims: int
    """Length of the vectors ``embed`` returns."""
    embed: Any
    """A LangChain ``Embeddings``, or a function (sync or async) of a list of texts."""
    fields: list[str] | None
    """Paths of the value fields to embed (default ``["$"]``: the whole value as JSON)."""


# ---------------------------------------------------------------------- validation

#: Longest namespace label and key, in characters: they are stored in index keys.
MAX_LABEL_CHARS = 256
MAX_NAMESPACE_DEPTH = 64


def _check_label(label: object, namespace: tuple[Any, ...]) -> None:
    if not isinstance(label, str):
        raise InvalidNamespaceError(
            f"namespace {namespace!r} has the label {label!r} of type {type(label).__name__};"
            " labels must be strings"
        )
    if not label:
        raise InvalidNamespaceError(f"namespace {namespace!r} has an empty label")
    if "." in label or "\x00" in label:
        raise InvalidNamespaceError(
            f"namespace label {label!r} in {namespace!r} contains '.' or NUL; use other"
            " characters (labels are joined with '.' when stored)"
        )
    if len(label) > MAX_LABEL_CHARS:
        raise InvalidNamespaceError(
            f"a namespace label of {len(label)} characters is longer than {MAX_LABEL_CHARS}"
        )
    try:
        label.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidNamespaceError(
            f"namespace label {label!r} is not valid Unicode (a lone surrogate)"
        ) from None


#: Namespaces already validated, each mapped to itself: a hit returns the checked tuple (of
#: real ``str`` labels) rather than the caller's, so equality is all a hit relies on. Bounded;
#: cleared when full (namespaces are few and reused, validating one again is cheap).
_VALID_LABELS: dict[tuple[str, ...], tuple[str, ...]] = {}
_VALID_NAMESPACES: dict[tuple[str, ...], tuple[str, ...]] = {}
_CACHE_SIZE = 4096


def _remember(cache: dict[tuple[str, ...], tuple[str, ...]], ns: tuple[str, ...]) -> None:
    if len(cache) >= _CACHE_SIZE:
        cache.clear()
    cache[ns] = ns


def validate_labels(namespace: Any, *, what: str = "namespace") -> tuple[str, ...]:
    """Return ``namespace`` as a tuple if its labels are valid, else raise saying why."""
    if type(namespace) is tuple:
        try:
            known = _VALID_LABELS.get(namespace)
        except TypeError:  # an unhashable label, refused below
            known = None
        if known is not None:
            return known
    if isinstance(namespace, str) or not isinstance(namespace, tuple | list):
        raise InvalidNamespaceError(
            f"{what} must be a tuple of strings, e.g. ('users', '42'), got {namespace!r}"
        )
    ns = tuple(namespace)
    if len(ns) > MAX_NAMESPACE_DEPTH:
        raise InvalidNamespaceError(
            f"{what} has {len(ns)} labels; at most {MAX_NAMESPACE_DEPTH} are allowed"
        )
    for label in ns:
        _check_label(label, ns)
    if all(type(label) is str for label in ns):
        _remember(_VALID_LABELS, ns)
    return ns


def validate_namespace(namespace: Any) -> tuple[str, ...]:
    """A namespace items can be stored under: at least one label, not rooted at "langgraph"."""
    if type(namespace) is tuple:
        try:
            known = _VALID_NAMESPACES.get(namespace)
        except TypeError:  # an unhashable label, refused below
            known = None
        if known is not None:
            return known
    ns = validate_labels(namespace)
    if not ns:
        raise InvalidNamespaceError("a namespace needs at least one label, e.g. ('memories',)")
    if ns[0] == "langgraph":
        raise InvalidNamespaceError(
            f"namespace {ns!r} starts with 'langgraph', which is reserved; pick another root"
        )
    if ns is _VALID_LABELS.get(ns):
        _remember(_VALID_NAMESPACES, ns)
    return ns


def validate_key(key: Any) -> str:
    if not isinstance(key, str):
        raise TypeError(f"an item key must be a string, got {type(key).__name__}: {key!r}")
    if not key or len(key) > MAX_LABEL_CHARS or "\x00" in key:
        raise ValueError(
            f"an item key must be 1 to {MAX_LABEL_CHARS} characters without NUL, got {key!r}"
        )
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"item key {key!r} is not valid Unicode (a lone surrogate)") from None
    return key


def _check_page(limit: Any, offset: Any) -> None:
    for name, n in (("limit", limit), ("offset", offset)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"{name} must be an int >= 0, got {n!r}")


def validate_op_namespace(op: Op) -> None:
    """Raise :class:`InvalidNamespaceError` if an operation's namespace labels are invalid."""
    validate_op(op)


def validate_put(
    namespace: Any, key: Any, value: Any, index: Any = None, ttl: Any = None
) -> tuple[tuple[str, ...], str, dict[str, Any] | None, Any, float | None]:
    """Check a put's arguments (those of :class:`PutOp`); returns them with a tuple namespace
    and a shallow copy of the value (a ``dict``)."""
    if value is None:
        ns = validate_labels(namespace)
    else:
        ns = validate_namespace(namespace)
        if type(value) is not dict and not isinstance(value, Mapping):
            raise TypeError(
                f"a stored value must be a dict, got {type(value).__name__}; wrap it,"
                " e.g. {'value': ...}"
            )
        value = dict(value)
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0):
        raise ValueError(f"ttl is in minutes and must be > 0 (or None), got {ttl!r}")
    if index not in (None, False) and not (
        isinstance(index, list) and all(isinstance(p, str) for p in index)
    ):
        raise TypeError(f"index must be None, False or a list of paths, got {index!r}")
    return ns, validate_key(key), value, index, ttl


def validate_op(op: Op) -> Op:
    """Check one operation's arguments; returns it with tuples where lists were given."""
    if isinstance(op, GetOp):
        return op._replace(namespace=validate_labels(op.namespace), key=validate_key(op.key))
    if isinstance(op, PutOp):
        return PutOp(*validate_put(*op))
    if isinstance(op, SearchOp):
        _check_page(op.limit, op.offset)
        if op.filter is not None and not isinstance(op.filter, Mapping):
            raise TypeError(f"filter must be a dict, got {type(op.filter).__name__}")
        check_filter(op.filter)
        if op.query is not None and not isinstance(op.query, str):
            raise TypeError(f"query must be a string, got {type(op.query).__name__}")
        return op._replace(namespace_prefix=validate_labels(op.namespace_prefix, what="prefix"))
    if isinstance(op, ListNamespacesOp):
        _check_page(op.limit, op.offset)
        if op.max_depth is not None and (not isinstance(op.max_depth, int) or op.max_depth < 1):
            raise ValueError(f"max_depth must be an int >= 1 (or None), got {op.max_depth!r}")
        conditions = tuple(
            MatchCondition(c.match_type, validate_labels(c.path, what=f"{c.match_type} pattern"))
            for c in op.match_conditions or ()
        )
        for c in conditions:
            if c.match_type not in ("prefix", "suffix"):
                raise ValueError(f"match_type must be 'prefix' or 'suffix', got {c.match_type!r}")
        return op._replace(match_conditions=conditions)
    raise TypeError(
        f"unknown store operation {type(op).__name__}; expected GetOp, PutOp, SearchOp or"
        " ListNamespacesOp"
    )


# ---------------------------------------------------------------------- the store


class BaseStore(ABC):
    """A key-value store for long-term memory, searchable by namespace, filter and meaning.

    Subclasses implement :meth:`batch` and :meth:`abatch`; everything else is built on them.
    """

    supports_ttl: bool = False
    ttl_config: TTLConfig | None = None

    @abstractmethod
    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Run several operations, in order, returning one result per operation."""

    @abstractmethod
    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """Async :meth:`batch`."""

    # ------------------------------------------------------------------ argument shaping

    def _refresh(self, refresh_ttl: bool | None) -> bool:
        if refresh_ttl is not None:
            return refresh_ttl
        return (self.ttl_config or {}).get("refresh_on_read", True)

    def _ttl(self, ttl: float | NotProvided | None) -> float | None:
        if isinstance(ttl, NotProvided):
            return (self.ttl_config or {}).get("default_ttl")
        if ttl is not None and not self.supports_ttl:
            raise NotImplementedError(
                f"{type(self).__name__} does not support ttl; pass ttl=None or use a store"
                " that does"
            )
        return ttl

    @staticmethod
    def _list_op(
        prefix: NamespacePath | None,
        suffix: NamespacePath | None,
        max_depth: int | None,
        limit: int,
        offset: int,
    ) -> ListNamespacesOp:
        conditions = []
        if prefix:
            conditions.append(MatchCondition("prefix", tuple(prefix)))
        if suffix:
            conditions.append(MatchCondition("suffix", tuple(suffix)))
        return ListNamespacesOp(tuple(conditions), max_depth, limit, offset)

    # ------------------------------------------------------------------ sync

    def get(
        self, namespace: tuple[str, ...], key: str, *, refresh_ttl: bool | None = None
    ) -> Item | None:
        """The item at ``namespace``/``key``, or None."""
        result = self.batch([GetOp(namespace, key, self._refresh(refresh_ttl))])[0]
        assert result is None or isinstance(result, Item)
        return result

    def search(
        self,
        namespace_prefix: tuple[str, ...],
        /,
        *,
        query: str | None = None,
        filter: dict[str, Any] | None = None,
        limit: int = 10,
        offset: int = 0,
        refresh_ttl: bool | None = None,
    ) -> list[SearchItem]:
        """Items under ``namespace_prefix`` matching ``filter``; ranked by ``query`` when the
        store has an index (see :class:`SearchOp`)."""
        op = SearchOp(namespace_prefix, filter, limit, offset, query, self._refresh(refresh_ttl))
        result = self.batch([op])[0]
        assert isinstance(result, list)
        return result  # type: ignore[return-value]

    def put(
        self,
        namespace: tuple[str, ...],
        key: str,
        value: dict[str, Any],
        index: Literal[False] | list[str] | None = None,
        *,
        ttl: float | NotProvided | None = NOT_PROVIDED,
    ) -> None:
        """Store ``value`` (a dict) at ``namespace``/``key``, replacing what was there.

        ``index`` picks the fields to embed (see :class:`PutOp`); ``ttl`` is in minutes.
        """
        validate_namespace(namespace)
        self.batch([PutOp(namespace, key, value, index, self._ttl(ttl))])

    def delete(self, namespace: tuple[str, ...], key: str) -> None:
        """Delete the item at ``namespace``/``key`` (nothing happens if there is none)."""
        self.batch([PutOp(namespace, key, None)])

    def list_namespaces(
        self,
        *,
        prefix: NamespacePath | None = None,
        suffix: NamespacePath | None = None,
        max_depth: int | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[tuple[str, ...]]:
        """The namespaces holding items, sorted, matching ``prefix``/``suffix`` (``"*"``
        matches any label) and cut to ``max_depth`` labels."""
        result = self.batch([self._list_op(prefix, suffix, max_depth, limit, offset)])[0]
        assert isinstance(result, list)
        return result  # type: ignore[return-value]

    # ------------------------------------------------------------------ async

    async def aget(
        self, namespace: tuple[str, ...], key: str, *, refresh_ttl: bool | None = None
    ) -> Item | None:
        """Async :meth:`get`."""
        result = (await self.abatch([GetOp(namespace, key, self._refresh(refresh_ttl))]))[0]
        assert result is None or isinstance(result, Item)
        return result

    async def asearch(
        self,
        namespace_prefix: tuple[str, ...],
        /,
        *,
        query: str | None = None,
        filter: dict[str, Any] | None = None,
        limit: int = 10,
        offset: int = 0,
        refresh_ttl: bool | None = None,
    ) -> list[SearchItem]:
        """Async :meth:`search`."""
        op = SearchOp(namespace_prefix, filter, limit, offset, query, self._refresh(refresh_ttl))
        result = (await self.abatch([op]))[0]
        assert isinstance(result, list)
        return result  # type: ignore[return-value]

    async def aput(
        self,
        namespace: tuple[str, ...],
        key: str,
        value: dict[str, Any],
        index: Literal[False] | list[str] | None = None,
        *,
        ttl: float | NotProvided | None = NOT_PROVIDED,
    ) -> None:
        """Async :meth:`put`."""
        validate_namespace(namespace)
        await self.abatch([PutOp(namespace, key, value, index, self._ttl(ttl))])

    async def adelete(self, namespace: tuple[str, ...], key: str) -> None:
        """Async :meth:`delete`."""
        await self.abatch([PutOp(namespace, key, None)])

    async def alist_namespaces(
        self,
        *,
        prefix: NamespacePath | None = None,
        suffix: NamespacePath | None = None,
        max_depth: int | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[tuple[str, ...]]:
        """Async :meth:`list_namespaces`."""
        op = self._list_op(prefix, suffix, max_depth, limit, offset)
        result = (await self.abatch([op]))[0]
        assert isinstance(result, list)
        return result  # type: ignore[return-value]

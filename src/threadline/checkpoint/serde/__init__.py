"""Strict, safe serializer for checkpoint values: MessagePack plus a registry of known types.

Never pickle. Plain data (None, bool, int, float, str, bytes, list, dict) is packed by msgpack's
C packer with no Python work per item. ``bytearray`` (and ``memoryview``) are packed natively
too, as msgpack bin, so they come back as ``bytes``: msgpack's C packer gives no hook for them.
Everything else travels as a msgpack extension type:

====  ===========  ========================================================================
code  type         payload
====  ===========  ========================================================================
1     tuple        msgpack array of the items
2     set          msgpack array of the items
3     frozenset    msgpack array of the items
4     int          two's complement, big endian (only ints outside the 64-bit range)
5     (reserved)
6     datetime     ``>HBBBBBI`` y, m, d, H, M, S, microsecond | fold << 24; then a tz blob
7     date         ``>HBB`` y, m, d
8     time         ``>BBBI`` H, M, S, microsecond | fold << 24; then a tz blob
9     timedelta    ``>iII`` days, seconds, microseconds
10    UUID         the 16 bytes
11    Decimal      ``str(value)`` as ASCII
12    Enum         ``[ "module:qualname", name ]`` (Flag members: the int value instead)
13    dataclass    ``[ "module:qualname", {field: value} ]``
14    pydantic     ``[ "module:qualname", {field: value}, [fields_set], {extra} | None ]``
15    registered   ``[ registered name, encoded data ]``
====  ===========  ========================================================================

A tz blob is empty (naive), ``0x01`` + ``>q`` offset in microseconds (``datetime.timezone``),
``0x02`` + the same + the UTF-8 name (a named ``timezone``), or ``0x03`` + the UTF-8 key of a
``zoneinfo.ZoneInfo``.

Frame (one stored value)::

    byte 0   header: bits 0-3 format version (1; 2 for encrypted frames), bit 4
             zstd-compressed, bit 5 encrypted, bit 6 zlib-compressed, bit 7 reserved (0)
    rest     the msgpack body, compressed when bit 4 or 6 is set.

An encrypted frame (version 2, bit 5 set) stores, after the header, the 4-byte id of the key
(see :func:`key_id`), a 12-byte random nonce, and the (possibly compressed) body's AES-256-GCM
ciphertext with its 16-byte tag. Its associated data is the header, the key id and the
*place* the saver binds the value to (thread, namespace, channel or field, checkpoint or
version id: see :mod:`threadline.checkpoint.binding`), so a ciphertext moved to another row
or replayed from an older version fails authentication. Version-1 frames with bit 5 set
(threadline before binding) were authenticated with the header byte only; they are read like
unencrypted values (only with ``allow_plaintext=True``) until re-encrypted.

Stored rows are untrusted input (docs/security.md). A class reference (codes 12-14) or a
registered name (code 15) is resolved only against the registry and a fixed list of built-in
classes (langchain-core messages, threadline's own types): loading never imports a module a
stored value names and never constructs an unregistered type. Storing a dataclass, Enum or
pydantic model that is neither registered nor built in fails at save time; the types a graph's
state schema names are registered when it is compiled (:mod:`.typewalk`).

Limits, applied on write and on read (a value that could be saved can always be read back):
nesting depth (``max_depth``, default 100) and the size of a decoded body
(``max_decoded_bytes``, default 64 MiB; a compressed body is never inflated past it or past
the size its zstd frame records). Decoding nests C calls only for the first few levels of
extension types; deeper levels use heap-allocated unpackers, so no input can exhaust the C
stack.
Dataclasses come back without running ``__init__``/``__post_init__``: their fields are set as
stored (fields added to the class since take their defaults). Pydantic models come back through
``model_construct``: no re-validation, ``model_fields_set`` and extra fields kept, private
attributes not stored. Only exact types match: a subclass of a supported or registered type is
refused unless registered itself.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import enum
import hashlib
import hmac
import importlib
import os
import struct
import sys
import threading
import zlib
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol, runtime_checkable
from uuid import UUID
from zoneinfo import ZoneInfo

import msgpack

from ...errors import CorruptCheckpointError, DecryptionError, SerializationError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "FORMAT_VERSION",
    "MsgpackSerializer",
    "Serializer",
    "TypeRegistry",
    "default_registry",
    "key_id",
    "register_type",
]

FORMAT_VERSION = 1
_ENCRYPTED_VERSION = 2  # encrypted frames bound to their place, with a key id
_VERSION_MASK = 0x0F
_FLAG_ZSTD = 0x10
_FLAG_ENCRYPTED = 0x20
_FLAG_ZLIB = 0x40
_RESERVED_MASK = 0x80

_COMPRESS_MIN_BYTES = 512  # smaller bodies gain too little to be worth the time
_ZLIB_LEVEL = 1  # the fastest: on text it keeps most of what higher levels gain
# A 16 KiB window and smaller tables keep zlib's working memory (~100 KiB) under glibc's mmap
# threshold: its default (~300 KiB) was mapped and unmapped on every call, which made
# compressing a 1 KB message cost ~60 us instead of ~10. Ratios lose ~1.5% on long texts.
_ZLIB_WBITS = 14
_ZLIB_MEMLEVEL = 6
_ZSTD_LEVEL = 3
_NONCE_BYTES = 12
_TAG_BYTES = 16
_RETAIN_PACKER_BYTES = 8 << 20  # a thread keeps its packer's buffer up to this size
_KEY_BYTES = 32
_KEY_ID_BYTES = 4
_SEALED_HEAD = 1 + _KEY_ID_BYTES  # header byte and key id: the start of the associated data

_EXT_TUPLE = 1
_EXT_SET = 2
_EXT_FROZENSET = 3
_EXT_BIGINT = 4
_EXT_DATETIME = 6
_EXT_DATE = 7
_EXT_TIME = 8
_EXT_TIMEDELTA = 9
_EXT_UUID = 10
_EXT_DECIMAL = 11
_EXT_ENUM = 12
_EXT_DATACLASS = 13
_EXT_MODEL = 14
_EXT_REGISTERED = 15

_DATETIME = struct.Struct(">HBBBBBI")
_DATE = struct.Struct(">HBB")
_TIME = struct.Struct(">BBBI")
_TIMEDELTA = struct.Struct(">iII")
_OFFSET = struct.Struct(">q")
_FOLD = 1 << 24
_US_MASK = _FOLD - 1

_TZ_FIXED = 1
_TZ_FIXED_NAMED = 2
_TZ_ZONEINFO = 3

# Types the packer handles natively (ints beyond 64 bits reach ``default``).
_PLAIN_TYPES: frozenset[type] = frozenset({type(None), bool, int, float, str, bytes})
# Also packed natively (as bin): they come back as bytes.
_BYTES_LIKE: frozenset[type] = frozenset({bytearray, memoryview})
# Leaves of the depth walk: built-in types that hold no nested values.
_LEAVES: frozenset[type] = (
    _PLAIN_TYPES | _BYTES_LIKE | {dt.datetime, dt.date, dt.time, dt.timedelta, UUID, Decimal}
)
# Types with a built-in encoding: registering them is refused.
_BUILTIN_TYPES: frozenset[type] = _LEAVES | {list, dict, tuple, set, frozenset}

_Kind = Literal["custom", "enum", "dataclass", "model"]
_KIND_CODES: dict[str, int] = {"enum": _EXT_ENUM, "dataclass": _EXT_DATACLASS, "model": _EXT_MODEL}
_KIND_WORDS: dict[str, str] = {"enum": "Enum", "dataclass": "dataclass", "model": "pydantic model"}
DEFAULT_MAX_DEPTH = 100
_MAX_MAX_DEPTH = 200  # each level costs a few Python frames to decode; the default limit is 1000
DEFAULT_MAX_DECODED_BYTES = 64 << 20
# Extension payloads nested deeper than this decode with a heap-allocated Unpacker: unpackb()
# keeps its ~40 KB parser stack on the C stack, so 200 nested unpackb() calls overflow 8 MB.
_INLINE_EXT_DEPTH = 8

# Every container level (array, map, ext) starts with one of these bytes, so their count in a
# msgpack body bounds its nesting depth: a body with fewer needs no walk to check its depth.
_CONTAINER_BYTES = bytes(
    [*range(0x80, 0xA0), 0xC7, 0xC8, 0xC9, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xDC, 0xDD, 0xDE, 0xDF]
)
_CONTAINER_TABLE = bytes(1 if i in _CONTAINER_BYTES else 0 for i in range(256))

# Classes every serializer may store and load without registration, by class reference. Only
# these fixed modules are ever imported because of a stored value.
_LC = "langchain_core.messages."
_BUILTIN_REFS: frozenset[str] = frozenset(
    {
        *(
            f"{_LC}{module}:{name}{chunk}"
            for module, name in (
                ("ai", "AIMessage"),
                ("human", "HumanMessage"),
                ("system", "SystemMessage"),
                ("tool", "ToolMessage"),
                ("function", "FunctionMessage"),
                ("chat", "ChatMessage"),
            )
            for chunk in ("", "Chunk")
        ),
        f"{_LC}modifier:RemoveMessage",
        "threadline.types:Interrupt",
        "threadline.types:Send",
        "threadline.types:Command",
    }
)


@runtime_checkable
class Serializer(Protocol):
    """What savers depend on: turns one checkpoint value into bytes and back."""

    def dumps(self, value: Any, key: str = "value") -> bytes:
        """Encode ``value``; ``key`` names it in error messages (e.g. the channel name)."""
        ...

    def loads(self, data: bytes) -> Any:
        """Decode bytes written by :meth:`dumps`."""
        ...


# --------------------------------------------------------------------------- kinds


def _pydantic_base() -> type | None:
    """``pydantic.BaseModel`` if pydantic is already imported (never imports it)."""
    module = sys.modules.get("pydantic")
    base = getattr(module, "BaseModel", None) if module is not None else None
    return base if isinstance(base, type) else None


def _kind_of(cls: type) -> _Kind | None:
    if issubclass(cls, enum.Enum):
        return "enum"
    if dataclasses.is_dataclass(cls):
        return "dataclass"
    base = _pydantic_base()
    if base is not None and issubclass(cls, base):
        return "model"
    return None


def _enum_encode(member: enum.Enum) -> Any:
    return member.value if isinstance(member, enum.Flag) else member.name


def _enum_decode(cls: type[enum.Enum], data: Any) -> Any:
    if issubclass(cls, enum.Flag):
        return cls(data)
    if not isinstance(data, str) or data not in cls.__members__:
        raise CorruptCheckpointError(
            f"the stored value references member {data!r} of Enum {_type_name(cls)}, "
            "which it does not have (renamed or removed?)"
        )
    return cls[data]


class _DataclassInfo(NamedTuple):
    fields: tuple[dataclasses.Field[Any], ...]
    names: frozenset[str]


_DATACLASS_INFO: dict[type, _DataclassInfo] = {}


def _dataclass_info(cls: type) -> _DataclassInfo:
    found = _DATACLASS_INFO.get(cls)
    if found is None:
        fields = dataclasses.fields(cls)
        found = _DATACLASS_INFO[cls] = _DataclassInfo(fields, frozenset(f.name for f in fields))
    return found


_UNSET = object()


def _dataclass_encode(obj: Any) -> dict[str, Any]:
    info = _dataclass_info(type(obj))
    attrs: dict[str, Any] | None = getattr(obj, "__dict__", None)
    if attrs is not None and attrs.keys() == info.names:
        return attrs.copy()  # the common case: exactly the fields, in C
    out: dict[str, Any] = {}
    for f in info.fields:
        value = getattr(obj, f.name, _UNSET)
        if value is not _UNSET:  # an init=False field that was never set stays unset
            out[f.name] = value
    return out


def _dataclass_decode(cls: Any, data: Any) -> Any:
    """Rebuild without calling ``__init__``/``__post_init__``: field values come back exactly.

    Fields the class gained since the value was stored take their defaults; stored fields the
    class no longer has are dropped.
    """
    if type(data) is not dict:
        raise CorruptCheckpointError(f"malformed stored dataclass {_type_name(cls)}")
    info = _dataclass_info(cls)
    obj = cls.__new__(cls)
    attrs: dict[str, Any] | None = getattr(obj, "__dict__", None)
    if attrs is not None and data.keys() == info.names:
        attrs.update(data)  # the common case; bypasses a frozen class's __setattr__ too
        return obj
    for f in info.fields:
        if f.name in data:
            value = data[f.name]
        elif f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            continue
        object.__setattr__(obj, f.name, value)
    return obj


def _model_encode(obj: Any) -> list[Any]:
    # Field values as they are (nested models stay models); no model_dump round trip.
    fields = type(obj).model_fields
    values: dict[str, Any] = obj.__dict__
    if values.keys() <= fields.keys():
        values = values.copy()
    else:  # e.g. a functools.cached_property cached in __dict__: not a field, not stored
        values = {k: v for k, v in values.items() if k in fields}
    return [values, sorted(obj.__pydantic_fields_set__), obj.__pydantic_extra__ or None]


def _model_decode(cls: Any, data: Any) -> Any:
    """``model_construct``: no re-validation, ``model_fields_set`` restored exactly."""
    if (
        type(data) is not list
        or len(data) != 3
        or type(data[0]) is not dict
        or type(data[1]) is not list
    ):
        raise CorruptCheckpointError(f"malformed stored pydantic model {_type_name(cls)}")
    values, fields_set, extra = data
    if extra:
        values = {**values, **extra}
    return cls.model_construct(_fields_set=set(fields_set), **values)


def _auto_handlers(cls: type, kind: _Kind) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    if kind == "enum":
        return _enum_encode, partial(_enum_decode, cls)
    if kind == "dataclass":
        return _dataclass_encode, partial(_dataclass_decode, cls)
    return _model_encode, partial(_model_decode, cls)


# --------------------------------------------------------------------------- registry


class _Entry(NamedTuple):
    cls: type
    name: str
    kind: _Kind
    encode: Callable[[Any], Any]
    decode: Callable[[Any], Any]


class TypeRegistry:
    """Types the serializer may store beyond the built-in ones, each under a stable name.

    A stored value refers to its registered type by name, so the name (not the class's module
    or qualified name) must stay stable across releases of your code.
    """

    def __init__(self) -> None:
        self._by_type: dict[type, _Entry] = {}
        self._by_name: dict[str, _Entry] = {}
        # "module:qualname" of registered dataclasses/Enums/models: the class references of
        # values stored before they were registered (format codes 12-14) resolve through it.
        self._by_ref: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def __contains__(self, cls: object) -> bool:
        return cls in self._by_type

    def ensure(self, cls: type) -> bool:
        """Register a dataclass, Enum or pydantic model under its default name unless it is
        registered already. Returns whether ``cls`` is registered afterwards.

        For types found in a graph's state schema: a class redefined under the same module and
        qualified name (a module reloaded, a class made by a function called twice) takes the
        name over; a name an unrelated class holds is left alone.
        """
        if cls in self._by_type or cls in _BUILTIN_TYPES:
            return cls in self._by_type
        kind = _kind_of(cls)
        if kind is None or _ref_of(cls) in _BUILTIN_REFS:
            return False
        name = f"{cls.__module__}.{cls.__qualname__}"
        with self._lock:
            taken = self._by_name.get(name)
            if taken is not None and _ref_of(taken.cls) != _ref_of(cls):
                return False
            encode, decode = _auto_handlers(cls, kind)
            self._add(_Entry(cls, name, kind, encode, decode))
        return True

    def _add(self, entry: _Entry) -> None:
        self._by_type[entry.cls] = entry
        self._by_name[entry.name] = entry
        if entry.kind != "custom":
            self._by_ref[_ref_of(entry.cls)] = entry

    def register(
        self,
        cls: type,
        *,
        name: str | None = None,
        encode: Callable[[Any], Any] | None = None,
        decode: Callable[[Any], Any] | None = None,
    ) -> None:
        """Allow instances of exactly ``cls`` (not subclasses) to be stored.

        ``encode(instance)`` returns serializable data and ``decode(data)`` rebuilds the
        instance. Dataclasses, Enums and pydantic v2 models need neither. ``name`` defaults to
        ``f"{cls.__module__}.{cls.__qualname__}"``. Registering a class again under a new name
        keeps the old name readable.
        """
        if not isinstance(cls, type):
            raise SerializationError(f"register_type() needs a class, got {cls!r}")
        if cls in _BUILTIN_TYPES:
            raise SerializationError(f"{_type_name(cls)} is supported already; do not register it")
        if name is None:
            name = f"{cls.__module__}.{cls.__qualname__}"
        elif not isinstance(name, str) or not name:
            raise SerializationError("register_type(name=...) must be a non-empty str")
        kind: _Kind
        if encode is None and decode is None:
            auto = _kind_of(cls)
            if auto is None:
                raise SerializationError(
                    f"register_type({cls.__qualname__}) needs encode= and decode=: only "
                    "dataclasses, Enums and pydantic models can be registered without them"
                )
            kind = auto
            encode, decode = _auto_handlers(cls, kind)
        elif encode is None or decode is None:
            raise SerializationError(
                f"register_type({cls.__qualname__}) needs both encode= and decode=, or neither"
            )
        else:
            kind = "custom"
        taken = self._by_name.get(name)
        if taken is not None and taken.cls is not cls:
            raise SerializationError(
                f"the type name {name!r} is registered already for {_type_name(taken.cls)}; "
                f"pick another name for {_type_name(cls)}"
            )
        with self._lock:
            self._add(_Entry(cls, name, kind, encode, decode))


default_registry = TypeRegistry()
"""The registry :class:`MsgpackSerializer` uses unless given another."""


def register_type(
    cls: type,
    *,
    name: str | None = None,
    encode: Callable[[Any], Any] | None = None,
    decode: Callable[[Any], Any] | None = None,
) -> None:
    """Register ``cls`` on :data:`default_registry`; see :meth:`TypeRegistry.register`."""
    default_registry.register(cls, name=name, encode=encode, decode=decode)


# --------------------------------------------------------------------------- helpers


def _ext(code: int, data: bytes) -> msgpack.ExtType:
    """``msgpack.ExtType(code, data)`` without its Python-level argument checks (several
    times the cost of the rest): our codes and payloads are valid by construction."""
    return _new_tuple(msgpack.ExtType, (code, data))


_new_tuple = tuple.__new__


class _Unencodable(Exception):
    """Raised inside msgpack's ``default`` hook; turned into a SerializationError with a path."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _ref_of(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _type_name(cls: type) -> str:
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


_UTC_BLOB = bytes((_TZ_FIXED,)) + _OFFSET.pack(0)


def _tz_blob(tz: dt.tzinfo | None) -> bytes:
    if tz is None:
        return b""
    if tz is dt.timezone.utc:
        return _UTC_BLOB
    if type(tz) is dt.timezone:
        args = tz.__getinitargs__()  # type: ignore[attr-defined]
        offset: dt.timedelta = args[0]
        micros = (offset.days * 86400 + offset.seconds) * 1_000_000 + offset.microseconds
        if len(args) == 1:
            return bytes((_TZ_FIXED,)) + _OFFSET.pack(micros)
        return bytes((_TZ_FIXED_NAMED,)) + _OFFSET.pack(micros) + str(args[1]).encode()
    if type(tz) is ZoneInfo and tz.key is not None:
        return bytes((_TZ_ZONEINFO,)) + tz.key.encode()
    raise _Unencodable(
        f"tzinfo of type {_type_name(type(tz))} is not supported; use datetime.timezone "
        "or zoneinfo.ZoneInfo (created from a key)"
    )


_TZ_BY_BLOB: dict[bytes, dt.tzinfo] = {_UTC_BLOB: dt.timezone.utc}


def _tz_from(blob: bytes) -> dt.tzinfo | None:
    if not blob:
        return None
    found = _TZ_BY_BLOB.get(blob)
    if found is None:
        found = _parse_tz(blob)
        if len(_TZ_BY_BLOB) < 512:  # time zones in use are few; never grow without bound
            _TZ_BY_BLOB[blob] = found
    return found


def _parse_tz(blob: bytes) -> dt.tzinfo:
    tag = blob[0]
    if tag in (_TZ_FIXED, _TZ_FIXED_NAMED) and len(blob) >= 9:
        offset = dt.timedelta(microseconds=_OFFSET.unpack_from(blob, 1)[0])
        if tag == _TZ_FIXED and len(blob) == 9:
            return dt.timezone(offset)
        if tag == _TZ_FIXED_NAMED:
            return dt.timezone(offset, blob[9:].decode())
    elif tag == _TZ_ZONEINFO:
        key = blob[1:].decode()
        try:
            return ZoneInfo(key)
        except Exception as exc:
            raise CorruptCheckpointError(
                f"the stored value uses time zone {key!r}, which this system does not know "
                f"({exc}); install tzdata or update the system time zone database"
            ) from exc
    raise CorruptCheckpointError("malformed stored time zone")


def _encode_bigint(n: int) -> bytes:
    return n.to_bytes((n.bit_length() + 8) // 8, "big", signed=True)


def _encode_datetime(v: dt.datetime) -> bytes:
    micro = v.microsecond | (_FOLD if v.fold else 0)
    head = _DATETIME.pack(v.year, v.month, v.day, v.hour, v.minute, v.second, micro)
    return head + _tz_blob(v.tzinfo)


def _decode_datetime(data: bytes) -> dt.datetime:
    y, mo, d, h, mi, s, micro = _DATETIME.unpack_from(data)
    tz = _tz_from(data[_DATETIME.size :])
    return dt.datetime(y, mo, d, h, mi, s, micro & _US_MASK, tz, fold=micro >> 24)


def _encode_time(v: dt.time) -> bytes:
    micro = v.microsecond | (_FOLD if v.fold else 0)
    return _TIME.pack(v.hour, v.minute, v.second, micro) + _tz_blob(v.tzinfo)


def _decode_time(data: bytes) -> dt.time:
    h, mi, s, micro = _TIME.unpack_from(data)
    tz = _tz_from(data[_TIME.size :])
    return dt.time(h, mi, s, micro & _US_MASK, tz, fold=micro >> 24)


def _decode_date(data: bytes) -> dt.date:
    if len(data) != _DATE.size:
        raise CorruptCheckpointError("malformed stored date")
    return dt.date(*_DATE.unpack(data))


def _decode_timedelta(data: bytes) -> dt.timedelta:
    days, seconds, micros = _TIMEDELTA.unpack(data)
    return dt.timedelta(days=days, seconds=seconds, microseconds=micros)


def _parse_key(key: bytes | str) -> bytes:
    if isinstance(key, (bytes, bytearray, memoryview)):
        raw = bytes(key)
        if len(raw) != _KEY_BYTES:
            raise ValueError(
                f"encryption_key must be {_KEY_BYTES} raw bytes (AES-256), got {len(raw)} "
                "bytes; pass a str to give it as base64 or hex"
            )
        return raw
    if not isinstance(key, str):
        raise TypeError(f"encryption_key must be bytes or str, not {type(key).__name__}")
    text = key.strip()
    decoded: bytes | None = None
    if len(text) == 2 * _KEY_BYTES:
        try:
            decoded = bytes.fromhex(text)
        except ValueError:
            decoded = None
    if decoded is None:
        std = text.replace("-", "+").replace("_", "/")
        try:
            decoded = base64.b64decode(std + "=" * (-len(std) % 4), validate=True)
        except (binascii.Error, ValueError):
            decoded = None
    if decoded is None or len(decoded) != _KEY_BYTES:
        # Never echo the key itself.
        raise ValueError(
            f"encryption_key as a str must encode exactly {_KEY_BYTES} bytes, as base64 "
            "(standard or URL-safe, padding optional) or as 64 hex digits; generate one with "
            "`python -c 'import os, base64; print(base64.urlsafe_b64encode(os.urandom(32))"
            ".decode())'`"
        )
    return decoded


EncryptionKeys = bytes | str | Sequence[bytes | str] | Mapping[str, bytes | str]
"""What ``encryption_key=`` takes: one key, a sequence of keys, or a mapping of labels to keys
(oldest first: new values are written with the last)."""


def key_id(key: bytes | str) -> str:
    """The id an encrypted value records for ``key``: 8 hex digits derived from the key.

    Derived, not chosen, so that two processes can never disagree on which key an id means,
    and it reveals nothing about the key (a keyed hash of a fixed label).
    """
    return _key_id(_parse_key(key)).hex()


def _key_id(raw: bytes) -> bytes:
    return hmac.new(raw, b"threadline key id", hashlib.sha256).digest()[:_KEY_ID_BYTES]


def _parse_keys(keys: EncryptionKeys) -> list[tuple[str, bytes]]:
    """``[(label, raw key)]``, oldest first, from one key, a sequence or a mapping of keys."""
    pairs: list[tuple[str, Any]]  # each key is checked by _parse_key
    if isinstance(keys, (bytes, bytearray, memoryview, str)):
        pairs = [("", keys)]
    elif isinstance(keys, Mapping):
        pairs = [(str(label), k) for label, k in keys.items()]
    elif isinstance(keys, Sequence):
        pairs = [("", k) for k in keys]
    else:
        raise TypeError(
            "encryption_key must be a key (bytes or str), a list of keys or a mapping of labels"
            f" to keys (oldest first, the last encrypts new values), not {type(keys).__name__}"
        )
    if not pairs:
        raise ValueError("encryption_key is an empty collection: give at least one key")
    out: list[tuple[str, bytes]] = []
    seen: dict[bytes, str] = {}
    for label, k in pairs:
        raw = _parse_key(k)
        kid = _key_id(raw)
        if kid in seen:
            raise ValueError(
                f"encryption_key lists two keys with the same id {kid.hex()} (the same key"
                " twice?); give each key once"
            )
        seen[kid] = label
        out.append((label, raw))
    return out


def _import_zstd() -> Any:
    try:
        import zstandard
    except ImportError as exc:
        raise ImportError(
            "zstd compression needs the zstandard package: pip install threadline[zstd]"
        ) from exc
    return zstandard


def _make_aead(key: bytes) -> AESGCM:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as exc:
        raise ImportError(
            "encryption needs the cryptography package: pip install threadline[crypto]"
        ) from exc
    return AESGCM(key)


# --------------------------------------------------------------------------- serializer


class MsgpackSerializer:
    """The default :class:`Serializer`: MessagePack, a type registry, compression, AES-GCM.

    ``compression`` applies to bodies over 512 bytes, kept only when smaller: ``"zlib"`` (the
    default, from the standard library), ``"zstd"`` (faster and tighter, needs
    ``threadline[zstd]``) or None.
    ``encryption_key`` (32 raw bytes, or a str holding them as base64 / URL-safe base64 /
    64 hex digits) encrypts every value written with AES-256-GCM (needs ``threadline[crypto]``)
    and refuses to read unencrypted values unless ``allow_plaintext=True`` (for migrating).
    For key rotation it also takes a list of keys, or a mapping of labels to keys, oldest
    first: values are written with the last one and read with whichever key wrote them (each
    records its key's :func:`key_id`); :mod:`threadline.checkpoint.rekey` rewrites stored
    values with the newest key.
    :meth:`loads` reads compressed and uncompressed values whatever ``compression`` says.
    ``max_depth`` bounds how deeply values nest and ``max_decoded_bytes`` the size of one
    encoded value before compression, on write and on read (docs/security.md).
    Instances are safe to share between threads.
    """

    def __init__(
        self,
        *,
        registry: TypeRegistry | None = None,
        compression: Literal["zlib", "zstd"] | None = "zlib",
        encryption_key: EncryptionKeys | None = None,
        allow_plaintext: bool = False,
        max_depth: int = DEFAULT_MAX_DEPTH,
        max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
    ) -> None:
        if type(max_depth) is not int or not 1 <= max_depth <= _MAX_MAX_DEPTH:
            raise ValueError(
                f"max_depth must be an int from 1 to {_MAX_MAX_DEPTH} (deeper values exhaust"
                f" Python's stack in ordinary code that walks them), got {max_depth!r}"
            )
        if type(max_decoded_bytes) is not int or max_decoded_bytes < 1:
            raise ValueError(f"max_decoded_bytes must be a positive int, got {max_decoded_bytes!r}")
        self._max_depth = max_depth
        self._max_decoded_bytes = max_decoded_bytes
        if compression not in (None, "zlib", "zstd"):
            raise ValueError(
                f"compression must be 'zlib' (the default), 'zstd' or None, not {compression!r}"
            )
        self._registry = registry if registry is not None else default_registry
        self._zlib = compression == "zlib"
        self._zstd: Any = _import_zstd() if compression == "zstd" else None
        # key id -> (label, cipher); the last one encrypts new values
        self._keys: dict[bytes, tuple[str, AESGCM]] = {}
        self._aead: AESGCM | None = None
        self._write_key = b""
        if encryption_key is not None:
            for label, raw in _parse_keys(encryption_key):
                self._write_key = _key_id(raw)
                self._aead = _make_aead(raw)
                self._keys[self._write_key] = (label, self._aead)
        self._allow_plaintext = allow_plaintext
        self._local = threading.local()
        # type -> (ext code, class reference, encode) for unregistered Enums/dataclasses/models
        self._auto: dict[type, tuple[int, str, Callable[[Any], Any]]] = {}
        self._kind_decoders: dict[tuple[str, str], Callable[[Any], Any]] = {}
        self._encoders: dict[type, Callable[[Any], msgpack.ExtType]] = {
            tuple: lambda v: _ext(_EXT_TUPLE, self._pack(list(v))),
            set: lambda v: _ext(_EXT_SET, self._pack(list(v))),
            frozenset: lambda v: _ext(_EXT_FROZENSET, self._pack(list(v))),
            int: lambda v: _ext(_EXT_BIGINT, _encode_bigint(v)),
            dt.datetime: lambda v: _ext(_EXT_DATETIME, _encode_datetime(v)),
            dt.date: lambda v: _ext(_EXT_DATE, _DATE.pack(v.year, v.month, v.day)),
            dt.time: lambda v: _ext(_EXT_TIME, _encode_time(v)),
            dt.timedelta: lambda v: _ext(
                _EXT_TIMEDELTA, _TIMEDELTA.pack(v.days, v.seconds, v.microseconds)
            ),
            UUID: lambda v: _ext(_EXT_UUID, v.bytes),
            Decimal: lambda v: _ext(_EXT_DECIMAL, str(v).encode()),
        }
        self._decoders: dict[int, Callable[[bytes], Any]] = {
            _EXT_TUPLE: lambda b: tuple(self._unpack_list(b)),
            _EXT_SET: lambda b: set(self._unpack_list(b)),
            _EXT_FROZENSET: lambda b: frozenset(self._unpack_list(b)),
            _EXT_BIGINT: lambda b: int.from_bytes(b, "big", signed=True),
            _EXT_DATETIME: _decode_datetime,
            _EXT_DATE: _decode_date,
            _EXT_TIME: _decode_time,
            _EXT_TIMEDELTA: _decode_timedelta,
            _EXT_UUID: lambda b: UUID(bytes=b),
            _EXT_DECIMAL: lambda b: Decimal(b.decode("ascii")),
            _EXT_ENUM: partial(self._decode_kind, kind="enum"),
            _EXT_DATACLASS: partial(self._decode_kind, kind="dataclass"),
            _EXT_MODEL: partial(self._decode_kind, kind="model"),
            _EXT_REGISTERED: self._decode_registered,
        }

    @property
    def max_decoded_bytes(self) -> int:
        """The largest encoded value (before compression) this serializer writes and reads."""
        return self._max_decoded_bytes

    @property
    def registry(self) -> TypeRegistry:
        """The registry of types this serializer stores and loads beyond the built-in ones."""
        return self._registry

    # ----------------------------------------------------------------- dumps

    @property
    def encrypted(self) -> bool:
        """Whether values are written encrypted (then savers bind each one to its place)."""
        return self._aead is not None

    @property
    def key_ids(self) -> list[str]:
        """The :func:`key_id` of each key, oldest first; the last encrypts new values."""
        return [kid.hex() for kid in self._keys]

    def dumps(self, value: Any, key: str = "value", *, aad: bytes = b"") -> bytes:
        """Encode ``value`` as one frame. Raises :class:`SerializationError` naming the path
        (starting at ``key``) and the type of the first part that cannot be stored.

        ``aad``: with encryption, the place the ciphertext is bound to; :meth:`loads` must be
        given the same bytes."""
        return self.dumps_sized(value, key, aad=aad)[0]

    def dumps_sized(self, value: Any, key: str = "value", *, aad: bytes = b"") -> tuple[bytes, int]:
        """:meth:`dumps`, and the frame's size before compression and encryption."""
        try:
            frame = self._pack(value, frame=True)
        except (_Unencodable, ValueError, TypeError, OverflowError, RecursionError) as exc:
            raise self._dump_error(value, key, exc) from exc.__cause__ or exc
        if len(frame) > self._max_decoded_bytes + 1:
            raise SerializationError(
                f"cannot serialize {key}: it encodes to {len(frame) - 1} bytes, more than "
                f"max_decoded_bytes={self._max_decoded_bytes} of MsgpackSerializer allows "
                "reading back; store less, or raise max_decoded_bytes"
            )
        if len(frame) > self._max_depth and _count_containers(frame) > self._max_depth:
            depth = _depth_over(value, self._max_depth)
            if depth:
                raise SerializationError(self._deep_error(key))
        return self._seal(frame, aad), len(frame)

    def _deep_error(self, key: str) -> str:
        return (
            f"cannot serialize {key}: it is nested more than max_depth={self._max_depth} levels"
            " deep (lists, dicts, tuples, sets, dataclasses and models count), or contains a "
            "reference cycle; flatten it, or raise max_depth of MsgpackSerializer"
        )

    def _seal(self, frame: bytes, aad: bytes = b"") -> bytes:
        """Compress and encrypt a frame's body as configured."""
        compress = len(frame) > _COMPRESS_MIN_BYTES and (self._zlib or self._zstd is not None)
        if not compress and self._aead is None:
            return frame  # the common case: header byte + msgpack, one copy
        body: bytes | memoryview = memoryview(frame)[1:]
        header = FORMAT_VERSION
        if compress:
            if self._zlib:
                deflate = zlib.compressobj(_ZLIB_LEVEL, zlib.DEFLATED, _ZLIB_WBITS, _ZLIB_MEMLEVEL)
                packed, flag = deflate.compress(body) + deflate.flush(), _FLAG_ZLIB
            else:
                packed, flag = self._compressor().compress(body), _FLAG_ZSTD
            if len(packed) < len(body):
                body = packed
                header |= flag
        if self._aead is None:
            return bytes((header,)) + body
        return self._encrypt(header & ~_VERSION_MASK, body, aad)

    def _encrypt(self, flags: int, body: bytes | memoryview, aad: bytes) -> bytes:
        """An encrypted frame of ``body`` (compression ``flags`` kept), with the newest key."""
        assert self._aead is not None
        head = bytes((_ENCRYPTED_VERSION | _FLAG_ENCRYPTED | flags,)) + self._write_key
        nonce = os.urandom(_NONCE_BYTES)
        return head + nonce + self._aead.encrypt(nonce, body, head + aad)

    def _pack(self, value: Any, *, frame: bool = False) -> bytes:
        """Pack with this thread's packer for the current nesting depth.

        Packers are reused because a fresh packer's buffer grows anew on every call, and the
        page faults of that growth cost several times the packing itself for large values.
        One packer per depth keeps nested calls (extension payloads, an encode function that
        calls ``dumps``) from clobbering an outer packer's buffer.
        """
        try:
            state: list[Any] = self._local.state  # [depth in use, packer 1, packer 2, ...]
        except AttributeError:
            state = self._local.state = [0]
        outer: int = state[0]
        depth = outer + 1
        if depth > self._max_depth:  # depth 1 is the frame; each extension payload adds one
            raise _Unencodable("too deep")
        if depth == len(state):
            state.append(self._new_packer())
        packer = state[depth]
        state[0] = depth
        try:
            if frame:
                packer.pack(FORMAT_VERSION)  # the plain header byte is msgpack's fixint 1
            packer.pack(value)
            out: bytes = packer.bytes()
            packer.reset()
        except BaseException:
            del state[depth:]  # drop a half-written buffer (and any deeper packers)
            raise
        finally:
            state[0] = outer
        if len(out) > _RETAIN_PACKER_BYTES:
            state[depth] = self._new_packer()  # do not keep a huge buffer per thread
        return out

    def _new_packer(self) -> Any:
        return msgpack.Packer(
            default=self._default,
            use_bin_type=True,
            strict_types=True,
            autoreset=False,
            buf_size=4096,
        )

    def _default(self, obj: Any) -> msgpack.ExtType:
        """msgpack's hook for every object it does not pack natively."""
        cls = type(obj)
        encoder = self._encoders.get(cls)
        if encoder is not None:
            return encoder(obj)
        entry = self._registry._by_type.get(cls)
        if entry is not None:
            data = self._call_encode(entry, obj)
            payload = self._pack([entry.name, data])
            if entry.kind == "custom" and self._deeper_than_allowed(payload, data):
                raise _Unencodable("too deep")
            return _ext(_EXT_REGISTERED, payload)
        code, ref, encode = self._auto_for(cls)
        return _ext(code, self._pack([ref, encode(obj)]))

    @staticmethod
    def _call_encode(entry: _Entry, obj: Any) -> Any:
        if entry.kind != "custom":
            return entry.encode(obj)
        try:
            return entry.encode(obj)
        except Exception as exc:
            raise _Unencodable(
                f"the encode function registered for {entry.name!r} raised "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def _auto_for(self, cls: type) -> tuple[int, str, Callable[[Any], Any]]:
        found = self._auto.get(cls)
        if found is not None:
            return found
        kind = _kind_of(cls)
        if kind is None:
            raise _Unencodable(self._unsupported(cls))
        qualname, module_name = cls.__qualname__, cls.__module__
        word = _KIND_WORDS[kind]
        if _ref_of(cls) not in _BUILTIN_REFS:
            raise _Unencodable(
                f"{word} {_type_name(cls)} is not registered, so it could not be read back "
                "(loading never imports a class a stored value names). Name it in the graph's "
                "state schema (compile() registers the types the schema names) or register "
                f"it: {self._how_to_register(cls, auto=True)}"
            )
        target: Any = sys.modules.get(module_name)
        for part in qualname.split("."):
            target = getattr(target, part, None)
        if target is not cls:
            raise _Unencodable(
                f"{word} {_type_name(cls)} cannot be found again by importing "
                f"{module_name!r} and looking up {qualname!r}; register it under a stable "
                f"name: {self._how_to_register(cls, auto=True)}"
            )
        encode = _auto_handlers(cls, kind)[0]
        found = self._auto[cls] = (_KIND_CODES[kind], f"{module_name}:{qualname}", encode)
        return found

    def _how_to_register(self, cls: type, *, auto: bool) -> str:
        args = cls.__name__ if auto else f"{cls.__name__}, encode=..., decode=..."
        how = f"threadline.checkpoint.serde.register_type({args}, name=...)"
        if self._registry is not default_registry:
            how += " (or .register(...) on the TypeRegistry this serializer uses)"
        return how

    def _unsupported(self, cls: type) -> str:
        return (
            f"type {_type_name(cls)} is not supported. Register it with "
            f"{self._how_to_register(cls, auto=False)}, make it a dataclass, Enum or "
            "pydantic model, or convert it to supported data before storing it "
            "(values are never pickled)"
        )

    # ----------------------------------------------------------------- errors with a path

    def _dump_error(self, value: Any, key: str, exc: BaseException) -> SerializationError:
        if isinstance(exc, _Unencodable) and exc.reason == "too deep":
            return SerializationError(self._deep_error(key))
        try:
            found = self._find_problem(value, key, set(), 0)
        except RecursionError:
            found = None
        if found is not None:
            path, reason = found
            return SerializationError(f"cannot serialize {path}: {reason}")
        if isinstance(exc, _Unencodable):
            return SerializationError(f"cannot serialize {key}: {exc.reason}")
        if isinstance(exc, RecursionError) or "recursion limit" in str(exc):
            return SerializationError(
                f"cannot serialize {key}: it is nested too deeply or contains a reference cycle"
            )
        return SerializationError(f"cannot serialize {key}: {type(exc).__name__}: {exc}")

    def _find_problem(
        self, obj: Any, path: str, active: set[int], depth: int
    ) -> tuple[str, str] | None:
        """Walk ``obj`` the way :meth:`_default` encodes it; return the first bad part's path."""
        cls = type(obj)
        if cls is str:
            try:
                obj.encode()
            except UnicodeEncodeError:
                return path, "a str with unpaired surrogates cannot be stored as UTF-8"
            return None
        if cls in _PLAIN_TYPES or cls in _BYTES_LIKE:
            return None
        if depth > self._max_depth:
            return path, self._deep_error(path).partition(": ")[2]
        if id(obj) in active:
            return path, (
                f"reference cycle: this {_type_name(cls)} contains itself; checkpoint values "
                "must not be cyclic"
            )
        try:
            children = self._children(obj, cls)
        except _Unencodable as exc:
            return path, f"{exc.reason}"
        if not children:
            return None
        active.add(id(obj))
        try:
            for suffix, child in children:
                found = self._find_problem(child, path + suffix, active, depth + 1)
                if found is not None:
                    return found
        finally:
            active.discard(id(obj))
        return None

    def _children(self, obj: Any, cls: type) -> list[tuple[str, Any]]:
        if cls is list or cls is tuple:
            return [(f"[{i}]", item) for i, item in enumerate(obj)]
        if cls is dict:
            out: list[tuple[str, Any]] = []
            for i, (k, v) in enumerate(obj.items()):
                out.append((f"<key #{i}>", k))
                out.append((f"[{_short_repr(k)}]", v))
            return out
        if cls is set or cls is frozenset:
            return [(f"<item #{i}>", item) for i, item in enumerate(obj)]
        encoder = self._encoders.get(cls)
        if encoder is not None:
            encoder(obj)  # raises _Unencodable for e.g. an unsupported tzinfo
            return []
        entry = self._registry._by_type.get(cls)
        if entry is not None:
            if entry.kind == "custom":
                return [(f"<encoded as {entry.name!r}>", self._call_encode(entry, obj))]
            kind: _Kind = entry.kind
        else:
            self._auto_for(cls)  # raises _Unencodable with the reason
            kind = _kind_of(cls) or "custom"
        if kind == "dataclass":
            return [(f".{k}", v) for k, v in _dataclass_encode(obj).items()]
        if kind == "model":
            fields, _, extra = _model_encode(obj)
            return [(f".{k}", v) for k, v in {**fields, **(extra or {})}.items()]
        return []  # an Enum member is stored by name (Flag: int value)

    # ----------------------------------------------------------------- loads

    def loads(self, data: bytes, *, aad: bytes = b"") -> Any:
        """Decode one frame. Raises :class:`CorruptCheckpointError` for anything that is not
        a frame this serializer can read (never returns a wrong value, never raises anything
        else: stored rows are untrusted input).

        ``aad``: the place an encrypted value was bound to when written (see :meth:`dumps`);
        a ciphertext read at another place raises :class:`DecryptionError`."""
        return self.loads_sized(data, aad=aad)[0]

    # ------------------------------------------------------- LangGraph's typed API

    def dumps_typed(self, value: Any) -> tuple[str, bytes]:
        """LangGraph's ``SerializerProtocol.dumps_typed``: a ``(type tag, bytes)`` pair.

        ``None`` is ``("null", b"")``, ``bytes``/``bytearray`` travel as they are, anything
        else is ``("msgpack", frame)`` where the frame is :meth:`dumps`'s (threadline's
        format, not LangGraph's: it reads back with :meth:`loads_typed` of a threadline
        serializer only)."""
        if value is None:
            return "null", b""
        if type(value) is bytes:
            return "bytes", value
        if type(value) is bytearray:
            return "bytearray", bytes(value)
        return "msgpack", self.dumps(value)

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        """Read a pair written by :meth:`dumps_typed`, or a ``"json"`` pair of LangGraph's
        ``JsonPlusSerializer`` (see :mod:`._lgjson`: plain JSON, langchain-core messages and
        constructor envelopes of known or registered types). Never unpickles: a ``"pickle"``
        pair raises :class:`SerializationError`; a ``"msgpack"`` pair that is not a threadline
        frame (e.g. written by LangGraph) raises :class:`CorruptCheckpointError`."""
        try:
            tag, payload = data
        except (TypeError, ValueError):
            raise SerializationError(
                f"loads_typed() takes a (type tag, bytes) pair, got {_short_repr(data)}"
            ) from None
        if tag == "null":
            return None
        if tag == "bytes":
            return bytes(payload)
        if tag == "bytearray":
            return bytearray(payload)
        if tag == "msgpack":
            try:
                return self.loads(payload)
            except DecryptionError:
                raise
            except CorruptCheckpointError as exc:
                raise CorruptCheckpointError(
                    f"{exc} (a ('msgpack', ...) pair must be written by a threadline"
                    " serializer's dumps_typed(); values LangGraph's JsonPlusSerializer wrote"
                    " are not readable)"
                ) from exc
        if tag == "json":
            if self._aead is not None and not self._allow_plaintext:
                raise CorruptCheckpointError(
                    "refusing to read an unencrypted ('json', ...) value: this serializer"
                    " encrypts; pass allow_plaintext=True to read such values while migrating"
                )
            from ._lgjson import loads_json

            if len(payload) > self._max_decoded_bytes:
                raise CorruptCheckpointError(self._too_big(len(payload), self._max_decoded_bytes))
            return loads_json(self, bytes(payload), self._max_depth)
        if tag == "pickle":
            raise SerializationError(
                "refusing to unpickle a ('pickle', ...) value: threadline's serializer never"
                " uses pickle. Store supported types (register your classes with"
                " threadline.checkpoint.serde.register_type) instead"
            )
        if "+" in str(tag):
            raise SerializationError(
                f"cannot read a value tagged {tag!r}: it was encrypted by LangGraph's"
                " EncryptedSerializer; threadline encrypts inside the frame (MsgpackSerializer("
                "encryption_key=...)) and cannot decrypt it"
            )
        raise SerializationError(f"unknown serialization type tag {tag!r}")

    def loads_sized(
        self, data: bytes, max_bytes: int | None = None, *, aad: bytes = b""
    ) -> tuple[Any, int]:
        """:meth:`loads`, and an estimate of the memory the decoded value holds.

        ``max_bytes`` (e.g. the size recorded when the value was written) bounds the decoded
        body further than ``max_decoded_bytes``."""
        try:
            size = len(data)
            if (
                type(data) is bytes
                and size > 1
                and data[0] == FORMAT_VERSION  # the common case: plain, uncompressed
                and self._aead is None
                and size <= self._max_decoded_bytes
                and (max_bytes is None or size <= max_bytes + 1)
            ):
                whole: bytes | memoryview = data
                body: bytes | memoryview = memoryview(data)[1:]
            else:
                whole = body = self._open(data, max_bytes, aad)
                size = len(body)
            value = msgpack.unpackb(body, ext_hook=self._ext_hook, raw=False, strict_map_key=False)
            containers = _count_containers(whole) if size > self._max_depth else size
            if containers > self._max_depth:
                depth = _depth_over(value, self._max_depth)
                if depth:
                    raise CorruptCheckpointError(self._too_deep(depth))
            return value, 2 * size + 56 * containers
        except CorruptCheckpointError:
            raise
        except msgpack.StackError as exc:  # past msgpack's own limit (1024 levels)
            raise CorruptCheckpointError(self._too_deep("more than 1000")) from exc
        except BaseException as exc:  # nothing but our error leaves a decoder
            raise CorruptCheckpointError(
                f"stored bytes do not decode as a value: {type(exc).__name__}: {exc}"
            ) from exc

    def _open(self, data: Any, max_bytes: int | None, aad: bytes = b"") -> bytes | memoryview:
        """Check a frame's header; decrypt and decompress its body within the size limits."""
        if type(data) is not bytes:
            if not isinstance(data, (bytearray, memoryview)):
                raise CorruptCheckpointError(
                    f"a stored value must be bytes, not {type(data).__name__}"
                )
            data = bytes(data)
        header = self._check_header(data)
        body: bytes | memoryview = memoryview(data)[1:]
        if header & _VERSION_MASK == _ENCRYPTED_VERSION:
            body = self._decrypt(data, aad)
        else:
            self._check_unbound(header)
            if header & _FLAG_ENCRYPTED:
                body = self._decrypt_unbound(data)
        limit = self._max_decoded_bytes
        if max_bytes is not None and 0 <= max_bytes < limit:
            limit = max_bytes
        if header & _FLAG_ZSTD:
            return self._decompress(body, limit)
        if header & _FLAG_ZLIB:
            return _inflate(body, limit)
        if len(body) > limit:
            raise CorruptCheckpointError(self._too_big(len(body), limit))
        return body

    def _too_big(self, size: int | str, limit: int) -> str:
        return (
            f"the stored value decodes to {size} bytes, more than the {limit} bytes allowed"
            f" (recorded when it was written, or max_decoded_bytes={self._max_decoded_bytes}"
            " of MsgpackSerializer); the row was altered, or raise max_decoded_bytes"
        )

    def _too_deep(self, depth: int | str) -> str:
        return (
            f"the stored value is nested {depth} levels deep, more than max_depth="
            f"{self._max_depth} of MsgpackSerializer allows; the row was altered, or was "
            "written with a larger max_depth"
        )

    def _check_header(self, data: bytes) -> int:
        if not data:
            raise CorruptCheckpointError("cannot decode an empty value: a frame has a header")
        header = data[0]
        version = header & _VERSION_MASK
        known = version == FORMAT_VERSION or (
            version == _ENCRYPTED_VERSION and header & _FLAG_ENCRYPTED
        )
        if not known or header & _RESERVED_MASK:
            raise CorruptCheckpointError(
                f"unknown serialization format (header byte 0x{header:02x}, version {version}); "
                f"this threadline reads version {FORMAT_VERSION} (and {_ENCRYPTED_VERSION} for "
                "encrypted values). The value was written by a newer threadline, or is not a "
                "threadline value"
            )
        return header

    def _check_unbound(self, header: int) -> None:
        """Refuse a value that is not encrypted and bound, when this serializer encrypts."""
        if self._aead is None:
            if header & _FLAG_ENCRYPTED:
                raise CorruptCheckpointError(
                    "the value is encrypted and this serializer has no key: "
                    "pass encryption_key=... to MsgpackSerializer"
                )
        elif not self._allow_plaintext:
            what = (
                "is encrypted without being bound to its place (written by an older threadline)"
                if header & _FLAG_ENCRYPTED
                else "is not encrypted"
            )
            raise CorruptCheckpointError(
                f"the value {what} but this serializer has an encryption key, so it refuses to"
                " read it; pass allow_plaintext=True to read such values while migrating them,"
                " and re-encrypt them with threadline.checkpoint.rekey (--migrate)"
            )

    def _decrypt(self, frame: bytes, aad: bytes) -> bytes:
        from cryptography.exceptions import InvalidTag

        if not self._keys:
            raise CorruptCheckpointError(
                "the value is encrypted and this serializer has no key: "
                "pass encryption_key=... to MsgpackSerializer"
            )
        if len(frame) < _SEALED_HEAD + _NONCE_BYTES + _TAG_BYTES:
            raise DecryptionError("the encrypted value is truncated")
        kid = frame[1:_SEALED_HEAD]
        found = self._keys.get(kid)
        if found is None:
            raise DecryptionError(
                f"the value is encrypted with key {kid.hex()}, which is not among this"
                f" serializer's keys ({', '.join(self.key_ids)}): a wrong encryption key? Add"
                " the key that wrote it to encryption_key=[...] (oldest first, newest last)"
            )
        nonce = frame[_SEALED_HEAD : _SEALED_HEAD + _NONCE_BYTES]
        try:
            return found[1].decrypt(
                nonce, frame[_SEALED_HEAD + _NONCE_BYTES :], frame[:_SEALED_HEAD] + aad
            )
        except InvalidTag:
            raise DecryptionError(
                f"the encrypted value (key {kid.hex()}) does not authenticate at this place:"
                " its bytes were altered, or it was copied here from another row, thread,"
                " channel or version"
            ) from None

    def _decrypt_unbound(self, frame: bytes) -> bytes:
        """A version-1 encrypted frame: authenticated with its header byte only, no key id."""
        from cryptography.exceptions import InvalidTag

        if len(frame) < 1 + _NONCE_BYTES + _TAG_BYTES:
            raise DecryptionError("the encrypted value is truncated")
        nonce = frame[1 : 1 + _NONCE_BYTES]
        for _, aead in reversed(self._keys.values()):
            try:
                return aead.decrypt(nonce, frame[1 + _NONCE_BYTES :], frame[:1])
            except InvalidTag:
                continue
        raise DecryptionError(
            "cannot decrypt the value: wrong encryption key, or the stored bytes were altered"
        )

    def key_id_of(self, data: bytes) -> str | None:
        """The :func:`key_id` a stored value is encrypted with; None if not encrypted and
        bound (plaintext, or encrypted by a threadline before binding)."""
        if len(data) >= _SEALED_HEAD and data[0] & _VERSION_MASK == _ENCRYPTED_VERSION:
            return bytes(data[1:_SEALED_HEAD]).hex()
        return None

    def reseal(
        self, data: bytes, aad: bytes, *, new_aad: bytes | None = None, migrate: bool = False
    ) -> bytes | None:
        """Re-encrypt a stored value with the newest key (and bound to ``new_aad`` if given),
        without decoding it. None when there is nothing to do: already under the newest key at
        the same place, or not encrypted and bound and ``migrate`` is false (then the value is
        left as it is). ``migrate=True`` encrypts such values (plaintext, or encrypted before
        binding), which needs ``allow_plaintext=True`` to read them."""
        if self._aead is None:
            raise ValueError("reseal() needs a serializer with an encryption_key")
        header = self._check_header(data)
        target = aad if new_aad is None else new_aad
        if header & _VERSION_MASK == _ENCRYPTED_VERSION:
            if new_aad is None and data[1:_SEALED_HEAD] == self._write_key:
                return None
            body = self._decrypt(bytes(data), aad)
        elif not migrate:
            return None
        else:
            self._check_unbound(header)
            body = self._decrypt_unbound(bytes(data)) if header & _FLAG_ENCRYPTED else data[1:]
        return self._encrypt(header & (_FLAG_ZLIB | _FLAG_ZSTD), body, target)

    def _compressor(self) -> Any:
        compressor = getattr(self._local, "compressor", None)
        if compressor is None:
            compressor = self._local.compressor = self._zstd.ZstdCompressor(level=_ZSTD_LEVEL)
        return compressor

    def _decompress(self, body: bytes | memoryview, limit: int) -> bytes:
        """Inflate a zstd frame: only one that records its size, within ``limit``."""
        decompressor = getattr(self._local, "decompressor", None)
        zstd = self._zstd if self._zstd is not None else _import_zstd()
        if decompressor is None:
            decompressor = self._local.decompressor = zstd.ZstdDecompressor()
        try:
            size = zstd.frame_content_size(body)
        except Exception as exc:
            raise CorruptCheckpointError(f"the compressed value is malformed: {exc}") from exc
        if size < 0:  # our writer always records it; a frame without is not ours
            raise CorruptCheckpointError("the compressed value does not record its size")
        if size > limit:
            raise CorruptCheckpointError(self._too_big(size, limit))
        try:
            out: bytes = decompressor.decompress(body, max_output_size=size)
        except Exception as exc:
            raise CorruptCheckpointError(
                f"the compressed value does not decompress: {exc}"
            ) from exc
        if len(out) != size:
            raise CorruptCheckpointError("the compressed value does not match its recorded size")
        return out

    def _ext_hook(self, code: int, data: bytes) -> Any:
        decoder = self._decoders.get(code)
        if decoder is None:
            raise CorruptCheckpointError(f"unknown extension type code {code} in stored value")
        return decoder(data)

    def _unpack(self, data: bytes) -> Any:
        """Unpack an extension's payload, one level deeper than its container.

        The depth is per thread and not reset by a nested :meth:`loads` (a decode function
        that calls it): the C stack is one, however the calls nest."""
        local = self._local
        depth = getattr(local, "ext_depth", 0) + 1
        if depth > self._max_depth:
            raise CorruptCheckpointError(self._too_deep(f"more than {self._max_depth}"))
        local.ext_depth = depth
        try:
            if depth <= _INLINE_EXT_DEPTH:
                return msgpack.unpackb(
                    data, ext_hook=self._ext_hook, raw=False, strict_map_key=False
                )
            return _unpack_on_heap(data, self._ext_hook)
        finally:
            local.ext_depth = depth - 1

    def _unpack_list(self, data: bytes) -> list[Any]:
        items = self._unpack(data)
        if type(items) is not list:
            raise CorruptCheckpointError("malformed stored collection")
        return items

    def _unpack_pair(self, data: bytes, what: str) -> tuple[Any, Any]:
        items = self._unpack(data)
        if type(items) is not list or len(items) != 2 or type(items[0]) is not str:
            raise CorruptCheckpointError(f"malformed stored {what}")
        return items[0], items[1]

    def _decode_kind(self, data: bytes, kind: _Kind) -> Any:
        ref, payload = self._unpack_pair(data, _KIND_WORDS[kind])
        decode = self._kind_decoders.get((kind, ref))
        if decode is None:
            cls = self._resolve_class(ref, kind)
            decode = self._kind_decoders[(kind, ref)] = _auto_handlers(cls, kind)[1]
        return decode(payload)

    def _decode_registered(self, data: bytes) -> Any:
        name, payload = self._unpack_pair(data, "registered type")
        entry = self._registry._by_name.get(name)
        if entry is None:
            raise CorruptCheckpointError(
                f"the stored value uses the registered type name {name!r}, which is not "
                "registered here; call threadline.checkpoint.serde.register_type(...) for it "
                "(with the same name) before loading"
            )
        if entry.kind != "custom":
            return entry.decode(payload)
        if self._deeper_than_allowed(data, payload):
            raise CorruptCheckpointError(self._too_deep(f"more than {self._max_depth}"))
        try:
            return entry.decode(payload)
        except CorruptCheckpointError:
            raise
        except Exception as exc:
            raise CorruptCheckpointError(
                f"the decode function registered for {name!r} raised {type(exc).__name__}: {exc}"
            ) from exc

    def _deeper_than_allowed(self, packed: bytes, data: Any) -> bool:
        """Whether a registered type's encoded ``data`` (packed as ``packed``) nests too deeply:
        the depth walk sees such a value as a leaf, so its data is checked on its own."""
        limit = self._max_depth
        return (
            len(packed) > limit
            and _count_containers(packed) > limit
            and _depth_over(data, limit) > 0
        )

    def _resolve_class(self, ref: str, kind: _Kind) -> type:
        """The class a stored reference names: a registered one or a built-in one, never
        anything imported because the row says so."""
        word = _KIND_WORDS[kind]
        entry = self._registry._by_ref.get(ref)
        if entry is not None:
            target: Any = entry.cls
        elif ref in _BUILTIN_REFS:
            module_name, _, qualname = ref.partition(":")
            try:
                target = importlib.import_module(module_name)  # a fixed module of ours
            except ImportError as exc:
                raise CorruptCheckpointError(
                    f"the stored value holds a {ref.replace(':', '.')}, and {module_name!r}"
                    f" cannot be imported ({exc}); install it"
                ) from exc
            for part in qualname.split("."):
                target = getattr(target, part, None)
        else:
            shown = ref.replace(":", ".", 1) if len(ref) <= 200 else ref[:200] + "..."
            raise CorruptCheckpointError(
                f"the stored value references {word} {shown!r}, which is not registered; "
                "loading never imports a class a stored value names. Register it with "
                "threadline.checkpoint.serde.register_type(...) (or name it in the graph's "
                "state schema) before loading"
            )
        if not isinstance(target, type) or _kind_of(target) != kind:
            raise CorruptCheckpointError(
                f"the stored value references {ref!r} as a {word}, but it is not one; "
                "refusing to use it"
            )
        return target


def _inflate(body: bytes | memoryview, limit: int) -> bytes:
    """zlib-decompress at most ``limit`` bytes: a bomb is refused before it is allocated."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise CorruptCheckpointError(f"the compressed value does not decompress: {exc}") from exc
    if len(out) > limit or inflater.unconsumed_tail:
        raise CorruptCheckpointError(
            f"the stored value decodes to more than the {limit} bytes allowed (recorded when it "
            "was written, or max_decoded_bytes of MsgpackSerializer); the row was altered, or "
            "raise max_decoded_bytes"
        )
    if not inflater.eof:
        raise CorruptCheckpointError("the compressed value is truncated")
    return out


def _unpack_on_heap(data: bytes, ext_hook: Callable[[int, bytes], Any]) -> Any:
    """``msgpack.unpackb`` with the parser's stack on the heap (an Unpacker object's)."""
    unpacker = msgpack.Unpacker(
        ext_hook=ext_hook, raw=False, strict_map_key=False, max_buffer_size=max(len(data), 1)
    )
    unpacker.feed(data)
    try:
        value = unpacker.unpack()
    except msgpack.OutOfData:
        raise CorruptCheckpointError("a stored extension payload is truncated") from None
    if unpacker.tell() != len(data):
        raise CorruptCheckpointError("a stored extension payload has extra bytes")
    return value


def _count_containers(body: bytes | memoryview) -> int:
    """How many bytes of ``body`` could start a container: at least its nesting depth."""
    data = body if type(body) is bytes else bytes(body)
    return data.translate(_CONTAINER_TABLE).count(1)


def _depth_over(value: Any, limit: int) -> int:
    """0 if ``value`` nests at most ``limit`` levels, else a depth past ``limit`` it reaches.

    Iterative (any depth), and cheap on wide values: a container's children are classified
    with ``map(type, ...)`` in C, and only the ones that hold more are visited.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    leaves = _LEAVES
    while stack:
        obj, depth = stack.pop()
        children = _children_of(obj)
        if children is None:
            continue
        if depth > limit:
            return depth
        if set(map(type, children)) <= leaves:
            continue
        for child in children:
            cls = type(child)
            if cls in leaves:
                continue
            # a tuple or dict of leaves (a pair, a small record) is the common inner node
            if cls is tuple and set(map(type, child)) <= leaves:
                if depth >= limit:
                    return depth + 1
                continue
            stack.append((child, depth + 1))
    return 0


def _children_of(obj: Any) -> list[Any] | None:
    """The values ``obj`` holds, as the serializer stores them; None for a leaf."""
    cls = type(obj)
    if cls is list or cls is tuple or cls is set or cls is frozenset:
        return list(obj)
    if cls is dict:
        return [*obj.keys(), *obj.values()]
    if cls in _LEAVES or isinstance(obj, enum.Enum):
        return None
    kind = _kind_of(cls)
    if kind == "dataclass":
        return list(_dataclass_encode(obj).values())
    if kind == "model":
        fields, _, extra = _model_encode(obj)
        return [*fields.values(), *(extra or {}).values()]
    return None  # a registered custom type: its encoded data is checked as it is packed


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."

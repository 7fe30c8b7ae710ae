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

    byte 0   header: bits 0-3 format version (1), bit 4 zstd-compressed, bit 5 encrypted,
             bit 6 zlib-compressed, bit 7 reserved (0)
    rest     the msgpack body, compressed when bit 4 or 6 is set. When bit 5 is set the
             (possibly compressed) body is stored as a 12-byte random nonce followed by its
             AES-256-GCM ciphertext and 16-byte tag, authenticated with the header byte as
             associated data.

Dataclasses, Enums and pydantic models are stored by class reference and, on load, imported
and used only if the imported class really is a dataclass / Enum / pydantic model. Classes
defined inside functions, and any other type, must be registered with :func:`register_type`.
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
import importlib
import os
import struct
import sys
import threading
import zlib
from collections.abc import Callable
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol, runtime_checkable
from uuid import UUID
from zoneinfo import ZoneInfo

import msgpack

from ..errors import CorruptCheckpointError, SerializationError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "FORMAT_VERSION",
    "MsgpackSerializer",
    "Serializer",
    "TypeRegistry",
    "default_registry",
    "register_type",
]

FORMAT_VERSION = 1
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
# Types with a built-in encoding: registering them is refused.
_BUILTIN_TYPES: frozenset[type] = (
    _PLAIN_TYPES
    | _BYTES_LIKE
    | {
        list,
        dict,
        tuple,
        set,
        frozenset,
        dt.datetime,
        dt.date,
        dt.time,
        dt.timedelta,
        UUID,
        Decimal,
    }
)

_Kind = Literal["custom", "enum", "dataclass", "model"]
_KIND_CODES: dict[str, int] = {"enum": _EXT_ENUM, "dataclass": _EXT_DATACLASS, "model": _EXT_MODEL}
_KIND_WORDS: dict[str, str] = {"enum": "Enum", "dataclass": "dataclass", "model": "pydantic model"}
_MAX_WALK_DEPTH = 520  # just past msgpack's own nesting limit (511)


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
        entry = _Entry(cls, name, kind, encode, decode)
        self._by_type[cls] = entry
        self._by_name[name] = entry


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
    :meth:`loads` reads compressed and uncompressed values whatever ``compression`` says.
    Instances are safe to share between threads.
    """

    def __init__(
        self,
        *,
        registry: TypeRegistry | None = None,
        compression: Literal["zlib", "zstd"] | None = "zlib",
        encryption_key: bytes | str | None = None,
        allow_plaintext: bool = False,
    ) -> None:
        if compression not in (None, "zlib", "zstd"):
            raise ValueError(
                f"compression must be 'zlib' (the default), 'zstd' or None, not {compression!r}"
            )
        self._registry = registry if registry is not None else default_registry
        self._zlib = compression == "zlib"
        self._zstd: Any = _import_zstd() if compression == "zstd" else None
        self._aead: AESGCM | None = (
            _make_aead(_parse_key(encryption_key)) if encryption_key is not None else None
        )
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
    def encrypted(self) -> bool:
        """Whether values are written encrypted (so nothing should also be kept in the clear)."""
        return self._aead is not None

    # ----------------------------------------------------------------- dumps

    def dumps(self, value: Any, key: str = "value") -> bytes:
        """Encode ``value`` as one frame. Raises :class:`SerializationError` naming the path
        (starting at ``key``) and the type of the first part that cannot be stored."""
        return self.dumps_sized(value, key)[0]

    def dumps_sized(self, value: Any, key: str = "value") -> tuple[bytes, int]:
        """:meth:`dumps`, and the frame's size before compression and encryption."""
        try:
            frame = self._pack(value, frame=True)
        except (_Unencodable, ValueError, TypeError, OverflowError, RecursionError) as exc:
            raise self._dump_error(value, key, exc) from exc.__cause__ or exc
        return self._seal(frame), len(frame)

    def _seal(self, frame: bytes) -> bytes:
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
        head = bytes((header | _FLAG_ENCRYPTED,))
        nonce = os.urandom(_NONCE_BYTES)
        return head + nonce + self._aead.encrypt(nonce, body, head)

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
            return _ext(_EXT_REGISTERED, self._pack([entry.name, data]))
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
        if "<locals>" in qualname:
            raise _Unencodable(
                f"{word} {_type_name(cls)} is defined inside a function, so it cannot be "
                f"imported when the value is loaded; register it under a stable name: "
                f"{self._how_to_register(cls, auto=True)}"
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
        if depth > _MAX_WALK_DEPTH:
            return path, "the value is nested too deeply (or contains a reference cycle)"
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

    def loads(self, data: bytes) -> Any:
        """Decode one frame. Raises :class:`CorruptCheckpointError` for anything that is not
        a frame this serializer can read (never returns a wrong value)."""
        if not data:
            raise CorruptCheckpointError("cannot decode an empty value: a frame has a header")
        header = data[0]
        version = header & _VERSION_MASK
        if version != FORMAT_VERSION or header & _RESERVED_MASK:
            raise CorruptCheckpointError(
                f"unknown serialization format (header byte 0x{header:02x}, version {version}); "
                f"this threadline reads version {FORMAT_VERSION}. The value was written by a "
                "newer threadline, or is not a threadline value"
            )
        body: bytes | memoryview = memoryview(data)[1:]
        if header & _FLAG_ENCRYPTED:
            if self._aead is None:
                raise CorruptCheckpointError(
                    "the value is encrypted and this serializer has no key: "
                    "pass encryption_key=... to MsgpackSerializer"
                )
            body = self._decrypt(bytes(data))
        elif self._aead is not None and not self._allow_plaintext:
            raise CorruptCheckpointError(
                "the value is not encrypted but this serializer has an encryption key, so it "
                "refuses to read it; pass allow_plaintext=True to read unencrypted values while "
                "migrating them"
            )
        if header & _FLAG_ZSTD:
            body = self._decompress(body)
        elif header & _FLAG_ZLIB:
            try:
                body = zlib.decompress(body)
            except zlib.error as exc:
                raise CorruptCheckpointError(
                    f"the compressed value does not decompress: {exc}"
                ) from exc
        try:
            return msgpack.unpackb(body, ext_hook=self._ext_hook, raw=False, strict_map_key=False)
        except CorruptCheckpointError:
            raise
        except Exception as exc:
            raise CorruptCheckpointError(
                f"stored bytes do not decode as a value: {type(exc).__name__}: {exc}"
            ) from exc

    def _decrypt(self, frame: bytes) -> bytes:
        assert self._aead is not None
        from cryptography.exceptions import InvalidTag

        if len(frame) < 1 + _NONCE_BYTES + _TAG_BYTES:
            raise CorruptCheckpointError("the encrypted value is truncated")
        nonce = frame[1 : 1 + _NONCE_BYTES]
        try:
            return self._aead.decrypt(nonce, frame[1 + _NONCE_BYTES :], frame[:1])
        except InvalidTag:
            raise CorruptCheckpointError(
                "cannot decrypt the value: wrong encryption key, or the stored bytes were altered"
            ) from None

    def _compressor(self) -> Any:
        compressor = getattr(self._local, "compressor", None)
        if compressor is None:
            compressor = self._local.compressor = self._zstd.ZstdCompressor(level=_ZSTD_LEVEL)
        return compressor

    def _decompress(self, body: bytes | memoryview) -> bytes:
        decompressor = getattr(self._local, "decompressor", None)
        if decompressor is None:
            zstd = self._zstd if self._zstd is not None else _import_zstd()
            decompressor = self._local.decompressor = zstd.ZstdDecompressor()
        try:
            return decompressor.decompress(body)  # type: ignore[no-any-return]
        except Exception as exc:
            raise CorruptCheckpointError(
                f"the compressed value does not decompress: {exc}"
            ) from exc

    def _ext_hook(self, code: int, data: bytes) -> Any:
        decoder = self._decoders.get(code)
        if decoder is None:
            raise CorruptCheckpointError(f"unknown extension type code {code} in stored value")
        return decoder(data)

    def _unpack(self, data: bytes) -> Any:
        return msgpack.unpackb(data, ext_hook=self._ext_hook, raw=False, strict_map_key=False)

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
            cls = self._import_class(ref, kind)
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
        try:
            return entry.decode(payload)
        except CorruptCheckpointError:
            raise
        except Exception as exc:
            raise CorruptCheckpointError(
                f"the decode function registered for {name!r} raised {type(exc).__name__}: {exc}"
            ) from exc

    def _import_class(self, ref: str, kind: _Kind) -> type:
        word = _KIND_WORDS[kind]
        module_name, sep, qualname = ref.partition(":")
        if not sep or not module_name or not qualname or "<locals>" in qualname:
            raise CorruptCheckpointError(f"malformed class reference {ref!r} in stored value")
        shown = f"{module_name}.{qualname}"
        try:
            target: Any = importlib.import_module(module_name)
        except Exception as exc:
            raise CorruptCheckpointError(
                f"the stored value references {word} {shown}, but module {module_name!r} "
                f"cannot be imported ({type(exc).__name__}: {exc})"
            ) from exc
        for part in qualname.split("."):
            target = getattr(target, part, None)
            if target is not None and not isinstance(target, type):
                raise CorruptCheckpointError(
                    f"the stored value references {shown} as a {word}, but it is not a class; "
                    "refusing to use it"
                )
            if target is None:
                raise CorruptCheckpointError(
                    f"the stored value references {word} {shown}, which does not exist "
                    "(renamed or removed?); restore it, or load with the code that wrote it"
                )
        if _kind_of(target) != kind:
            raise CorruptCheckpointError(
                f"the stored value references {shown} as a {word}, but it is not one; "
                "refusing to use it"
            )
        found: type = target
        return found


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."

"""Fuzzing the decoder with crafted bytes: it returns a value or raises CorruptCheckpointError,
and nothing else, within bounded time and memory (docs/security.md).

Inputs: random frames, valid frames mutated (bytes flipped, cut, spliced), and structured
msgpack built from every extension code with random payloads, compressed or not. A deep or
huge input must be refused cheaply, so each example also runs under a memory bound.
"""

from __future__ import annotations

import tracemalloc
import zlib
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from threadline.checkpoint import serde
from threadline.checkpoint.serde import MsgpackSerializer
from threadline.errors import CorruptCheckpointError

SERIALIZERS = [MsgpackSerializer(max_decoded_bytes=1 << 20)]
try:
    import zstandard

    SERIALIZERS.append(MsgpackSerializer(compression="zstd", max_decoded_bytes=1 << 20))
except ImportError:  # pragma: no cover - the zstd extra is optional
    zstandard = None

PEAK_BYTES = 48 << 20  # what one decode may allocate: the 1 MiB cap, times Python's overhead
FUZZ = settings(
    max_examples=100,
    deadline=2000,  # ms: a hang or a quadratic blow-up fails; a slow machine does not
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,  # the same inputs on every run: CI failures reproduce
)

# ---------------------------------------------------------------------- strategies

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.binary(max_size=20),
)


def _ext(children: Any) -> Any:
    code = st.integers(min_value=0, max_value=20)
    payload = st.one_of(
        st.binary(max_size=30),
        children.map(lambda v: msgpack.packb(v, default=_as_ext)),
        st.tuples(st.text(max_size=30), children).map(
            lambda p: msgpack.packb(list(p), default=_as_ext)
        ),
    )
    return st.builds(msgpack.ExtType, code, payload)


def _as_ext(value: Any) -> Any:
    raise TypeError(value)


msgpack_values = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=5), children, max_size=4),
        _ext(children),
    ),
    max_leaves=30,
)


@st.composite
def crafted_frames(draw: st.DrawFn) -> bytes:
    body = msgpack.packb(draw(msgpack_values))
    header = draw(
        st.sampled_from([0x01, 0x01, 0x41, 0x11, 0x21, 0x81, 0x02, draw(st.integers(0, 255))])
    )
    if header == 0x41:
        body = zlib.compress(body * draw(st.integers(1, 50)))
    elif header == 0x11 and zstandard is not None:
        body = zstandard.ZstdCompressor().compress(body)
    return bytes((header,)) + body


valid_values = st.recursive(
    leaves | st.integers() | st.tuples(leaves) | st.frozensets(st.integers(), max_size=3),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=5), children, max_size=4)
        | st.tuples(children, children)
    ),
    max_leaves=25,
)


@st.composite
def mutated_frames(draw: st.DrawFn) -> bytes:
    s = draw(st.sampled_from(SERIALIZERS))
    data = bytearray(s.dumps(draw(valid_values)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "splice"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            data[at:at] = draw(crafted_frames())[1:]
    return bytes(data)


# ---------------------------------------------------------------------- the property


def check(data: bytes) -> None:
    for s in SERIALIZERS:
        tracemalloc.start()
        try:
            s.loads(data)
        except CorruptCheckpointError:
            pass
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        assert peak < PEAK_BYTES, (peak, data[:80])


@FUZZ
@given(st.binary(max_size=200).map(lambda b: b"\x01" + b))
def test_random_bodies(data: bytes) -> None:
    check(data)


@FUZZ
@given(crafted_frames())
def test_structured_frames(data: bytes) -> None:
    check(data)


@FUZZ
@given(mutated_frames())
def test_mutated_frames(data: bytes) -> None:
    check(data)


@pytest.mark.parametrize("depth", [50, 101, 600, 1100, 20_000])
@pytest.mark.parametrize("opener", [b"\x91", b"\x81\xa1k", b"\xdc\x00\x01", b"\xc7\x02\x01\x91"])
def test_deep_openers_are_refused_cheaply(depth: int, opener: bytes) -> None:
    # \xc7\x02\x01\x91: an ext8 header claiming 2 bytes, then an array: payloads that lie
    check(b"\x01" + opener * depth + b"\xc0")


def test_zlib_frames_inflating_past_the_cap() -> None:
    header = bytes((serde.FORMAT_VERSION | serde._FLAG_ZLIB,))
    check(header + zlib.compress(msgpack.packb(b"\x00" * (8 << 20)), 9))
    check(header + zlib.compress(b"\x91" * (4 << 20), 9))

"""``stream_mode=``: which modes a run streams, and whether chunks come as ``(mode, chunk)``.

As in LangGraph 1.2: one mode name yields bare chunks, a list of names yields ``(mode,
chunk)`` pairs, and a tuple of names streams those modes but yields bare chunks (LangGraph
pairs chunks only for a list).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["STREAM_MODES", "parse_stream_mode"]

STREAM_MODES = ("values", "updates", "checkpoints", "tasks", "debug", "custom", "messages")


def parse_stream_mode(stream_mode: Any) -> tuple[tuple[str, ...], bool]:
    """``(modes, single)``: the modes to stream, and whether chunks come without the mode."""
    if isinstance(stream_mode, str):
        modes: tuple[str, ...] = (stream_mode,)
    elif isinstance(stream_mode, Sequence):
        modes = tuple(stream_mode)
    else:
        raise TypeError(
            "stream_mode must be a mode name or a list of mode names (e.g. 'values' or"
            f" ['values', 'updates']), got {type(stream_mode).__name__} {stream_mode!r}"
        )
    for mode in modes:
        if mode not in STREAM_MODES:
            raise ValueError(f"unknown stream_mode {mode!r}; choose from {', '.join(STREAM_MODES)}")
    return modes, not isinstance(stream_mode, list)

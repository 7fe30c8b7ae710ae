"""Caches for node results: ``compile(cache=InMemoryCache())`` with ``CachePolicy`` nodes."""

from .base import BaseCache
from .memory import InMemoryCache

__all__ = ["BaseCache", "InMemoryCache"]

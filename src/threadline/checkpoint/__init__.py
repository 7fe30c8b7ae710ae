"""Checkpointers: where threads, checkpoints and pending writes are stored."""

from .base import BaseCheckpointSaver
from .types import Checkpoint, CheckpointTuple, PendingWrite, ThreadInfo
from .url import from_url

__all__ = [
    "BaseCheckpointSaver",
    "Checkpoint",
    "CheckpointTuple",
    "PendingWrite",
    "ThreadInfo",
    "from_url",
]

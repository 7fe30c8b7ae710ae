"""threadline: graph workflows whose state is checkpointed after every step."""

__version__ = "0.1.0"

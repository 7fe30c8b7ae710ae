"""The prebuilt agent is built on langchain-core: say which extra to install when it is missing."""

from __future__ import annotations

try:
    import langchain_core  # noqa: F401
except ImportError as exc:  # pragma: no cover - tested in a subprocess
    raise ImportError(
        "threadline.prebuilt needs langchain-core (chat models, tools, messages):"
        " pip install 'threadline[langchain]'"
    ) from exc

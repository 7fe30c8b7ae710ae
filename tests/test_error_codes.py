"""Every error class has its own stable ``code`` and an ``http_status`` hint, listed in
docs/errors.md: a new class without them (or missing from the table) fails here."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from threadline import errors

DOC = Path(__file__).parent.parent / "docs" / "errors.md"


def error_classes() -> list[type[BaseException]]:
    """The exception classes ``threadline.errors`` defines or exports."""
    found = {
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, BaseException) and cls.__module__ == errors.__name__
    }
    found |= {
        cls
        for name in errors.__all__
        if inspect.isclass(cls := getattr(errors, name)) and issubclass(cls, BaseException)
    }
    return sorted(found, key=lambda c: c.__name__)


def test_the_walk_finds_the_classes() -> None:
    names = {c.__name__ for c in error_classes()}
    assert {"ThreadlineError", "ThreadNotFoundError", "NodeTimeoutError"} <= names
    assert len(names) >= 25


def test_every_class_has_its_own_unique_code_and_an_int_status() -> None:
    codes: dict[str, str] = {}
    for cls in error_classes():
        # Own attributes, not inherited: a subclass says what it is, not what its base is.
        assert "code" in vars(cls), f"{cls.__name__} has no code of its own"
        assert "http_status" in vars(cls), f"{cls.__name__} has no http_status of its own"
        code, status = vars(cls)["code"], vars(cls)["http_status"]
        assert isinstance(code, str) and re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)*", code), code
        assert code not in codes, f"{cls.__name__} and {codes[code]} share the code {code!r}"
        codes[code] = cls.__name__
        assert type(status) is int and status in (404, 409, 422, 500), (cls.__name__, status)


def test_statuses_follow_the_rule() -> None:
    assert errors.ThreadNotFoundError.http_status == 404
    assert errors.CheckpointNotFoundError.http_status == 404
    assert errors.CheckpointConflictError.http_status == 409
    assert errors.ThreadBusyError.http_status == 409
    assert errors.InvalidArgumentError.http_status == 422
    assert errors.InvalidNamespaceError.http_status == 422
    assert errors.CorruptCheckpointError.http_status == 500
    assert errors.ThreadNotFoundError("x").code == "thread_not_found"  # instances see it too


def test_docs_table_lists_every_class_with_its_code_and_status() -> None:
    rows = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and cells[0] and cells[0][0].isupper() and cells[2].isdigit():
            rows[cells[0]] = (cells[1], int(cells[2]))
    expected = {c.__name__: (vars(c)["code"], vars(c)["http_status"]) for c in error_classes()}
    assert rows == expected

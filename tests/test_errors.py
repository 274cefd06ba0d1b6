"""The error codes: one class per code, and the table in docs/protocol.md lists them all."""

from __future__ import annotations

import re
from pathlib import Path

from secsync import errors

PROTOCOL = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"


def error_classes() -> list[type[errors.SecsyncError]]:
    """Every class of the hierarchy, as defined in secsync/errors.py."""
    found: list[type[errors.SecsyncError]] = []
    stack: list[type[errors.SecsyncError]] = [errors.SecsyncError]
    while stack:
        cls = stack.pop()
        if cls not in found:
            found.append(cls)
            stack.extend(cls.__subclasses__())
    return [cls for cls in found if cls.__module__ == errors.__name__]


def test_no_two_error_classes_share_a_code() -> None:
    by_code: dict[int, list[str]] = {}
    for cls in error_classes():
        assert "code" in vars(cls), f"{cls.__name__} inherits its code"
        by_code.setdefault(cls.code, []).append(cls.__name__)
    shared = {code: names for code, names in by_code.items() if len(names) > 1}
    assert shared == {}


def test_every_error_class_is_a_name_of_the_errors_module() -> None:
    assert {cls.__name__ for cls in error_classes()} == {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, errors.SecsyncError)
    }


def test_the_protocol_table_lists_every_code() -> None:
    section = PROTOCOL.read_text(encoding="utf-8").split("## 7. Errors", 1)[1].split("\n## ")[0]
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \|", section, re.M)
    assert rows, "docs/protocol.md section 7 has no error table"
    documented = [(int(code), name) for code, name in rows]
    assert len(documented) == len(set(documented))
    assert sorted(documented) == sorted((cls.code, cls.__name__) for cls in error_classes())
    assert documented == sorted(documented), "the table is in code order"


def test_an_undecodable_message_keeps_700() -> None:
    """The conformance and security tables report 700 for undecodable messages."""
    assert errors.MalformedMessageError.code == 700
    assert issubclass(errors.MalformedMessageError, errors.EncodingError)

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


ROOT = Path(__file__).resolve().parents[1]


def _code_outside_errors_and_tests() -> str:
    """Every Python source of the repository except secsync/errors.py and the tests."""
    sources = [
        path
        for folder in ("secsync", "interop", "benchmarks")
        for path in (ROOT / folder).rglob("*.py")
        if path != ROOT / "secsync" / "errors.py"
    ]
    return "\n".join(path.read_text(encoding="utf-8") for path in sources)


def test_every_error_class_is_raised_or_referenced_outside_errors_and_tests() -> None:
    code = _code_outside_errors_and_tests()
    unused = [
        cls.__name__ for cls in error_classes() if not re.search(rf"\b{cls.__name__}\b", code)
    ]
    assert unused == [], f"defined in secsync/errors.py, never raised or referenced: {unused}"


def test_the_unused_class_check_can_fail() -> None:
    assert not re.search(r"\bNoSuchErrorAnywhere\b", _code_outside_errors_and_tests())


def test_error_code_names_every_code_once() -> None:
    assert sorted(errors.ErrorCode) == sorted(cls.code for cls in error_classes())
    for cls in error_classes():
        assert errors.ErrorCode(cls.code).value == cls.code


def test_three_branches_tell_who_has_to_act() -> None:
    local = (errors.SessionError, errors.ConfigurationError, errors.CreateUpdateError)
    remote = (
        errors.SnapshotDecryptionError,
        errors.UpdateReplayError,
        errors.MalformedMessageError,
    )
    for cls in local:
        assert issubclass(cls, errors.LocalError)
        assert not issubclass(cls, errors.RemoteInputError | errors.TransportError)
    for cls in remote:
        assert issubclass(cls, errors.RemoteInputError)
        assert not issubclass(cls, errors.LocalError | errors.TransportError)
    assert issubclass(errors.SessionStateError, errors.LocalStoreError)
    assert not issubclass(
        errors.BrokerUnavailableError, errors.LocalError | errors.RemoteInputError
    )

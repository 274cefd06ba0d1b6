import pytest

from secsync.errors import CanonicalJsonError, InvalidBase64Error
from secsync.protocol.encoding import b64decode, b64encode, canonical_json, check_json_value


@pytest.mark.parametrize(
    ("raw", "text"),
    [(b"", ""), (b"\xff", "_w"), (b"\xfb\xff", "-_8"), (b"abc", "YWJj"), (bytes(24), "A" * 32)],
)
def test_b64_round_trip(raw: bytes, text: str) -> None:
    assert b64encode(raw) == text
    assert b64decode(text) == raw


@pytest.mark.parametrize("bad", ["YWJj=", "YW==", "+w", "/w", "a", "YW J", "YW\n", "é", "_x"])
def test_b64_strict(bad: str) -> None:
    # padding, the standard alphabet, impossible lengths, whitespace, non-ASCII and
    # non-zero trailing bits ("_x" decodes to 0xff with leftover bits) are all refused
    with pytest.raises(InvalidBase64Error):
        b64decode(bad)


def test_canonical_json_matches_canonicalize() -> None:
    assert canonical_json({"b": 1, "a": [True, None, "x"], "c": {"z": 0, "y": -5}}) == (
        '{"a":[true,null,"x"],"b":1,"c":{"y":-5,"z":0}}'
    )
    # JSON.stringify escaping: short escapes, \u00XX lowercase, non-ASCII kept as is
    assert canonical_json('\n\t\x01"\\é😀\u2028') == '"\\n\\t\\u0001\\"\\\\é😀\u2028"'


def test_canonical_json_escapes_lone_surrogates_like_json_stringify() -> None:
    assert canonical_json({"docId": "a\ud800b"}) == '{"docId":"a\\ud800b"}'
    assert canonical_json("\udfff").encode("utf-8") == b'"\\udfff"'


def test_canonical_json_sorts_by_utf16_code_units() -> None:
    # U+FF61 sorts after U+1F600 by code point but before it by UTF-16 code unit (0xD83D)
    keys = {"\U0001f600": 1, "\uff61": 2}
    assert canonical_json(keys) == '{"\U0001f600":1,"\uff61":2}'


@pytest.mark.parametrize("bad", [1.5, float("nan"), 2**53, {1: 2}, b"x", {"a": {1.0}}, [1.0]])
def test_canonical_json_rejects(bad: object) -> None:
    with pytest.raises(CanonicalJsonError):
        canonical_json(bad)


def test_check_json_value_bounds_depth() -> None:
    deep: object = 0
    for _ in range(40):
        deep = [deep]
    with pytest.raises(CanonicalJsonError):
        check_json_value(deep)
    assert check_json_value({"a": [1, "b", None, False]}) == {"a": [1, "b", None, False]}

"""Base64 of many byte strings at once (kvio.b64) equals base64 item by item."""
from __future__ import annotations

import binascii
import json
import random

import pyarrow as pa
import pytest

from kvio import b64
from tests.helpers import require_module


@pytest.fixture(autouse=True, params=["pybase64", "binascii"])
def coder(request, monkeypatch):
    """Every test with pybase64 (when installed) and with the standard library's binascii."""
    if request.param == "binascii":
        monkeypatch.setattr(b64, "_encode", lambda data: binascii.b2a_base64(data, newline=False))
        monkeypatch.setattr(b64, "_decode", lambda text: binascii.a2b_base64(text, strict_mode=True))
    elif b64.pybase64 is None:  # skips outside CI only: CI installs the serve extra
        require_module("pybase64", "pybase64 is not installed")


def one_by_one(items: list) -> list:
    return [None if v is None else binascii.b2a_base64(v, newline=False).decode() for v in items]


def samples() -> list[list]:
    rng = random.Random(11)
    out: list[list] = [[], [b""], [None], [b"a"], [b"ab"], [b"abc"], [None, b"", None],
                       [bytes(range(256))] * 3]
    for _ in range(60):
        n = rng.randrange(1, 40)
        out.append([None if rng.random() < 0.2 else rng.randbytes(rng.choice([0, 1, 2, 3, 4, 5,
                                                                              16, 100, 999]))
                    for _ in range(n)])
    return out


@pytest.mark.parametrize("items", samples())
def test_json_list_is_json_dumps_of_each_items_base64(items):
    expected = json.dumps(one_by_one(items), separators=(",", ":")).encode()
    assert b64.json_list(pa.array(items, type=pa.large_binary())) == expected
    assert b64.json_list(pa.array(items, type=pa.binary())) == expected
    padded = pa.array([b"x"] + items + [b"yz"], type=pa.large_binary())
    assert b64.json_list(padded.slice(1, len(items))) == expected  # an array with an offset


@pytest.mark.parametrize("items", samples())
def test_decode_is_the_inverse(items):
    encoded = one_by_one(items)
    decoded = b64.decode(encoded)
    if len({len(e) for e in encoded if e is not None}) > 1:
        assert decoded is None  # several lengths: one by one, by the caller
    else:
        assert decoded is not None and decoded.type == pa.large_binary()
        assert decoded.to_pylist() == items


@pytest.mark.parametrize("width", [0, 1, 2, 3, 4, 5, 16, 100])
@pytest.mark.parametrize("nulls", [False, True])
def test_one_width_with_and_without_nulls(width, nulls):
    rng = random.Random(width)
    items = [None if nulls and i % 3 == 1 else rng.randbytes(width) for i in range(10)]
    expected = json.dumps(one_by_one(items), separators=(",", ":")).encode()
    assert b64.json_list(pa.array(items, type=pa.large_binary())) == expected
    assert b64.decode(one_by_one(items)).to_pylist() == items


BAD = ["QQ", "QQ=", "Q===", "QQ=A", "=QQ=", "QQ==QQ==", "QU I", "QUI\n", "caf\u00e9", "QUJD*AAA",
       "QQ==A", "====", "QUJ=QQ==", "QUJ=QUJD", "QQ-_"]


@pytest.mark.parametrize("bad", BAD)
def test_decode_refuses_what_strict_a2b_refuses(bad):
    with pytest.raises((binascii.Error, ValueError)):
        binascii.a2b_base64(bad.encode("utf-8"), strict_mode=True)
    for items in ([bad], [bad, bad], [bad, None, bad]):
        assert b64.decode(items) is None, items


@pytest.mark.parametrize("odd", [[1], ["QUJD", 1.5], [None, 0], [["QQ=="]], [{"a": 1}]])
def test_decode_refuses_items_that_are_not_strings(odd):
    assert b64.decode(odd) is None


@pytest.mark.parametrize("items", [["QR==", "QQ=="], ["QUJ=", "QUI="], ["", ""], ["+/+/", "AAAA"]])
def test_decode_accepts_what_strict_a2b_accepts(items):
    # (unused bits set, as in QR==: accepted, as a2b accepts them)
    assert b64.decode(items).to_pylist() == [binascii.a2b_base64(i, strict_mode=True)
                                             for i in items]


def test_items_of_several_widths_are_left_to_the_caller():
    assert b64.decode(["QQ==", "QUJD"]) is None
    assert b64.decode(["QQ==", "QUI="]) is None  # one length, two paddings


def in_text(items: list, prefix: bytes = b'{"keys":', suffix: bytes = b"}") -> bytes:
    return prefix + json.dumps(items, separators=(",", ":")).encode() + suffix


@pytest.mark.parametrize("items", [i for i in samples() if None not in i and i])
def test_decode_json_list_is_json_loads_then_decode(items):
    """From the text, a list of one length decodes to what parsing it and decode() give;
    several lengths are left to the caller (None)."""
    text = in_text(one_by_one(items))
    got = b64.decode_json_list(text, len(b'{"keys":'), len(text) - 1)
    expected = b64.decode(json.loads(text)["keys"])
    if expected is None:
        assert got is None
    else:
        assert got is not None and got.type == pa.large_binary()
        assert got.to_pylist() == expected.to_pylist() == items


@pytest.mark.parametrize("text", [
    b"[]", b'[""]x', b'["QQ==", "QQ=="]', b' ["QQ=="]', b'["QQ==",null]', b"[null]",
    b'["QQ\\u003d"]', b'["QQ\\/A"]', b'["QQ==","QQ==",]', b'["QQ=="."QQ=="]', b'["QQ==""QQ=="]',
    b'["QQ==","QQ="]', b'["QQ==","QUI="]', b'["QQ==","QQ=="', b'("QQ==")', b"[1234]",
    b'["QUJD","QU"D"]', b'["QUJD","QU,D"]', b'["QUJD","QU\\D"]', b'["QUJD"],["QUJD"]',
])
def test_decode_json_list_refuses_other_layouts(text):
    """Spaces, nulls, escapes, a trailing comma, other separators, two paddings, an
    unfinished list, characters of JSON inside an item: left to the JSON parser."""
    assert b64.decode_json_list(text, 0, len(text)) is None


@pytest.mark.parametrize("bad", BAD)
def test_decode_json_list_refuses_what_strict_a2b_refuses(bad):
    for items in ([bad], [bad, bad], ["QUJD", bad], [bad, "QUJD"]):
        text = json.dumps(items, separators=(",", ":")).encode()
        assert b64.decode_json_list(text, 0, len(text)) is None, items


def test_decode_json_list_bounds():
    text = b'xx["QUJD","QUJE"]yy'
    assert b64.decode_json_list(text, 2, len(text) - 2).to_pylist() == [b"ABC", b"ABD"]
    assert b64.decode_json_list(text, 2, len(text) - 1) is None  # not ending at the ']'
    assert b64.decode_json_list(text, -1, len(text)) is None
    assert b64.decode_json_list(text, 2, len(text) + 1) is None

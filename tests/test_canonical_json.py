"""RFC 8785 (JCS) through lmdock's `jcs`, on the RFC's own examples; and the v1 form it replaces."""

import json
import struct

import pytest
from lmdock.common.canonical import canonical_json, jcs
from lmdock.common.errors import InvalidArgument

#: RFC 8785 Appendix B: IEEE 754 doubles (big-endian hex) and how JCS writes them; None: refused.
APPENDIX_B = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),  # minus zero
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("7fffffffffffffff", None),  # NaN
    ("7ff0000000000000", None),  # Infinity
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


def double(hex_ieee: str) -> float:
    return struct.unpack(">d", bytes.fromhex(hex_ieee))[0]


@pytest.mark.parametrize(("hex_ieee", "expected"), APPENDIX_B)
def test_appendix_b_numbers(hex_ieee: str, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(InvalidArgument, match="RFC 8785"):
            jcs([double(hex_ieee)])
    else:
        assert jcs([double(hex_ieee)]) == f"[{expected}]".encode()


def test_section_3_2_3_sorts_keys_by_utf16_code_units() -> None:
    """The RFC's sorting example: U+1F600 (surrogates D83D DE00) sorts before U+FB33, unlike
    by code point, which is how Python's sort_keys orders them."""
    data = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    order = [value for value in json.loads(jcs(data)).values()]
    assert order == [
        "Carriage Return",
        "One",
        "Control",
        "Latin Small Letter O With Diaeresis",
        "Euro Sign",
        "Emoji: Grinning Face",
        "Hebrew Letter Dalet With Dagesh",
    ]
    assert list(json.loads(canonical_json(data)).values())[-1] == "Emoji: Grinning Face"  # the v1 order


def test_section_3_2_2_example() -> None:
    """The RFC's input example (numbers, escapes, literals) and its canonical output."""
    text = (
        '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
        ' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
        ' "literals": [null, true, false]}'
    )
    expected = (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )
    assert jcs(json.loads(text)) == expected.encode("utf-8")


def test_what_v1_wrote_differently() -> None:
    """The numbers a v1 signature spelt the Python way (issue 18: 13 of 399 in a manifest)."""
    values = [1.0, 1e-06, 0.5, -0.0, 1e16, 123]
    assert canonical_json(values) == b"[1.0,1e-06,0.5,-0.0,1e+16,123]"
    assert jcs(values) == b"[1,0.000001,0.5,0,10000000000000000,123]"


@pytest.mark.parametrize("value", [2**53, -(2**53), float("nan"), "\ud800", {1: "not a string key"}])
def test_values_jcs_cannot_hold_are_invalid_arguments(value: object) -> None:
    with pytest.raises(InvalidArgument, match="RFC 8785"):
        jcs({"x": value})

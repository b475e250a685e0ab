import pytest

from modeling.values import GUID, MODEL_NAME, bounded_int, is_finite_number, matches


@pytest.mark.parametrize("value", ["Zed\n", "Zed\r\n", " Zed", "a-b", "", "a" * 101, "é", "Zed\x00", None, 7])
def test_model_names_match_in_full(value):
    assert not matches(MODEL_NAME, value)
    assert matches(MODEL_NAME, "Deals_2025") and matches(MODEL_NAME, "a" * 100)


def test_guids_match_in_full():
    guid = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
    assert matches(GUID, guid) and matches(GUID, guid.upper())
    assert not any(matches(GUID, v) for v in (guid + "\n", " " + guid, guid[:-1], "{" + guid + "}"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1, 1), ("12", 12), ("007", 7), (10**20, 10**20), ("-3", -3), ("999999999", 999999999)],
)
def test_bounded_int_accepts_integers_and_ascii_digits(value, expected):
    assert bounded_int(value) == expected


@pytest.mark.parametrize(
    "value", ["²", "٣", "1" * 10, "1" * 5000, " 1", "1 ", "+1", "1.0", "", "1e3", True, 1.0, None, [], "0x1"]
)
def test_bounded_int_refuses_the_rest(value):
    assert bounded_int(value) is None


def test_bounded_int_bounds():
    assert bounded_int("0", minimum=1) is None and bounded_int(5, maximum=4) is None
    assert bounded_int("4", maximum=4) == 4


@pytest.mark.parametrize(("value", "ok"), [(1, True), (10**400, True), (2.5, True), (float("nan"), False),
                                           (float("inf"), False), (-float("inf"), False), (True, False), ("1", False)])
def test_is_finite_number(value, ok):
    assert is_finite_number(value) is ok

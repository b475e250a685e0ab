"""`POST /_mock/simulate` with a `shift`: bad settings are 400s naming what is wrong; a shifted segment's new
deals are mostly in it, and its deals are won at the given rate, while an unshifted run keeps the mix."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from mock_dataverse.errors import DataverseError
from mock_dataverse.generator import CHANNELS, seed_org
from mock_dataverse.simulate import simulate
from mock_dataverse.store import Org

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
REFERRAL = 100000003


def _org(seed: int = 5) -> tuple[Org, Any]:
    org = Org(NOW)
    return org, seed_org(org, seed, 600, NOW)


@pytest.mark.parametrize(
    ("shift", "named"),
    [
        ("referral", "'shift' must be an object"),
        ({"attribute": "new_channel", "value": REFERRAL, "winRate": 0.9, "extra": 1}, "Unknown shift setting 'extra'"),
        ({"attribute": "name", "value": "x", "winRate": 0.5}, "'shift.attribute' must be one of"),
        ({"value": REFERRAL, "winRate": 0.5}, "'shift.attribute'"),
        ({"attribute": "new_channel", "value": 7, "winRate": 0.5}, "'shift.value' must be one of 100000000"),
        ({"attribute": "new_channel", "value": "100000003", "winRate": 0.5}, "'shift.value'"),
        ({"attribute": "decisionmaker", "value": 1, "winRate": 0.5}, "one of true, false for decisionmaker"),
        ({"attribute": "new_channel", "value": REFERRAL}, "'shift.winRate' must be a number from 0 to 1"),
        ({"attribute": "new_channel", "value": REFERRAL, "winRate": 1.5}, "'shift.winRate'"),
        ({"attribute": "new_channel", "value": REFERRAL, "winRate": True}, "'shift.winRate'"),
        ({"attribute": "new_channel", "value": REFERRAL, "winRate": 0.5, "share": 0}, "'shift.share' must be a number"),
        ({"attribute": "address1_country", "value": "Atlantis", "winRate": 0.5}, "'shift.value'"),
    ],
)
def test_bad_shift_settings_are_400_naming_them(shift, named):
    org, gen = _org()
    with pytest.raises(DataverseError) as err:
        simulate(org, gen, {"days": 5, "shift": shift})
    assert err.value.status == 400 and named in err.value.message, err.value.message


def _new_share(org: Org, before: set[str], attribute: str, value: Any) -> tuple[int, float]:
    new = [r for oid, r in org.data["opportunity"].rows.items() if oid not in before]
    return len(new), sum(1 for r in new if r[attribute] == value) / max(len(new), 1)


def test_a_shifted_segment_changes_the_mix_of_new_deals_and_its_win_rate():
    org, gen = _org()
    before = set(org.data["opportunity"].rows)
    report = simulate(org, gen, {"days": 60, "seed": 1, "shift": {"attribute": "new_channel", "value": REFERRAL,
                                                                   "winRate": 1.0, "share": 0.9}})  # fmt: skip
    created, share = _new_share(org, before, "new_channel", REFERRAL)
    assert 30 < created <= report["created"]  # (a few new deals may be deleted again)
    assert share > 0.7  # 0.9 put in the segment (a few left empty by the generator's missing values)
    shift = report["shift"]
    assert shift["created"] / report["created"] > 0.7 and shift["won"] > 0 and shift["lost"] == 0

    plain_org, plain_gen = _org()
    plain_before = set(plain_org.data["opportunity"].rows)
    simulate(plain_org, plain_gen, {"days": 60, "seed": 1})
    _, plain_share = _new_share(plain_org, plain_before, "new_channel", REFERRAL)
    weights = [b - a for a, b in zip([0.0, *CHANNELS.cum[:-1]], CHANNELS.cum, strict=True)]
    usual = dict(zip(CHANNELS.population, weights, strict=True))[REFERRAL]
    assert plain_share < usual + 0.12 < share  # the usual mix


def test_an_account_segment_sends_new_deals_to_its_accounts():
    org, gen = _org()
    before = set(org.data["opportunity"].rows)
    report = simulate(org, gen, {"days": 40, "seed": 2, "shift": {"attribute": "address1_country", "value": "Japan",
                                                                   "winRate": 0.0}})  # fmt: skip
    accounts = org.data["account"].rows
    new = [r for oid, r in org.data["opportunity"].rows.items() if oid not in before]
    japan = sum(1 for r in new if accounts[r["_parentaccountid_value"]]["address1_country"] == "Japan")
    assert new and japan / len(new) > 0.6 and report["shift"]["created"] >= japan
    assert report["shift"]["won"] == 0

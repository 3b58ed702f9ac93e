"""worklessness (contract section 5): adult out-of-work benefits at R, housing events, young NEETs."""

from __future__ import annotations

from datetime import date

from criteria_helpers import CRITERIA, R, Warehouse
from tfp.config import Criteria

WINDOW_START = date(2023, 6, 30)


def test_out_of_work_benefit_active_at_R(warehouse_url):
    w = Warehouse(warehouse_url)
    claims = {
        "open_claim": dict(claim_start=date(2022, 1, 1)),
        "ends_on_R": dict(claim_start=date(2022, 1, 1), claim_end=R),
        "ended_day_before_R": dict(claim_start=date(2022, 1, 1), claim_end=date(2024, 6, 29)),  # in the window
        "starts_on_R": dict(claim_start=R),
        "starts_after_R": dict(claim_start=date(2024, 7, 1)),
        "in_work_benefit": dict(claim_start=date(2022, 1, 1), out_of_work=False, benefit="pip"),
        "out_of_work_unknown": dict(claim_start=date(2022, 1, 1), out_of_work=None),
    }
    for family, claim in claims.items():
        w.benefit(w.adult(family, f"{family}-p"), **claim)
    assert w.families_with("worklessness") == {"open_claim", "ends_on_R", "starts_on_R"}


def test_benefit_only_for_adults_at_R(warehouse_url):
    w = Warehouse(warehouse_url)
    w.benefit(w.person("seventeen", "s-p", date(2006, 7, 1), role="child"), date(2024, 1, 1))
    w.benefit(w.person("eighteen_on_R", "e-p", date(2006, 6, 30), role="adult"), date(2024, 1, 1))
    assert w.families_with("worklessness") == {"eighteen_on_R"}


def test_housing_events_in_the_window(warehouse_url):
    w = Warehouse(warehouse_url)
    events = {
        "rent_arrears": ("rent_arrears", date(2024, 1, 1)),
        "notice": ("notice_seeking_possession", date(2023, 7, 1)),
        "eviction_on_R": ("eviction", R),
        "arrears_on_window_start": ("rent_arrears", WINDOW_START),
        "eviction_after_R": ("eviction", date(2024, 7, 1)),
        "asb_warning": ("asb_warning", date(2024, 1, 1)),
    }
    for family, (event, day) in events.items():
        w.tenancy_event(w.adult(family, f"{family}-p"), event, day)
    # A housing event of a child's record counts too: the contract sets no age for it.
    w.tenancy_event(w.child("child_record", "c-p", age=15), "rent_arrears", date(2024, 1, 1))
    assert w.families_with("worklessness") == {"rent_arrears", "notice", "eviction_on_R", "child_record"}


def test_min_rent_arrears(warehouse_url):
    """Contract section 10: a rent_arrears event counts only with arrears_amount >= criteria.min_rent_arrears."""
    w = Warehouse(warehouse_url)
    amounts = {"below": 499.99, "equal": 500.0, "above": 2500.5, "blank": None, "zero": 0.0}
    for family, amount in amounts.items():
        w.tenancy_event(w.adult(family, f"{family}-p"), "rent_arrears", date(2024, 1, 1), arrears_amount=amount)
    # the threshold is for rent_arrears only: a notice or an eviction counts with any amount
    w.tenancy_event(w.adult("notice_small", "n-p"), "notice_seeking_possession", date(2024, 1, 1), arrears_amount=10.0)
    w.tenancy_event(w.adult("above_but_old", "o-p"), "rent_arrears", WINDOW_START, arrears_amount=9000.0)
    assert w.families_with("worklessness") == {*amounts, "notice_small"}  # default 0: every amount, blank too
    five_hundred = Criteria(**{**CRITERIA.model_dump(), "min_rent_arrears": 500})
    assert w.families_with("worklessness", five_hundred) == {"equal", "above", "notice_small"}
    pence = Criteria(**{**CRITERIA.model_dump(), "min_rent_arrears": 0.01})
    assert w.families_with("worklessness", pence) == {"below", "equal", "above", "notice_small"}
    found = w.indicators(five_hundred)
    assert {k: v["families"] for k, v in found.items() if k.startswith("worklessness.")} == {
        "worklessness.out_of_work_benefit": 0, "worklessness.rent_arrears": 2,
        "worklessness.notice_seeking_possession": 1, "worklessness.eviction": 0, "worklessness.neet": 0}


def test_neet_aged_16_to_24_at_R(warehouse_url):
    w = Warehouse(warehouse_url)
    ages = {
        "fifteen": date(2008, 7, 1),  # 16th birthday the day after R
        "sixteen_on_R": date(2008, 6, 30),
        "twenty_four": date(1999, 7, 1),  # 25th birthday the day after R
        "twenty_five_on_R": date(1999, 6, 30),
    }
    for family, dob in ages.items():
        w.need(w.person(family, f"{family}-p", dob), "neet", date(2024, 1, 1))
    assert w.families_with("worklessness") == {"sixteen_on_R", "twenty_four"}


def test_neet_active_in_the_window(warehouse_url):
    w = Warehouse(warehouse_url)
    spells = {
        "open": (date(2023, 1, 1), None),
        "ended_on_window_start": (date(2022, 1, 1), WINDOW_START),
        "ended_day_after_window_start": (date(2022, 1, 1), date(2023, 7, 1)),
        "starts_after_R": (date(2024, 7, 1), None),
    }
    for family, (start, end) in spells.items():
        w.need(w.adult(family, f"{family}-p", age=19), "neet", start, end)
    assert w.families_with("worklessness") == {"open", "ended_day_after_window_start"}


def test_unlinked_records_count_for_nobody(warehouse_url):
    w = Warehouse(warehouse_url)
    w.adult("family", "p")
    w.benefit(None, date(2022, 1, 1))
    w.tenancy_event(None, "eviction", date(2024, 1, 1))
    assert w.families_with("worklessness") == set()


def test_scope_kept_ignores_a_member_who_is_not_kept(warehouse_url):
    w = Warehouse(warehouse_url)
    w.consent(w.adult("mixed", "kept-p"), True)
    w.consent(w.adult("mixed", "refused-p"), False)
    w.benefit("refused-p", date(2022, 1, 1))
    w.tenancy_event("refused-p", "eviction", date(2024, 1, 1))
    w.consent(w.adult("kept", "k", age=20), True)
    w.need("k", "neet", date(2024, 1, 1))
    assert w.families_with("worklessness") == {"mixed", "kept"}
    assert w.families_with("worklessness", scope="kept") == {"kept"}

"""school_attendance (contract section 5): the last three ended terms, absence rate, exclusions.

With R = 2024-06-30 the three terms that ended on or before R are 2023-SPR (31 Mar 2024),
2023-AUT (31 Dec 2023) and 2022-SUM (31 Jul 2023); 2023-SUM ends after R and 2022-SPR is a 4th.
"""

from __future__ import annotations

from datetime import date

from criteria_helpers import CRITERIA, Warehouse
from tfp.config import Criteria


def _child(w: Warehouse, family: str, age: int = 12) -> str:
    return w.child(family, f"{family}-p", age)


def test_absence_rate_boundary_and_sum_over_the_terms(warehouse_url):
    w = Warehouse(warehouse_url)
    w.attendance(_child(w, "exactly_10_percent"), "2023-SPR", possible=30, missed=3)
    w.attendance(_child(w, "just_below"), "2023-SPR", possible=1000, missed=99)
    # 20 % in one term but 29 of 300 (9.7 %) over the three: not persistent.
    child = _child(w, "one_bad_term_diluted")
    w.attendance(child, "2023-SPR", possible=100, missed=20)
    w.attendance(child, "2023-AUT", possible=100, missed=5)
    w.attendance(child, "2022-SUM", possible=100, missed=4)
    # 8 % + 12 % + 10 %: 30 of 300, exactly the rate only when summed.
    child = _child(w, "summed_exactly")
    w.attendance(child, "2023-SPR", possible=100, missed=8)
    w.attendance(child, "2023-AUT", possible=100, missed=12)
    w.attendance(child, "2022-SUM", possible=100, missed=10)
    # Only the terms the child has rows for: one term at 10 % is not diluted by missing terms.
    w.attendance(_child(w, "one_term_only"), "2023-AUT", possible=70, missed=7)
    w.attendance(_child(w, "no_possible_sessions"), "2023-SPR", possible=0, missed=0)
    assert w.families_with("school_attendance") == {"exactly_10_percent", "summed_exactly", "one_term_only"}


def test_only_the_last_three_terms_ended_on_or_before_R(warehouse_url):
    w = Warehouse(warehouse_url)
    w.attendance(_child(w, "term_ending_after_R"), "2023-SUM", possible=100, missed=50)
    w.attendance(_child(w, "fourth_older_term"), "2022-SPR", possible=100, missed=50)
    w.attendance(_child(w, "oldest_of_the_three"), "2022-SUM", possible=100, missed=50)
    # A bad ignored term does not count, and a good ignored term does not dilute.
    child = _child(w, "diluted_only_by_ignored_terms")
    w.attendance(child, "2023-SPR", possible=100, missed=10)
    w.attendance(child, "2023-SUM", possible=1000, missed=0)
    w.attendance(child, "2022-SPR", possible=1000, missed=0)
    child = _child(w, "bad_ignored_good_counted")
    w.attendance(child, "2023-SUM", possible=100, missed=90)
    w.attendance(child, "2023-SPR", possible=100, missed=1)
    w.attendance(child, "2022-SPR", possible=100, missed=90, fixed_term_exclusions=5, permanent_exclusion=True)
    assert w.families_with("school_attendance") == {"oldest_of_the_three", "diluted_only_by_ignored_terms"}


def test_term_ending_on_R_counts(warehouse_url):
    w = Warehouse(warehouse_url, reference_date=date(2024, 3, 31))  # 2023-SPR ends on R
    w.attendance(_child(w, "spring_term"), "2023-SPR", possible=100, missed=10)
    w.attendance(_child(w, "autumn_term"), "2023-AUT", possible=100, missed=10)
    w.attendance(_child(w, "summer_2022"), "2022-SUM", possible=100, missed=10)
    w.attendance(_child(w, "spring_2022"), "2022-SPR", possible=100, missed=10)  # now the 4th: out
    assert w.families_with("school_attendance") == {"spring_term", "autumn_term", "summer_2022"}


def test_fixed_term_exclusions_summed_over_the_terms(warehouse_url):
    w = Warehouse(warehouse_url)
    child = _child(w, "three_over_two_terms")
    w.attendance(child, "2023-SPR", fixed_term_exclusions=2)
    w.attendance(child, "2023-AUT", fixed_term_exclusions=1)
    child = _child(w, "two")
    w.attendance(child, "2023-SPR", fixed_term_exclusions=2)
    w.attendance(child, "2023-AUT", fixed_term_exclusions=None)
    child = _child(w, "third_in_an_ignored_term")
    w.attendance(child, "2023-SPR", fixed_term_exclusions=2)
    w.attendance(child, "2023-SUM", fixed_term_exclusions=1)
    assert w.families_with("school_attendance") == {"three_over_two_terms"}


def test_permanent_exclusion_or_alternative_provision(warehouse_url):
    w = Warehouse(warehouse_url)
    w.attendance(_child(w, "permanent_exclusion"), "2023-AUT", permanent_exclusion=True)
    w.attendance(_child(w, "alternative_provision"), "2022-SUM", alternative_provision=True)
    w.attendance(_child(w, "unknown_flags"), "2023-AUT", permanent_exclusion=None, alternative_provision=None)
    w.attendance(_child(w, "excluded_in_ignored_term"), "2023-SUM", permanent_exclusion=True)
    assert w.families_with("school_attendance") == {"permanent_exclusion", "alternative_provision"}


def test_only_children_at_R(warehouse_url):
    w = Warehouse(warehouse_url)
    w.attendance(w.person("seventeen", "s-p", date(2006, 7, 1), role="child"), "2023-SPR", missed=50)
    w.attendance(w.person("eighteen_on_R", "e-p", date(2006, 6, 30), role="child"), "2023-SPR", missed=50)
    assert w.families_with("school_attendance") == {"seventeen"}


def test_rate_and_threshold_come_from_the_config(warehouse_url):
    w = Warehouse(warehouse_url)
    w.attendance(_child(w, "ten_percent"), "2023-SPR", possible=100, missed=10)
    w.attendance(_child(w, "fifteen_percent"), "2023-SPR", possible=100, missed=15)
    w.attendance(_child(w, "two_exclusions"), "2023-SPR", fixed_term_exclusions=2)
    stricter = Criteria(**{**CRITERIA.model_dump(), "persistent_absence_rate": 0.15, "fixed_term_exclusions": 2})
    assert w.families_with("school_attendance", criteria=stricter) == {"fifteen_percent", "two_exclusions"}
    assert w.families_with("school_attendance") == {"ten_percent", "fifteen_percent"}


def test_unlinked_records_count_for_nobody(warehouse_url):
    w = Warehouse(warehouse_url)
    _child(w, "family")
    w.attendance(None, "2023-SPR", possible=100, missed=90, permanent_exclusion=True)
    assert w.families_with("school_attendance") == set()


def test_scope_kept_ignores_a_child_who_is_not_kept(warehouse_url):
    w = Warehouse(warehouse_url)
    w.consent(w.adult("mixed", "parent"), True)
    w.consent(w.child("mixed", "absent-child"), False)
    w.attendance("absent-child", "2023-SPR", possible=100, missed=50)
    w.consent(w.child("kept", "kept-child"), True)
    w.attendance("kept-child", "2023-SPR", possible=100, missed=50)
    assert w.families_with("school_attendance") == {"mixed", "kept"}
    assert w.families_with("school_attendance", scope="kept") == {"kept"}


def test_rate_boundary_is_exact_where_floating_point_is_not(warehouse_url):
    # 0.07 * 100 is 7.000000000000001 in floating point: 7 of 100 must still reach a 7 % rate.
    w = Warehouse(warehouse_url)
    w.attendance(_child(w, "seven_of_a_hundred"), "2023-SPR", possible=100, missed=7)
    w.attendance(_child(w, "six_of_a_hundred"), "2023-SPR", possible=100, missed=6)
    seven_percent = Criteria(**{**CRITERIA.model_dump(), "persistent_absence_rate": 0.07})
    assert w.families_with("school_attendance", criteria=seven_percent) == {"seven_of_a_hundred"}


# --- contract section 10: a need child_missing_education counts for school_attendance ---------------

def test_child_missing_education_active_in_the_window(warehouse_url):
    from datetime import date as d

    w = Warehouse(warehouse_url)
    spells = {
        "cme_open": (d(2024, 1, 1), None),
        "cme_starts_on_R": (d(2024, 6, 30), None),
        "cme_ended_on_window_start": (d(2022, 1, 1), d(2023, 6, 30)),
        "cme_ended_day_after_window_start": (d(2022, 1, 1), d(2023, 7, 1)),
        "cme_starts_after_R": (d(2024, 7, 1), None),
    }
    for family, (start, end) in spells.items():
        w.need(_child(w, family), "child_missing_education", start, end)
    # a child on R: 17 with the 18th birthday the day after R counts; 18 on R does not
    w.need(w.person("cme_17", "c17", d(2006, 7, 1), role="child"), "child_missing_education", d(2024, 1, 1))
    w.need(w.person("cme_18_on_R", "c18", d(2006, 6, 30), role="child"), "child_missing_education", d(2024, 1, 1))
    w.need(_child(w, "other_need"), "early_help", d(2024, 1, 1))
    assert w.families_with("school_attendance") == {"cme_open", "cme_starts_on_R",
                                                    "cme_ended_day_after_window_start", "cme_17"}


def test_school_indicators(warehouse_url):
    from datetime import date as d

    w = Warehouse(warehouse_url)
    w.attendance(_child(w, "absent"), "2023-SPR", possible=30, missed=3)
    w.attendance(_child(w, "excluded"), "2023-SPR", fixed_term_exclusions=3)
    w.attendance(_child(w, "ap"), "2023-SPR", alternative_provision=True)
    child = _child(w, "absent_and_missing")
    w.attendance(child, "2023-SPR", possible=30, missed=30)
    w.need(child, "child_missing_education", d(2024, 1, 1))
    found = w.indicators()
    assert {k: v["families"] for k, v in found.items() if k.startswith("school_attendance.")} == {
        "school_attendance.persistent_absence": 2, "school_attendance.fixed_term_exclusions": 1,
        "school_attendance.exclusion_or_alternative_provision": 1, "school_attendance.child_missing_education": 1}

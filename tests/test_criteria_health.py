"""health (contract sections 5 and 10): a need mental_health, substance_misuse (or section 10's
vulnerable_new_mother, physical_health) active in the window, or, from the optional health feed, a
treatment episode or mental-health contact active in the window of a linked person."""

from __future__ import annotations

from datetime import date

from criteria_helpers import CRITERIA, R, Warehouse
from tfp.config import Criteria

WINDOW_START = date(2023, 6, 30)


def test_health_needs_at_any_age(warehouse_url):
    w = Warehouse(warehouse_url)
    w.need(w.adult("mental_health", "a"), "mental_health", date(2024, 1, 1))
    w.need(w.child("substance_misuse_child", "b", age=15), "substance_misuse", date(2024, 1, 1))
    w.need(w.adult("other_need", "c"), "domestic_abuse", date(2024, 1, 1))
    # contract section 10
    w.need(w.adult("vulnerable_new_mother", "d", age=19), "vulnerable_new_mother", date(2024, 1, 1))
    w.need(w.child("physical_health_child", "e", age=4), "physical_health", date(2024, 1, 1))
    w.need(w.adult("physical_health_adult", "f"), "physical_health", date(2024, 1, 1))
    w.need(w.child("emotional_wellbeing", "g"), "emotional_wellbeing", date(2024, 1, 1))  # children_need_help only
    assert w.families_with("health") == {"mental_health", "substance_misuse_child", "vulnerable_new_mother",
                                         "physical_health_child", "physical_health_adult"}
    found = w.indicators()
    assert {k: v["families"] for k, v in found.items() if k.startswith("health.")} == {
        "health.mental_health": 1, "health.substance_misuse": 1, "health.vulnerable_new_mother": 1,
        "health.physical_health": 2, "health.treatment_episode": 0, "health.mental_health_contact": 0}


def test_new_health_needs_active_in_the_window(warehouse_url):
    w = Warehouse(warehouse_url)
    for need in ("vulnerable_new_mother", "physical_health"):
        spells = {
            "ended_on_window_start": (date(2022, 1, 1), WINDOW_START),
            "ended_day_after_window_start": (date(2022, 1, 1), date(2023, 7, 1)),
            "starts_on_R": (R, None),
            "starts_after_R": (date(2024, 7, 1), None),
        }
        for case, (start, end) in spells.items():
            w.need(w.adult(f"{need}_{case}", f"{need}-{case}"), need, start, end)
    assert w.families_with("health") == {f"{need}_{case}" for need in ("vulnerable_new_mother", "physical_health")
                                         for case in ("ended_day_after_window_start", "starts_on_R")}


def test_active_in_the_window(warehouse_url):
    w = Warehouse(warehouse_url)
    spells = {
        "open": (date(2010, 1, 1), None),
        "ended_on_window_start": (date(2022, 1, 1), WINDOW_START),
        "ended_day_after_window_start": (date(2022, 1, 1), date(2023, 7, 1)),
        "ends_after_R": (date(2024, 1, 1), date(2025, 1, 1)),
        "starts_on_R": (R, None),
        "starts_after_R": (date(2024, 7, 1), None),
    }
    for family, (start, end) in spells.items():
        w.need(w.adult(family, f"{family}-p"), "mental_health", start, end)
    assert w.families_with("health") == {"open", "ended_day_after_window_start", "ends_after_R", "starts_on_R"}


def test_lookback_comes_from_the_config(warehouse_url):
    w = Warehouse(warehouse_url)
    w.need(w.adult("ended_18_months_ago", "a"), "substance_misuse", date(2020, 1, 1), date(2022, 12, 31))
    w.need(w.adult("ended_8_months_ago", "b"), "substance_misuse", date(2020, 1, 1), date(2023, 10, 31))
    six_months = Criteria(**{**CRITERIA.model_dump(), "lookback_months": 6})
    assert w.families_with("health", criteria=six_months) == set()
    two_years = Criteria(**{**CRITERIA.model_dump(), "lookback_months": 24})
    assert w.families_with("health", criteria=two_years) == {"ended_18_months_ago", "ended_8_months_ago"}


def test_needs_of_people_not_on_the_roster_count_for_nobody(warehouse_url):
    w = Warehouse(warehouse_url)
    w.adult("family", "on-roster")
    w.need("someone-else", "mental_health", date(2024, 1, 1))
    assert w.families_with("health") == set()


def test_scope_kept_ignores_a_member_who_is_not_kept(warehouse_url):
    w = Warehouse(warehouse_url)
    w.consent(w.adult("mixed", "kept-p"), True)
    w.consent(w.adult("mixed", "withdrawn-p"), False)
    w.need("withdrawn-p", "mental_health", date(2024, 1, 1))
    w.consent(w.adult("kept", "k"), True)
    w.need("k", "substance_misuse", date(2024, 1, 1))
    assert w.families_with("health") == {"mixed", "kept"}
    assert w.families_with("health", scope="kept") == {"kept"}


# -- the health feed (contract section 10) ------------------------------------------------------------------------

SPELLS = {
    "open": (date(2010, 1, 1), None),
    "ended_before_window": (date(2022, 1, 1), date(2023, 1, 1)),
    "ended_on_window_start": (date(2022, 1, 1), WINDOW_START),
    "ended_day_after_window_start": (date(2022, 1, 1), date(2023, 7, 1)),
    "ends_after_R": (date(2024, 1, 1), date(2025, 1, 1)),
    "starts_on_R": (R, None),
    "starts_day_after_R": (date(2024, 7, 1), None),
    "one_day_spell_on_R": (R, R),
}
ACTIVE = {"open", "ended_day_after_window_start", "ends_after_R", "starts_on_R", "one_day_spell_on_R"}


def test_a_treatment_episode_active_in_the_window(warehouse_url):
    w = Warehouse(warehouse_url)
    for family, (start, end) in SPELLS.items():
        w.treatment_episode(w.adult(family, f"{family}-p"), start, end)
    assert w.families_with("health") == ACTIVE
    assert w.indicators()["health.treatment_episode"]["families"] == len(ACTIVE)


def test_a_mental_health_contact_active_in_the_window_from_referral_to_discharge(warehouse_url):
    w = Warehouse(warehouse_url)
    for family, (start, end) in SPELLS.items():
        w.mental_health_contact(w.child(family, f"{family}-p", age=9), start, end, service_type="cahms")
    assert w.families_with("health") == ACTIVE
    assert w.indicators()["health.mental_health_contact"]["families"] == len(ACTIVE)


def test_every_substance_group_and_service_type_counts_at_any_age(warehouse_url):
    w = Warehouse(warehouse_url)
    for group in ("opiates", "non_opiates", "alcohol", "alcohol_and_non_opiates"):
        w.treatment_episode(w.adult(f"t_{group}", f"t-{group}", age=19), date(2024, 1, 1), substance_group=group)
    for service in ("cahms", "adult_community", "crisis", "iapt"):
        w.mental_health_contact(w.child(f"m_{service}", f"m-{service}", age=15), date(2024, 1, 1),
                                service_type=service)
    assert w.families_with("health") == {f"t_{g}" for g in ("opiates", "non_opiates", "alcohol",
                                                            "alcohol_and_non_opiates")} | {
        f"m_{s}" for s in ("cahms", "adult_community", "crisis", "iapt")}


def test_health_feed_records_count_only_when_linked_and_kept(warehouse_url):
    w = Warehouse(warehouse_url)
    w.adult("unlinked", "u")
    w.treatment_episode(None, date(2024, 1, 1))  # a record linked to nobody counts for nobody
    w.mental_health_contact(None, date(2024, 1, 1))
    w.consent(w.adult("refused", "r"), False)
    w.treatment_episode("r", date(2024, 1, 1))
    w.consent(w.adult("kept", "k"), True)
    w.mental_health_contact("k", date(2024, 1, 1))
    w.treatment_episode("not-on-the-roster", date(2024, 1, 1))
    assert w.families_with("health") == {"refused", "kept"}
    assert w.families_with("health", scope="kept") == {"kept"}


def test_health_feed_lookback_comes_from_the_config(warehouse_url):
    w = Warehouse(warehouse_url)
    w.treatment_episode(w.adult("ended_18_months_ago", "a"), date(2020, 1, 1), date(2022, 12, 31))
    w.mental_health_contact(w.adult("ended_8_months_ago", "b"), date(2020, 1, 1), date(2023, 10, 31))
    six_months = Criteria(**{**CRITERIA.model_dump(), "lookback_months": 6})
    assert w.families_with("health", criteria=six_months) == set()
    two_years = Criteria(**{**CRITERIA.model_dump(), "lookback_months": 24})
    assert w.families_with("health", criteria=two_years) == {"ended_18_months_ago", "ended_8_months_ago"}


def test_a_need_or_a_feed_record_each_flag_a_family_and_both_count_once(warehouse_url):
    w = Warehouse(warehouse_url)
    w.need(w.adult("need_only", "n"), "mental_health", date(2024, 1, 1))
    w.treatment_episode(w.adult("feed_only", "f"), date(2024, 1, 1))
    both = w.adult("both", "b1")
    w.need(both, "substance_misuse", date(2024, 1, 1))
    w.treatment_episode(both, date(2024, 2, 1))
    w.mental_health_contact(w.child("both", "b2"), date(2024, 3, 1))
    flags = w.flags()
    assert {ref for ref, row in flags.items() if row["health"] == 1} == {"need_only", "feed_only", "both"}
    assert flags["both"]["problem_count"] == 1


def test_without_the_health_feed_the_flag_is_as_before(warehouse_url):
    """No health source configured: its tables are empty and the needs alone decide, as before."""
    w = Warehouse(warehouse_url)
    w.need(w.adult("need", "n"), "physical_health", date(2024, 1, 1))
    w.adult("nothing", "x")
    assert w.families_with("health") == {"need"}
    found = w.indicators()
    assert found["health.treatment_episode"]["families"] == found["health.mental_health_contact"]["families"] == 0

"""children_need_help (contract section 5): a child's need active in the look-back window."""

from __future__ import annotations

from datetime import date

from criteria_helpers import R, Warehouse

WINDOW_START = date(2023, 6, 30)


NEEDS = ("child_in_need", "child_protection_plan", "early_help", "young_carer",
         # contract section 10
         "section_47", "child_sexual_exploitation", "missing_from_home", "emotional_wellbeing")


def test_each_child_need_counts(warehouse_url):
    w = Warehouse(warehouse_url)
    for need in NEEDS:
        w.need(w.child(need, f"{need}-p"), need, date(2024, 1, 1))
    for need in ("neet", "domestic_abuse", "mental_health", "substance_misuse", "child_missing_education",
                 "vulnerable_new_mother", "physical_health"):
        w.need(w.child(f"other_{need}", f"{need}-p", age=16), need, date(2024, 1, 1))
    assert w.families_with("children_need_help") == set(NEEDS)
    found = w.indicators()
    assert {k: v["families"] for k, v in found.items() if k.startswith("children_need_help.")} == {
        f"children_need_help.{need}": 1 for need in NEEDS}


def test_the_new_needs_only_for_children_and_in_the_window(warehouse_url):
    w = Warehouse(warehouse_url)
    for need in NEEDS[4:]:
        w.need(w.person(f"{need}_17", f"{need}-17", date(2006, 7, 1), role="child"), need, date(2024, 1, 1))
        w.need(w.person(f"{need}_18_on_R", f"{need}-18", date(2006, 6, 30), role="child"), need, date(2024, 1, 1))
        w.need(w.child(f"{need}_ended_on_window_start", f"{need}-ws"), need, date(2022, 1, 1), WINDOW_START)
        w.need(w.child(f"{need}_ended_day_after", f"{need}-wa"), need, date(2022, 1, 1), date(2023, 7, 1))
        w.need(w.child(f"{need}_starts_after_R", f"{need}-ar"), need, date(2024, 7, 1))
    assert w.families_with("children_need_help") == {
        f"{need}_{case}" for need in NEEDS[4:] for case in ("17", "ended_day_after")}


def test_active_in_the_window(warehouse_url):
    w = Warehouse(warehouse_url)
    spells = {
        "open_since_long_ago": (date(2015, 1, 1), None),
        "ended_on_window_start": (date(2022, 1, 1), WINDOW_START),
        "ended_day_after_window_start": (date(2022, 1, 1), date(2023, 7, 1)),
        "ended_before_R": (date(2023, 8, 1), date(2023, 12, 1)),
        "starts_on_R": (R, None),
        "starts_after_R": (date(2024, 7, 1), None),
    }
    for family, (start, end) in spells.items():
        w.need(w.child(family, f"{family}-p"), "child_in_need", start, end)
    assert w.families_with("children_need_help") == {"open_since_long_ago", "ended_day_after_window_start",
                                                     "ended_before_R", "starts_on_R"}


def test_only_children_at_R(warehouse_url):
    w = Warehouse(warehouse_url)
    w.need(w.person("seventeen", "s-p", date(2006, 7, 1), role="child"), "early_help", date(2024, 1, 1))
    w.need(w.person("eighteen_on_R", "e-p", date(2006, 6, 30), role="child"), "early_help", date(2024, 1, 1))
    w.need(w.adult("adult_carer", "a-p"), "young_carer", date(2024, 1, 1))
    assert w.families_with("children_need_help") == {"seventeen"}


def test_needs_of_people_not_on_the_roster_count_for_nobody(warehouse_url):
    w = Warehouse(warehouse_url)
    w.child("family", "on-roster")
    w.need("not-on-roster", "child_in_need", date(2024, 1, 1))
    counts = w.compute()
    assert counts["families_assessed"] == 1
    assert counts["children_need_help"] == 0


def test_scope_kept_ignores_a_child_who_is_not_kept(warehouse_url):
    w = Warehouse(warehouse_url)
    w.consent(w.adult("mixed", "parent"), True)
    w.consent(w.child("mixed", "refused-child"), False)
    w.need("refused-child", "child_protection_plan", date(2024, 1, 1))
    w.consent(w.child("kept", "kept-child"), True)
    w.need("kept-child", "child_protection_plan", date(2024, 1, 1))
    assert w.families_with("children_need_help") == {"mixed", "kept"}
    assert w.families_with("children_need_help", scope="kept") == {"kept"}

"""domestic_abuse (contract section 5): a domestic_abuse incident in the window or need active in it."""

from __future__ import annotations

from datetime import date

from criteria_helpers import R, Warehouse

WINDOW_START = date(2023, 6, 30)


def test_incident_in_the_window_in_any_role(warehouse_url):
    w = Warehouse(warehouse_url)
    incidents = {
        "victim": ("victim", date(2024, 1, 1)),
        "perpetrator_on_R": ("perpetrator", R),
        "child_subject_day_after_window_start": ("subject", date(2023, 7, 1)),
        "on_window_start": ("victim", WINDOW_START),
        "after_R": ("victim", date(2024, 7, 1)),
    }
    for family, (role, day) in incidents.items():
        w.incident(w.child(family, f"{family}-p", age=9), day, category="domestic_abuse", role=role)
    w.incident(w.adult("asb_incident", "asb-p"), date(2024, 1, 1), category="asb", role="victim")
    assert w.families_with("domestic_abuse") == {"victim", "perpetrator_on_R",
                                                 "child_subject_day_after_window_start"}


def test_need_active_in_the_window(warehouse_url):
    w = Warehouse(warehouse_url)
    spells = {
        "open": (date(2020, 1, 1), None),
        "ended_on_window_start": (date(2022, 1, 1), WINDOW_START),
        "ended_day_after_window_start": (date(2022, 1, 1), date(2023, 7, 1)),
        "starts_after_R": (date(2024, 7, 1), None),
    }
    for family, (start, end) in spells.items():
        w.need(w.adult(family, f"{family}-p"), "domestic_abuse", start, end)
    w.need(w.adult("mental_health", "mh-p"), "mental_health", date(2024, 1, 1))
    assert w.families_with("domestic_abuse") == {"open", "ended_day_after_window_start"}


def test_unlinked_incidents_count_for_nobody(warehouse_url):
    w = Warehouse(warehouse_url)
    w.adult("family", "p")
    w.incident(None, date(2024, 1, 1), category="domestic_abuse", role="victim")
    assert w.families_with("domestic_abuse") == set()


def test_scope_kept_ignores_a_member_who_is_not_kept(warehouse_url):
    w = Warehouse(warehouse_url)
    w.consent(w.adult("mixed", "kept-p"), True)
    w.consent(w.adult("mixed", "refused-p"), False)
    w.incident("refused-p", date(2024, 1, 1), category="domestic_abuse", role="perpetrator")
    w.need("refused-p", "domestic_abuse", date(2024, 1, 1))
    w.consent(w.adult("kept", "k"), True)
    w.incident("k", date(2024, 1, 1), category="domestic_abuse", role="victim")
    assert w.families_with("domestic_abuse") == {"mixed", "kept"}
    assert w.families_with("domestic_abuse", scope="kept") == {"kept"}

"""crime_asb (contract section 5): young proven offenders, asb incidents, housing asb, probation orders."""

from __future__ import annotations

from datetime import date

from criteria_helpers import R, Warehouse

WINDOW_START = date(2023, 6, 30)  # R - 12 months: an event on it is outside the window


def test_asb_incident_window_boundaries(warehouse_url):
    w = Warehouse(warehouse_url)
    for family, day in [("on_window_start", WINDOW_START), ("day_after_window_start", date(2023, 7, 1)),
                        ("on_R", R), ("after_R", date(2024, 7, 1))]:
        w.incident(w.adult(family, f"{family}-p"), day, category="asb", role="subject")
    w.adult("no_records", "no_records-p")
    assert w.families_with("crime_asb") == {"day_after_window_start", "on_R"}


def test_asb_counts_for_every_role_but_victim(warehouse_url):
    """Contract section 10: an asb incident counts with role offender, suspect, perpetrator or subject."""
    w = Warehouse(warehouse_url)
    for role in ("offender", "suspect", "perpetrator", "subject", "victim"):
        w.incident(w.adult(f"asb_{role}", f"{role}-p"), date(2024, 1, 1), category="asb", role=role)
    w.incident(w.adult("da_incident", "b"), date(2024, 1, 1), category="domestic_abuse", role="perpetrator")
    w.incident(w.adult("adult_offence", "c"), date(2024, 1, 1), category="offence", role="offender", proven=True)
    assert w.families_with("crime_asb") == {"asb_offender", "asb_suspect", "asb_perpetrator", "asb_subject"}


def test_a_victim_of_asb_does_not_hide_the_family_s_other_asb(warehouse_url):
    w = Warehouse(warehouse_url)
    victim = w.child("victim_and_perpetrator", "v-p", age=15)
    w.incident(victim, date(2024, 1, 1), category="asb", role="victim")
    w.incident(w.adult("victim_and_perpetrator", "parent-p"), date(2024, 2, 1), category="asb", role="perpetrator")
    w.incident(w.child("victim_twice", "v2-p", age=15), date(2024, 1, 1), category="asb", role="victim")
    w.incident("v2-p", date(2024, 3, 1), category="asb", role="victim")
    assert w.families_with("crime_asb") == {"victim_and_perpetrator"}


def test_indicators_name_the_rule_each_family_meets(warehouse_url):
    w = Warehouse(warehouse_url)
    w.child("young_offender", "yo-c", age=15)
    w.incident("yo-c", date(2024, 1, 1), category="offence", role="offender", proven=True)
    w.incident("yo-c", date(2024, 2, 1), category="asb", role="subject")
    w.incident(w.adult("asb_victim", "av"), date(2024, 1, 1), category="asb", role="victim")
    w.tenancy_event(w.adult("housing", "h"), "asb_warning", date(2024, 1, 1))
    w.case(w.adult("order", "o"), "licence", date(2024, 1, 1))
    found = w.indicators()
    assert {k: v["families"] for k, v in found.items() if k.startswith("crime_asb.")} == {
        "crime_asb.youth_offence": 1, "crime_asb.asb_incident": 1, "crime_asb.housing_asb": 1,
        "crime_asb.adult_order": 1}


def test_proven_offence_needs_age_10_to_17_on_the_incident_date(warehouse_url):
    w = Warehouse(warehouse_url)
    incident = date(2024, 1, 15)
    cases = {
        "aged_9": date(2014, 1, 16),  # 10th birthday the day after the incident
        "aged_10": date(2014, 1, 15),  # 10th birthday on the incident date
        "aged_17_but_18_at_R": date(2006, 1, 16),  # 18th birthday the day after the incident, before R
        "aged_18": date(2006, 1, 15),
    }
    for family, dob in cases.items():
        person = w.person(family, f"{family}-p", dob, role="child")
        w.incident(person, incident, category="offence", role="offender", proven=True)
    assert w.families_with("crime_asb") == {"aged_10", "aged_17_but_18_at_R"}


def test_offence_must_be_proven_by_an_offender_in_the_window(warehouse_url):
    w = Warehouse(warehouse_url)
    dob = date(2009, 5, 1)  # 14 or 15 on every date used here
    variants = {
        "proven_offender": dict(role="offender", proven=True, incident_date=date(2024, 1, 1)),
        "unproven": dict(role="offender", proven=False, incident_date=date(2024, 1, 1)),
        "proven_unknown": dict(role="offender", proven=None, incident_date=date(2024, 1, 1)),
        "suspect": dict(role="suspect", proven=True, incident_date=date(2024, 1, 1)),
        "victim": dict(role="victim", proven=True, incident_date=date(2024, 1, 1)),
        "on_window_start": dict(role="offender", proven=True, incident_date=WINDOW_START),
        "after_R": dict(role="offender", proven=True, incident_date=date(2024, 7, 1)),
    }
    for family, v in variants.items():
        w.incident(w.person(family, f"{family}-p", dob, role="child"), v["incident_date"], category="offence",
                   role=v["role"], proven=v["proven"])
    assert w.families_with("crime_asb") == {"proven_offender"}


def test_housing_asb_events_in_the_window(warehouse_url):
    w = Warehouse(warehouse_url)
    events = {
        "warning": ("asb_warning", date(2024, 2, 1)),
        "injunction": ("asb_injunction", date(2023, 7, 1)),
        "warning_on_window_start": ("asb_warning", WINDOW_START),
        "injunction_after_R": ("asb_injunction", date(2024, 7, 1)),
        "rent_arrears": ("rent_arrears", date(2024, 2, 1)),
    }
    for family, (event, day) in events.items():
        w.tenancy_event(w.adult(family, f"{family}-p"), event, day)
    assert w.families_with("crime_asb") == {"warning", "injunction"}


def test_community_orders_active_at_R_for_adults_with_parenting_responsibility(warehouse_url):
    w = Warehouse(warehouse_url)
    orders = {
        "licence_open": dict(order_type="licence", start_date=date(2024, 1, 1)),
        "community_order_ends_on_R": dict(order_type="community_order", start_date=date(2023, 1, 1), end_date=R),
        "suspended_ended_day_before_R": dict(order_type="suspended_sentence", start_date=date(2023, 1, 1),
                                             end_date=date(2024, 6, 29)),
        "licence_starts_after_R": dict(order_type="licence", start_date=date(2024, 7, 1)),
        "licence_starts_on_R": dict(order_type="licence", start_date=R),
        "no_parenting_responsibility": dict(order_type="licence", start_date=date(2024, 1, 1),
                                            parenting_responsibility=False),
        "parenting_unknown": dict(order_type="licence", start_date=date(2024, 1, 1), parenting_responsibility=None),
    }
    for family, order in orders.items():
        w.case(w.adult(family, f"{family}-p"), **order)
    # A 17-year-old on licence with parenting responsibility is not an adult at R.
    w.case(w.person("child_on_licence", "child-p", date(2006, 7, 1), role="child"), "licence", date(2024, 1, 1))
    # 18 on R exactly: an adult.
    w.case(w.person("eighteen_on_R", "e18-p", date(2006, 6, 30), role="adult"), "licence", date(2024, 1, 1))
    assert w.families_with("crime_asb") == {"licence_open", "community_order_ends_on_R", "licence_starts_on_R",
                                            "eighteen_on_R"}


def test_custody_release_within_12_months_after_R(warehouse_url):
    w = Warehouse(warehouse_url)
    releases = {
        "released_on_R": R,  # documented choice: (R, R + 12 months], a release on R does not count
        "released_day_after_R": date(2024, 7, 1),
        "released_12_months_after_R": date(2025, 6, 30),
        "released_day_later": date(2025, 7, 1),
        "released_before_R": date(2024, 6, 1),
        "release_unknown": None,
    }
    for family, release in releases.items():
        w.case(w.adult(family, f"{family}-p"), "custody", date(2023, 1, 1), release_date=release)
    w.case(w.adult("custody_no_parenting", "np-p"), "custody", date(2023, 1, 1), release_date=date(2024, 9, 1),
           parenting_responsibility=False)
    w.case(w.adult("custody_starts_after_R", "sa-p"), "custody", date(2024, 7, 1), release_date=date(2024, 9, 1))
    assert w.families_with("crime_asb") == {"released_day_after_R", "released_12_months_after_R"}


def test_unlinked_records_count_for_nobody(warehouse_url):
    w = Warehouse(warehouse_url)
    w.adult("family", "p")
    w.incident(None, date(2024, 1, 1), category="asb")
    w.tenancy_event(None, "asb_warning", date(2024, 1, 1))
    w.case(None, "licence", date(2024, 1, 1))
    flags = w.flags()
    assert flags["family"]["crime_asb"] == 0


def test_scope_kept_ignores_a_member_who_is_not_kept(warehouse_url):
    w = Warehouse(warehouse_url)
    kept, not_kept = w.adult("mixed", "kept-p"), w.adult("mixed", "not-kept-p")
    w.consent(kept, True)
    w.consent(not_kept, False)
    w.incident(not_kept, date(2024, 1, 1), category="asb")
    w.consent(w.adult("kept_offender", "ko-p"), True)
    w.incident("ko-p", date(2024, 1, 1), category="asb")
    w.incident(w.adult("nobody_kept", "nk-p"), date(2024, 1, 1), category="asb")
    w.consent("nk-p", False)
    assert w.families_with("crime_asb", scope="all") == {"mixed", "kept_offender", "nobody_kept"}
    kept_flags = w.flags(scope="kept")
    assert set(kept_flags) == {"mixed", "kept_offender"}  # a family with nobody kept is not assessed
    assert {f for f, row in kept_flags.items() if row["crime_asb"]} == {"kept_offender"}

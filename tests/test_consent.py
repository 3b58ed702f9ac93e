"""Consent states and the kept decision (contract section 6), in memory and in both warehouses."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import pandas as pd
import pytest
from sqlalchemy import insert, select

from tfp.consent import compute_consent, consent_states, kept
from tfp.feeds import DATASETS
from tfp.warehouse import connect, landing_log, person_consent, staging

R = date(2025, 3, 31)


def events(*rows: tuple[str, str, str, str]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"record_id": f"c{i}", "person_ref": p, "purpose": purpose, "status": status, "recorded_at": at}
         for i, (p, purpose, status, at) in enumerate(rows)]
    )


def state_of(states: pd.DataFrame, person: str) -> tuple[str, date | None]:
    row = states.set_index("person_ref").loc[person]
    return row["state"], row["state_on"]


def test_latest_event_wins():
    states = consent_states(events(
        ("P1", "tfp_evaluation", "given", "2024-01-01T09:00:00"),
        ("P1", "tfp_evaluation", "refused", "2024-06-01T09:00:00"),
        ("P2", "tfp_evaluation", "withdrawn", "2024-01-01T09:00:00"),
        ("P2", "tfp_evaluation", "given", "2024-02-01T09:00:00"),
    ), R)
    assert state_of(states, "P1") == ("refused", date(2024, 6, 1))
    assert state_of(states, "P2") == ("given", date(2024, 2, 1))


def test_latest_is_by_time_not_by_row_order():
    states = consent_states(events(
        ("P1", "tfp_evaluation", "given", "2024-06-01 10:00:00"),
        ("P1", "tfp_evaluation", "refused", "2024-06-01 09:59:59"),
    ), R)
    assert state_of(states, "P1") == ("given", date(2024, 6, 1))


@pytest.mark.parametrize("other", ["refused", "withdrawn"])
def test_tie_refused_or_withdrawn_beats_given(other):
    at = "2024-05-05T12:00:00"
    for order in ((("given", at), (other, at)), ((other, at), ("given", at))):
        states = consent_states(events(*(("P1", "tfp_evaluation", s, t) for s, t in order)), R)
        assert state_of(states, "P1") == (other, date(2024, 5, 5))


def test_tie_between_refused_and_withdrawn_is_withdrawn_in_either_order():
    at = "2024-05-05T12:00:00"
    for order in (("refused", "withdrawn"), ("withdrawn", "refused")):
        states = consent_states(events(*(("P1", "tfp_evaluation", s, at) for s in order)), R)
        assert state_of(states, "P1")[0] == "withdrawn"


def test_events_after_reference_date_are_ignored_and_the_day_itself_counts():
    states = consent_states(events(
        ("P1", "tfp_evaluation", "given", "2025-03-31T23:59:59"),   # on R: counts
        ("P2", "tfp_evaluation", "given", "2024-01-01T00:00:00"),
        ("P2", "tfp_evaluation", "withdrawn", "2025-04-01T00:00:00"),  # after R
        ("P3", "tfp_evaluation", "given", "2025-04-01T00:00:01"),   # only after R
    ), R)
    assert state_of(states, "P1") == ("given", date(2025, 3, 31))
    assert state_of(states, "P2") == ("given", date(2024, 1, 1))
    assert state_of(states, "P3") == ("none", None)


def test_service_purpose_is_ignored_and_no_event_is_none():
    states = consent_states(events(
        ("P1", "service", "given", "2024-01-01T00:00:00"),
        ("P2", "service", "refused", "2024-01-01T00:00:00"),
        ("P2", "tfp_evaluation", "given", "2023-01-01T00:00:00"),
    ), R)
    assert state_of(states, "P1") == ("none", None)
    assert state_of(states, "P2") == ("given", date(2023, 1, 1))
    assert list(consent_states(events(), R).columns) == ["person_ref", "state", "state_on"]


def test_recorded_at_as_datetime_objects_and_aware_values():
    frame = events(("P1", "tfp_evaluation", "given", "x"), ("P2", "tfp_evaluation", "given", "x"))
    # 2025-03-31 23:30 UTC is 2025-04-01 00:30 in London (BST): after R for a London calendar date.
    frame["recorded_at"] = [datetime(2025, 3, 1, 8, 0), datetime(2025, 3, 31, 23, 30, tzinfo=UTC)]
    states = consent_states(frame, R)
    assert state_of(states, "P1") == ("given", date(2025, 3, 1))
    assert state_of(states, "P2") == ("none", None)


@pytest.mark.parametrize(("state", "under_consent", "under_public_task"), [
    ("given", True, True), ("none", False, True), ("refused", False, False), ("withdrawn", False, False),
])
def test_kept_under_both_lawful_bases(state, under_consent, under_public_task):
    assert kept(state, "consent") is under_consent
    assert kept(state, "public_task") is under_public_task


def test_unknown_lawful_basis_is_refused():
    with pytest.raises(ValueError):
        kept("given", "legitimate_interest")


# -- compute_consent in the warehouse --------------------------------------------------------------

def land(conn, dataset: str, file_date: date, rows: list[dict]) -> None:
    """A staged file of ``dataset`` dated ``file_date``, as the staging stage would leave it."""
    landing_id = conn.execute(insert(landing_log).values(
        source=DATASETS[dataset].source, dataset=dataset, file_name=f"{dataset}_{file_date:%Y%m%d}.csv",
        file_date=file_date, sha256=uuid.uuid4().hex * 2, bytes=1, landed_at=datetime.now(UTC),
        landed_by_run=file_date, status="staged",
    )).inserted_primary_key[0]
    conn.execute(insert(staging[dataset]), [
        {"landing_id": landing_id, "file_date": file_date, "row_number": i, **row} for i, row in enumerate(rows, 1)
    ])


def person(ref: str, family: str) -> dict:
    return {"record_id": ref, "person_ref": ref, "family_ref": family, "role": "adult", "forename": "Ann",
            "surname": "Smith", "date_of_birth": date(1980, 1, 1), "sex": "F", "postcode": "SW1A 1AA",
            "programme_status": "intervention", "attached_date": date(2024, 5, 1)}


def consent_event(record: str, ref: str, status: str, at: datetime, purpose: str = "tfp_evaluation") -> dict:
    return {"record_id": record, "person_ref": ref, "purpose": purpose, "status": status, "recorded_at": at}


@pytest.fixture
def seeded(warehouse_url):
    engine = connect(warehouse_url)
    with engine.begin() as conn:
        land(conn, "families", date(2025, 3, 1), [person(p, "F1") for p in ("G", "R", "W", "N", "S")])
        land(conn, "families", date(2025, 4, 2), [person("LATE", "F9")])  # a roster after R: not read
        land(conn, "consent", date(2025, 3, 1), [
            consent_event("e1", "G", "given", datetime(2024, 1, 1, 9)),
            consent_event("e2", "R", "given", datetime(2024, 1, 1, 9)),
            consent_event("e3", "R", "refused", datetime(2024, 1, 1, 9)),  # tie: refused
            consent_event("e4", "W", "given", datetime(2024, 1, 1, 9)),
            consent_event("e5", "W", "withdrawn", datetime(2025, 2, 3, 14)),
            consent_event("e6", "S", "given", datetime(2024, 1, 1, 9), purpose="service"),
            consent_event("e7", "OUTSIDER", "given", datetime(2024, 1, 1, 9)),  # not on the roster
        ])
        land(conn, "consent", date(2025, 4, 2), [consent_event("e8", "N", "given", datetime(2025, 4, 2, 9))])
    return engine


def stored(engine, on: date) -> dict[str, tuple]:
    with engine.connect() as conn:
        rows = conn.execute(select(person_consent).where(person_consent.c.reference_date == on)).fetchall()
    return {r.person_ref: (r.state, r.state_on, bool(r.kept)) for r in rows}


def test_compute_consent_under_consent_basis(seeded):
    counts = compute_consent(seeded, R, "consent")
    assert counts == {"persons": 5, "kept": 1, "excluded": 4}
    assert stored(seeded, R) == {
        "G": ("given", date(2024, 1, 1), True),
        "R": ("refused", date(2024, 1, 1), False),
        "W": ("withdrawn", date(2025, 2, 3), False),
        "N": ("none", None, False),  # its only event is in a file after R
        "S": ("none", None, False),  # service consent is not evaluation consent
    }


def test_compute_consent_under_public_task_and_replacing_is_idempotent(seeded):
    compute_consent(seeded, R, "consent")
    first = compute_consent(seeded, R, "public_task")
    again = compute_consent(seeded, R, "public_task")
    assert first == again == {"persons": 5, "kept": 3, "excluded": 2}
    rows = stored(seeded, R)
    assert len(rows) == 5
    assert {p for p, (_, _, k) in rows.items() if k} == {"G", "N", "S"}


def test_compute_consent_keeps_other_dates_and_reads_the_later_roster(seeded):
    later = date(2025, 4, 30)
    compute_consent(seeded, R, "consent")
    assert compute_consent(seeded, later, "consent") == {"persons": 1, "kept": 0, "excluded": 1}
    assert stored(seeded, later) == {"LATE": ("none", None, False)}
    assert len(stored(seeded, R)) == 5


def test_compute_consent_on_an_empty_warehouse(warehouse_url):
    assert compute_consent(connect(warehouse_url), R, "consent") == {"persons": 0, "kept": 0, "excluded": 0}

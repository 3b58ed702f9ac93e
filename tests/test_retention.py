"""Retention: each category deleted exactly at its boundary, dry runs change nothing, and the
re-count fails the task when deletion is incomplete. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import func, insert, select, text

from helpers import make_config
from tfp.config import ConfigError
from tfp.months import add_months
from tfp.retention import RetentionIncomplete, run_category
from tfp.warehouse import (
    connect,
    deletion_log,
    landing_key,
    landing_log,
    links,
    quarantine,
    staging,
)

D = date(2025, 6, 30)


def _landing(conn, dataset="incidents", source="police", landed_at=None, path=None) -> int:
    return conn.execute(insert(landing_log).values(
        source=source, dataset=dataset, file_name=f"{dataset}_20250101.csv", file_date=date(2025, 1, 1),
        sha256="0" * 64, bytes=1, landed_at=landed_at or datetime.now(UTC), landed_by_run=D, status="staged",
        landing_path=path)).inserted_primary_key[0]


def _count(engine, table, *where):
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()


@pytest.fixture
def setup(tmp_path, warehouse_url):
    config = make_config(tmp_path, warehouse_url)
    return config, connect(warehouse_url)


def test_add_months_clamps_to_month_end():
    assert add_months(date(2024, 2, 29), -12) == date(2023, 2, 28)
    assert add_months(date(2025, 6, 30), -15) == date(2024, 3, 30)
    assert add_months(date(2025, 5, 31), -3) == date(2025, 2, 28)
    assert add_months(date(2023, 3, 31), 11) == date(2024, 2, 29)
    assert add_months(date(2024, 12, 15), 1) == date(2025, 1, 15)


def test_landing_copies_boundary_and_crypto_shredding(setup):
    config, engine = setup
    ids = {}
    for name, age in (("inside", 30), ("past", 31)):
        with engine.begin() as conn:
            landed = datetime.combine(D - timedelta(days=age), datetime.min.time(), tzinfo=UTC) + timedelta(hours=9)
            lid = _landing(conn, landed_at=landed, path=f"landing/police/{name}.raw.bin")
            conn.execute(text(f"UPDATE landing_log SET landing_path = 'landing/police/{lid}.raw.bin' WHERE id = {lid}"))
            conn.execute(insert(landing_key).values(landing_id=lid, key=b"k" * 32))
        copy = config.work_dir / "landing" / "police" / f"{lid}.raw.bin"
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(b"ciphertext")
        ids[name] = (lid, copy)
    dry = run_category(engine, config, "landing_copies", D, dry_run=True)
    assert (dry.found, dry.deleted) == (1, 0)
    assert all(copy.exists() for _, copy in ids.values())
    done = run_category(engine, config, "landing_copies", D, dry_run=False)
    assert (done.found, done.deleted, done.cutoff) == (1, 1, "2025-05-31")
    assert ids["inside"][1].exists() and not ids["past"][1].exists()
    assert _count(engine, landing_key, landing_key.c.landing_id == ids["past"][0]) == 0  # the key is gone
    assert _count(engine, landing_key, landing_key.c.landing_id == ids["inside"][0]) == 1
    assert _count(engine, landing_log) == 2  # the log of file names and checksums stays
    again = run_category(engine, config, "landing_copies", D, dry_run=False)  # harmless twice
    assert again.found == 0


def _quarantine_rows(engine):
    with engine.begin() as conn:
        lid = _landing(conn)
        for days in (30, 31):
            conn.execute(insert(quarantine).values(landing_id=lid, row_number=days, rules="nino_format",
                                                   row_json="{}", quarantined_on=D - timedelta(days=days)))


def test_quarantine_boundary_and_dry_run(setup):
    config, engine = setup
    _quarantine_rows(engine)
    assert run_category(engine, config, "quarantine", D, dry_run=True).found == 1
    assert _count(engine, quarantine) == 2
    assert run_category(engine, config, "quarantine", D, dry_run=False).deleted == 1
    with engine.connect() as conn:
        assert conn.execute(select(quarantine.c.row_number)).scalars().all() == [30]
    with engine.connect() as conn:
        logged = conn.execute(select(deletion_log.c.category, deletion_log.c.deleted, deletion_log.c.dry_run)
                              .order_by(deletion_log.c.id)).all()
    assert [tuple(r) for r in logged] == [("quarantine", 1, True), ("quarantine", 1, False)]


def test_recount_fails_when_deletion_is_incomplete(setup):
    config, engine = setup
    _quarantine_rows(engine)
    with engine.begin() as conn:  # the database silently keeps rows it was told to delete
        if engine.dialect.name == "sqlite":
            conn.execute(text("CREATE TRIGGER keep BEFORE DELETE ON quarantine BEGIN SELECT RAISE(IGNORE); END"))
        else:
            conn.execute(text("CREATE RULE keep AS ON DELETE TO quarantine DO INSTEAD NOTHING"))
    with pytest.raises(RetentionIncomplete, match="quarantined rows from before 2025-05-31 remain"):
        run_category(engine, config, "quarantine", D, dry_run=False)


def test_aged_staging_boundary(setup):
    config, engine = setup
    cutoff = add_months(D, -15)
    cases = {"on_cutoff": (cutoff - timedelta(days=30), cutoff),
             "day_before": (cutoff - timedelta(days=30), cutoff - timedelta(days=1)),
             "old_but_ends_late": (cutoff - timedelta(days=400), D), "old_ended": (date(2020, 1, 1), date(2021, 1, 1))}
    with engine.begin() as conn:
        lid = _landing(conn, dataset="benefits", source="dwp")
        for i, (record_id, (start, end)) in enumerate(cases.items()):
            conn.execute(insert(staging["benefits"]).values(
                landing_id=lid, record_id=record_id, file_date=date(2025, 1, 1), row_number=i + 1,
                surname="X", date_of_birth=date(1950, 1, 1), benefit="uc", claim_start=start, claim_end=end))
        alid = _landing(conn, dataset="attendance", source="schools")
        for i, term in enumerate(("2022-SUM", "2023-AUT", "2023-SPR")):  # ends 2023-07-31, 2023-12-31, 2024-03-31
            conn.execute(insert(staging["attendance"]).values(
                landing_id=alid, record_id=term, file_date=date(2025, 1, 1), row_number=i + 1, surname="X",
                term=term, sessions_possible=10, sessions_missed=1))
    outcome = run_category(engine, config, "staging", D, dry_run=False)
    assert outcome.deleted == 4  # day_before, old_ended, and the two terms that ended before 2024-03-30
    with engine.connect() as conn:
        assert sorted(conn.execute(select(staging["benefits"].c.record_id)).scalars()) == \
            ["old_but_ends_late", "on_cutoff"]
        assert conn.execute(select(staging["attendance"].c.record_id)).scalars().all() == ["2023-SPR"]


def test_open_spells_are_never_aged(setup):
    """The review's fault: an open claim or order that started before the cutoff was deleted as old,
    and its family lost worklessness or crime. Open means no end date (custody: no release either)."""
    config, engine = setup
    old = date(2019, 4, 1)
    claims = {"open_claim": None, "ended_claim": date(2020, 1, 1)}
    orders = {  # record_id: (order_type, end_date, release_date)
        "open_licence": ("licence", None, date(2019, 6, 1)), "open_community": ("community_order", None, None),
        "in_custody": ("custody", None, None), "released_custody": ("custody", None, date(2020, 1, 1)),
        "ended_order": ("suspended_sentence", date(2020, 1, 1), None)}
    with engine.begin() as conn:
        lid = _landing(conn, dataset="benefits", source="dwp")
        for i, (record_id, end) in enumerate(claims.items()):
            conn.execute(insert(staging["benefits"]).values(
                landing_id=lid, record_id=record_id, file_date=date(2025, 1, 1), row_number=i + 1, surname="X",
                date_of_birth=date(1980, 1, 1), benefit="uc", out_of_work=True, claim_start=old, claim_end=end))
        clid = _landing(conn, dataset="cases", source="probation")
        for i, (record_id, (order, end, release)) in enumerate(orders.items()):
            conn.execute(insert(staging["cases"]).values(
                landing_id=clid, record_id=record_id, file_date=date(2025, 1, 1), row_number=i + 1, surname="X",
                date_of_birth=date(1980, 1, 1), order_type=order, start_date=old, end_date=end,
                release_date=release))
    outcome = run_category(engine, config, "staging", D, dry_run=False)
    assert outcome.deleted == 3
    with engine.connect() as conn:
        assert conn.execute(select(staging["benefits"].c.record_id)).scalars().all() == ["open_claim"]
        assert sorted(conn.execute(select(staging["cases"].c.record_id)).scalars()) == \
            ["in_custody", "open_community", "open_licence"]


def test_refuses_staging_shorter_than_lookback(tmp_path, sqlite_url):
    """Retention that ran with such a config would delete records inside the criteria window: refused at load."""
    with pytest.raises(ConfigError, match="retention.staging_months: shorter than criteria.lookback_months"):
        make_config(tmp_path, sqlite_url, retention={"staging_months": 6})


def test_withdrawn_people_lose_records_links_and_needs(setup):
    config, engine = setup
    with engine.begin() as conn:
        consent_lid = _landing(conn, dataset="consent", source="children_services")
        for i, (person, status, when) in enumerate((("P1", "given", "2024-01-01T10:00:00"),
                                                    ("P1", "withdrawn", "2025-03-01T10:00:00"),
                                                    ("P2", "given", "2024-01-01T10:00:00"),
                                                    ("P3", "withdrawn", "2025-07-01T10:00:00"))):  # after D
            conn.execute(insert(staging["consent"]).values(
                landing_id=consent_lid, record_id=f"c{i}", file_date=date(2025, 1, 1), row_number=i + 1,
                person_ref=person, purpose="tfp_evaluation", status=status,
                recorded_at=datetime.fromisoformat(when)))
        needs_lid = _landing(conn, dataset="needs", source="children_services")
        inc_lid = _landing(conn, dataset="incidents", source="police")
        for person in ("P1", "P2", "P3"):
            conn.execute(insert(staging["needs"]).values(
                landing_id=needs_lid, record_id=f"n{person}", file_date=date(2025, 1, 1), row_number=1,
                person_ref=person, need="early_help", start_date=date(2024, 5, 1)))
            conn.execute(insert(staging["incidents"]).values(
                landing_id=inc_lid, record_id=f"i{person}", file_date=date(2025, 1, 1), row_number=1,
                surname="X", date_of_birth=date(1990, 1, 1), incident_date=date(2024, 5, 1), category="asb",
                role="subject"))
            conn.execute(insert(links).values(reference_date=D, dataset="incidents", record_id=f"i{person}",
                                              person_ref=person, match_probability=0.99, method="probabilistic"))
        roster_lid = _landing(conn, dataset="families", source="children_services")
        for i, person in enumerate(("P1", "P2")):
            conn.execute(insert(staging["families"]).values(
                landing_id=roster_lid, record_id=person, file_date=date(2025, 1, 1), row_number=i + 1,
                forename="Anna", surname="Kowalska", date_of_birth=date(1980, 1, 1), postcode="SW1A 1AA",
                family_ref="F1", person_ref=person, role="adult", nino="AB123456C", programme_status="comparison"))
            conn.execute(insert(quarantine).values(
                landing_id=roster_lid, row_number=10 + i, rules="nino_format", quarantined_on=D,
                row_json=f'{{"person_ref": "{person}", "surname": "Kowalska", "nino": "AB12"}}'))
    dry = run_category(engine, config, "withdrawn", D, dry_run=True)
    assert dry.found == 5 and _count(engine, staging["incidents"]) == 3  # record, need, link, roster row, quarantined
    run_category(engine, config, "withdrawn", D, dry_run=False)
    with engine.connect() as conn:
        roster = {r.person_ref: r for r in conn.execute(select(staging["families"]))}
        assert conn.execute(select(quarantine.c.row_number)).scalars().all() == [11]  # P1's quarantined row gone
    assert [c for c in staging["families"].c.keys() if getattr(roster["P1"], c) is not None] == \
        ["landing_id", "record_id", "file_date", "row_number", "family_ref", "person_ref"]
    assert roster["P2"].nino == "AB123456C"
    with engine.connect() as conn:
        assert sorted(conn.execute(select(staging["incidents"].c.record_id)).scalars()) == ["iP2", "iP3"]
        assert sorted(conn.execute(select(staging["needs"].c.person_ref)).scalars()) == ["P2", "P3"]
        assert sorted(conn.execute(select(links.c.person_ref)).scalars()) == ["P2", "P3"]


def test_programme_end_purges_everything_personal(setup):
    config, engine = setup
    _quarantine_rows(engine)
    outbox = config.outbox_dir / "2025-06-29"
    outbox.mkdir(parents=True)
    (outbox / "tfp_submission.csv").write_text("x\n")
    killed_link = config.work_dir / "link-spill" / "2025-06-28" / "link-spill-x"  # a link killed mid-spill
    killed_link.mkdir(parents=True)
    (killed_link / "duckdb_temp_storage-0.tmp").write_bytes(b"pairs")
    end = config.retention.delete_all_after
    assert run_category(engine, config, "programme_end", end - timedelta(days=1), dry_run=False).found == 0
    assert _count(engine, quarantine) == 2 and outbox.exists()
    assert run_category(engine, config, "programme_end", end, dry_run=True).found == 2 + 1 + 1
    run_category(engine, config, "programme_end", end, dry_run=False)
    assert _count(engine, quarantine) == 0
    assert not any(config.outbox_dir.rglob("*"))
    assert not (config.work_dir / "link-spill").exists()
    assert _count(engine, landing_log) == 1  # names and checksums only: kept


# -- the health source (contract section 10) ------------------------------------------------------------------

def _health_rows(conn, spells: dict[str, tuple[date, date | None]]) -> None:
    """A treatment episode and a mental-health contact per spell, with record ids t_<name> and m_<name>."""
    tlid = _landing(conn, dataset="treatment_episodes", source="health")
    mlid = _landing(conn, dataset="mental_health_contacts", source="health")
    for i, (name, (start, end)) in enumerate(spells.items()):
        conn.execute(insert(staging["treatment_episodes"]).values(
            landing_id=tlid, record_id=f"t_{name}", file_date=date(2025, 1, 1), row_number=i + 1, surname="X",
            date_of_birth=date(1980, 1, 1), nhs_number="9434765919", episode_start=start, episode_end=end,
            substance_group="alcohol"))
        conn.execute(insert(staging["mental_health_contacts"]).values(
            landing_id=mlid, record_id=f"m_{name}", file_date=date(2025, 1, 1), row_number=i + 1, surname="X",
            date_of_birth=date(1980, 1, 1), nhs_number="9434765919", referral_date=start, discharge_date=end,
            service_type="iapt"))


def test_health_spells_age_at_the_boundary_and_open_ones_never(setup):
    """An episode or contact is aged when its start and end are before R - staging_months; an open one (no end
    or discharge) or one ending on or after the cutoff is kept, however long ago it started."""
    config, engine = setup
    cutoff = add_months(D, -15)
    spells = {"on_cutoff": (cutoff - timedelta(days=30), cutoff),
              "day_before": (cutoff - timedelta(days=30), cutoff - timedelta(days=1)),
              "old_but_ends_late": (date(2019, 1, 1), D), "old_ended": (date(2019, 1, 1), date(2020, 1, 1)),
              "old_and_open": (date(2019, 1, 1), None), "recent": (D - timedelta(days=10), None)}
    with engine.begin() as conn:
        _health_rows(conn, spells)
    dry = run_category(engine, config, "staging", D, dry_run=True)
    assert dry.found == 4 and _count(engine, staging["treatment_episodes"]) == len(spells)
    assert run_category(engine, config, "staging", D, dry_run=False).deleted == 4
    kept = ["old_and_open", "old_but_ends_late", "on_cutoff", "recent"]
    with engine.connect() as conn:
        assert sorted(conn.execute(select(staging["treatment_episodes"].c.record_id)).scalars()) == \
            [f"t_{k}" for k in kept]
        assert sorted(conn.execute(select(staging["mental_health_contacts"].c.record_id)).scalars()) == \
            [f"m_{k}" for k in kept]


def test_a_withdrawn_person_loses_their_health_records_and_roster_nhs_number(setup):
    config, engine = setup
    with engine.begin() as conn:
        consent_lid = _landing(conn, dataset="consent", source="children_services")
        for i, (person, status) in enumerate((("P1", "withdrawn"), ("P2", "given"))):
            conn.execute(insert(staging["consent"]).values(
                landing_id=consent_lid, record_id=f"c{i}", file_date=date(2025, 1, 1), row_number=i + 1,
                person_ref=person, purpose="tfp_evaluation", status=status,
                recorded_at=datetime(2025, 3, 1, 10, 0)))
        roster_lid = _landing(conn, dataset="families", source="children_services")
        for i, person in enumerate(("P1", "P2")):
            conn.execute(insert(staging["families"]).values(
                landing_id=roster_lid, record_id=person, file_date=date(2025, 1, 1), row_number=i + 1,
                surname="X", date_of_birth=date(1980, 1, 1), family_ref="F1", person_ref=person, role="adult",
                programme_status="comparison", nhs_number="9434765919" if person == "P1" else "4010232137"))
        _health_rows(conn, {"P1": (date(2024, 5, 1), None), "P2": (date(2024, 5, 1), None)})
        for person in ("P1", "P2"):
            for dataset, prefix in (("treatment_episodes", "t"), ("mental_health_contacts", "m")):
                conn.execute(insert(links).values(reference_date=D, dataset=dataset, record_id=f"{prefix}_{person}",
                                                  person_ref=person, match_probability=1.0, method="nhs_number"))
    dry = run_category(engine, config, "withdrawn", D, dry_run=True)
    assert dry.found == 5  # two records, two links, one roster row
    run_category(engine, config, "withdrawn", D, dry_run=False)
    with engine.connect() as conn:
        assert conn.execute(select(staging["treatment_episodes"].c.record_id)).scalars().all() == ["t_P2"]
        assert conn.execute(select(staging["mental_health_contacts"].c.record_id)).scalars().all() == ["m_P2"]
        assert sorted(conn.execute(select(links.c.record_id)).scalars()) == ["m_P2", "t_P2"]
        numbers = dict(conn.execute(select(staging["families"].c.person_ref, staging["families"].c.nhs_number)).all())
    assert numbers == {"P1": None, "P2": "4010232137"}

"""Validate and stage over the warehouse: every row staged or quarantined, counts that add up, the
as-of-R rules, re-sent files, file-level failures that name the file and rule, and idempotent re-runs.
On SQLite and PostgreSQL."""

from __future__ import annotations

import csv
from datetime import date

import pytest
from sqlalchemy import func, select

from helpers import make_config, write_feed
from tfp.current import current_rows
from tfp.extract import land_source
from tfp.feeds import SOURCES
from tfp.report import current_files
from tfp.stage import stage_source
from tfp.validate import FilesRejected, validate_source
from tfp.warehouse import connect, landing_log, quarantine, staging
from tfp_dev.generate import generate

R = date(2025, 3, 31)
NEEDS = ["record_id", "person_ref", "need", "start_date", "end_date"]
FAMILIES = ["record_id", "forename", "surname", "date_of_birth", "sex", "postcode", "family_ref", "person_ref",
            "role", "upn", "nino", "uprn", "programme_status", "attached_date"]


def _process(engine, config, reference_date, sources=SOURCES):
    for source in sources:
        land_source(engine, config, source, reference_date)
        validate_source(engine, config, source, reference_date)
        stage_source(engine, config, source, reference_date)


def _table_counts(engine):
    with engine.connect() as conn:
        counts = {name: conn.execute(select(func.count()).select_from(t)).scalar_one() for name, t in staging.items()}
        counts["quarantine"] = conn.execute(select(func.count()).select_from(quarantine)).scalar_one()
        counts["landing_log"] = conn.execute(select(func.count()).select_from(landing_log)).scalar_one()
    return counts


def test_generated_borough_every_row_accounted_for(tmp_path, warehouse_url):
    generate(tmp_path / "inbound", families=60, seed=11, on=R)
    config = make_config(tmp_path, warehouse_url)
    engine = connect(warehouse_url)
    data_rows = {}  # counted before the run, which removes the landed plaintext from the drop folders
    for path in (tmp_path / "inbound").glob("*/*.csv"):
        with path.open(encoding="utf-8-sig", newline="") as handle:
            data_rows[path.name] = sum(1 for _ in csv.reader(handle)) - 1
    _process(engine, config, R)
    files = current_files(engine, R)
    assert len(files) == 8 and all(f["status"] == "staged" for f in files)
    for f in files:
        assert f["rows_read"] == data_rows[f["name"]], f["name"]
        assert f["rows_read"] == f["rows_staged"] + f["rows_quarantined"], f["name"]
    # exactly the rows the generator broke on purpose are quarantined
    with (tmp_path / "inbound/truth/records.csv").open(encoding="utf-8") as handle:
        truth = list(csv.DictReader(handle))
    broken = {(r["dataset"], r["record_id"]) for r in truth if r["valid"] == "N"}
    with engine.connect() as conn:
        rows = conn.execute(select(landing_log.c.dataset, quarantine.c.row_json)
                            .join(landing_log, landing_log.c.id == quarantine.c.landing_id)).all()
    import json

    quarantined = {(d, json.loads(j)["record_id"]) for d, j in rows}
    partner = {q for q in quarantined if q[0] in {r["dataset"] for r in truth}}
    assert partner == broken
    # re-running the date changes nothing
    before = _table_counts(engine)
    _process(engine, config, R)
    assert _table_counts(engine) == before


def test_as_of_rules_newest_file_wins(tmp_path, warehouse_url):
    config = make_config(tmp_path, warehouse_url)
    engine = connect(warehouse_url)
    write_feed(tmp_path, "children_services", "needs_20250101.csv", NEEDS,
               [["n1", "P1", "early_help", "2024-12-01", ""], ["n2", "P2", "neet", "2024-12-01", ""]])
    write_feed(tmp_path, "children_services", "needs_20250201.csv", NEEDS,
               [["n1", "P1", "early_help", "2024-12-01", "2025-01-15"]])  # n1 re-sent with an end date
    write_feed(tmp_path, "children_services", "needs_20250401.csv", NEEDS,
               [["n3", "P3", "neet", "2025-03-01", ""]])  # after R: not read
    person = ["Ann", "Lee", "1980-01-01", "F", "SW1A 1AA"]
    write_feed(tmp_path, "children_services", "families_20250101.csv", FAMILIES,
               [["A", *person, "F1", "A", "adult", "", "", "", "comparison", ""],
                ["B", *person, "F1", "B", "adult", "", "", "", "comparison", ""]])
    write_feed(tmp_path, "children_services", "families_20250301.csv", FAMILIES,
               [["A", *person, "F1", "A", "adult", "", "", "", "intervention", "2025-02-01"]])
    _process(engine, config, R, ["children_services"])
    with engine.connect() as conn:
        needs = current_rows(conn, "needs", R).set_index("record_id")
        roster = current_rows(conn, "families", R)
        early = current_rows(conn, "needs", date(2025, 1, 31)).set_index("record_id")
    assert sorted(needs.index) == ["n1", "n2"]
    assert needs.loc["n1", "end_date"] is not None  # the newer file's row
    assert early.loc["n1", "end_date"] is None  # as of January only the first file counts
    assert roster["person_ref"].tolist() == ["A"]  # only the newest snapshot
    assert roster["programme_status"].tolist() == ["intervention"]


def test_resent_file_with_corrections_supersedes_the_old_copy(tmp_path, warehouse_url):
    config = make_config(tmp_path, warehouse_url)
    engine = connect(warehouse_url)
    write_feed(tmp_path, "children_services", "needs_20250101.csv", NEEDS,
               [["n1", "P1", "early_help", "2024-12-01", ""], ["n2", "P2", "neet", "2024-12-01", ""]])
    _process(engine, config, R, ["children_services"])
    write_feed(tmp_path, "children_services", "needs_20250101.csv", NEEDS, [["n1", "P1", "early_help", "2024-12-01", ""]])
    _process(engine, config, R, ["children_services"])
    with engine.connect() as conn:
        statuses = conn.execute(select(landing_log.c.status).order_by(landing_log.c.id)).scalars().all()
        needs = current_rows(conn, "needs", R)
    assert statuses == ["superseded", "staged"]
    assert needs["record_id"].tolist() == ["n1"]


@pytest.mark.parametrize(
    ("name", "body", "rule"),
    [
        ("needs_20250101.csv", b"record_id,person_ref,need,start_date\nn1,P1,neet,2024-01-01\n",
         "required column missing: end_date"),
        ("needs_20250101.csv", "record_id,person_ref,need,start_date,end_date\nn1,P1,neet,2024-01-01,\n"
         "n2,Zo\u00eb,neet,2024-01-01,\n".encode("latin-1"), "not readable as UTF-8"),
        ("needs_20250101.csv", b"record_id,person_ref,need,start_date,end_date\n"
         + b"".join(b"n%d,P%d,neet,2024-01-01,\n" % (i, i) for i in range(18))
         + b"x1,P1,nonsense,2024-01-01,\nx2,P1,neet,2024-02-30,\n", "more than 5% of rows quarantined"),
    ],
)
def test_broken_file_fails_naming_file_and_rule_and_keeps_failing(tmp_path, warehouse_url, name, body, rule):
    config = make_config(tmp_path, warehouse_url)
    engine = connect(warehouse_url)
    (tmp_path / "inbound/children_services" / name).write_bytes(body)
    land_source(engine, config, "children_services", R)
    with pytest.raises(FilesRejected) as info:
        validate_source(engine, config, "children_services", R)
    assert f"file {name} rejected: {rule}" in str(info.value)
    assert "Zo" not in str(info.value) and "P1" not in str(info.value)
    with pytest.raises(FilesRejected, match=name):  # a re-run fails again until the partner re-sends
        _process(engine, config, R, ["children_services"])
    assert _table_counts(engine)["needs"] == 0
    write_feed(tmp_path, "children_services", name, NEEDS, [["n1", "P1", "neet", "2024-01-01", ""]])
    _process(engine, config, R, ["children_services"])
    assert _table_counts(engine)["needs"] == 1


CONSENT = ["record_id", "person_ref", "purpose", "status", "recorded_at"]


@pytest.mark.parametrize("chunk", [1, 50_000], ids=["one-row-chunks", "whole-files"])
def test_a_withdrawn_person_is_never_stored_with_identifiers_again(tmp_path, warehouse_url, chunk, monkeypatch):
    """Review item 5: after a withdrawal the roster kept name, date of birth, NINO, UPN, UPRN and
    postcode in every snapshot. The withdrawal retention empties them in old snapshots; a later
    snapshot that still lists the person is staged with the references only, also when it comes in
    the same night as the withdrawal and is dated before it."""
    import tfp.stage
    from tfp.retention import ROSTER_SCRUBBED, run_category

    monkeypatch.setattr(tfp.stage, "STAGE_CHUNK_ROWS", chunk)  # every chunk of a roster file is scrubbed
    config = make_config(tmp_path, warehouse_url)
    engine = connect(warehouse_url)

    def person(ref, nino):
        return [ref, "Anna", "Kowalska", "1980-01-01", "F", "SW1A 1AA", "F1", ref, "adult", "", nino,
                "100020000004", "intervention", "2024-06-01"]

    def roster_rows(file_date):
        table = staging["families"]
        with engine.connect() as conn:
            return {r.person_ref: r for r in conn.execute(select(table).where(table.c.file_date == file_date))}

    write_feed(tmp_path, "children_services", "families_20250101.csv", FAMILIES,
               [person("A", "AB123456C"), person("B", "AB123457C"), person("C", "AB123458C")])
    write_feed(tmp_path, "children_services", "consent_20250101.csv", CONSENT,
               [["c1", "A", "tfp_evaluation", "given", "2024-06-01T10:00:00"],
                ["c2", "B", "tfp_evaluation", "given", "2024-06-01T10:00:00"]])
    _process(engine, config, date(2025, 1, 31), ["children_services"])
    write_feed(tmp_path, "children_services", "consent_20250215.csv", CONSENT,
               [["c3", "A", "tfp_evaluation", "withdrawn", "2025-02-15T09:00:00"]])
    _process(engine, config, date(2025, 2, 28), ["children_services"])
    run_category(engine, config, "withdrawn", date(2025, 2, 28), dry_run=False)
    old = roster_rows(date(2025, 1, 1))
    assert all(getattr(old["A"], c) is None for c in ROSTER_SCRUBBED)
    assert (old["A"].person_ref, old["A"].family_ref) == ("A", "F1")
    assert old["B"].nino == "AB123457C" and old["B"].surname == "Kowalska"  # others untouched
    # the next roster still lists A; B withdraws in a consent file of the same night, dated after the roster
    write_feed(tmp_path, "children_services", "families_20250305.csv", FAMILIES,
               [person("A", "AB123456C"), person("B", "AB123457C"), person("C", "AB123458C"),
                person("D", "AB123459C")])
    write_feed(tmp_path, "children_services", "consent_20250310.csv", CONSENT,
               [["c4", "B", "tfp_evaluation", "withdrawn", "2025-03-10T09:00:00"],
                ["c5", "A", "tfp_evaluation", "given", "2025-03-10T09:00:00"]])  # consent again: still no identifiers
    _process(engine, config, R, ["children_services"])
    new = roster_rows(date(2025, 3, 5))
    for ref in ("A", "B"):
        assert all(getattr(new[ref], c) is None for c in ROSTER_SCRUBBED), ref
        assert (new[ref].person_ref, new[ref].family_ref) == (ref, "F1")
    assert new["C"].nino == "AB123458C" and new["C"].date_of_birth == date(1980, 1, 1)


def test_staging_a_chunk_at_a_time_stores_what_staging_whole_stores(tmp_path, monkeypatch):
    """Files are typed and inserted STAGE_CHUNK_ROWS rows at a time; with chunks of 7 rows every staging
    table holds the same rows, in the same order, as with each file staged whole."""
    import tfp.stage

    def staged(folder, chunk):
        monkeypatch.setattr(tfp.stage, "STAGE_CHUNK_ROWS", chunk)
        generate(folder / "inbound", families=30, seed=12, on=R)
        url = f"sqlite:///{folder / 'w.db'}"
        engine = connect(url)
        _process(engine, make_config(folder, url), R)
        with engine.connect() as conn:
            return {name: [tuple(r)[2:] for r in conn.execute(select(t).order_by(*t.primary_key.columns))]
                    for name, t in staging.items()}

    whole, chunked = staged(tmp_path / "whole", 10**9), staged(tmp_path / "chunked", 7)
    assert sum(len(rows) for rows in whole.values()) > 500 and max(len(r) for r in whole.values()) > 7
    assert chunked == whole

"""Partners, not just sources (issue 17 item 1; contract section 10): rows carry their partner through
landing, quarantine and staging; a record_id is unique per partner; the as-of rules apply per partner;
identical files of two partners are two landings. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import select

from helpers import make_config
from tfp.current import current_rows
from tfp.extract import land_source
from tfp.stage import stage_source
from tfp.statuses import LandingStatus
from tfp.validate import FilesRejected, validate_source
from tfp.warehouse import connect, landing_log, quarantine

R = date(2025, 3, 31)
EVENTS = ["record_id", "forename", "surname", "date_of_birth", "sex", "postcode", "uprn", "tenancy_ref", "event",
          "event_date", "arrears_amount"]
PARTNERS = ("clarion", "peabody")


def _row(record_id: str, event: str, day: str, surname: str = "Smith") -> list[str]:
    return [record_id, "Ann", surname, "1980-01-01", "F", "SW1A 1AA", "100000000001", "T1", event, day, ""]


def _write(folder: Path, partner: str, name: str, rows: list[list[str]]) -> None:
    path = folder / "in" / partner / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([",".join(EVENTS), *(",".join(r) for r in rows)]) + "\n", encoding="utf-8")


def _config(tmp_path: Path, url: str):
    return make_config(tmp_path, url, sources={"housing": {"partners": [
        {"id": p, "transport": "directory", "path": f"in/{p}"} for p in PARTNERS]}})


def _night(engine, config, day: date) -> None:
    for partner in PARTNERS:
        land_source(engine, config, "housing", day, partner=partner)
        validate_source(engine, config, "housing", day, partner=partner)
        stage_source(engine, config, "housing", day, partner=partner)


def _current(engine, day: date) -> dict[str, tuple[str, str]]:
    with engine.connect() as conn:
        frame = current_rows(conn, "tenancy_events", day)
    return {r.record_id: (r.event, r.surname) for r in frame.itertuples()}


def test_the_same_record_id_from_two_partners_is_two_records(tmp_path, warehouse_url):
    config = _config(tmp_path, warehouse_url)
    engine = connect(warehouse_url)
    _write(tmp_path, "clarion", "tenancy_events_20250301.csv", [_row("H1", "rent_arrears", "2025-02-01")])
    _write(tmp_path, "peabody", "tenancy_events_20250301.csv", [_row("H1", "eviction", "2025-02-02", "Jones")])
    _night(engine, config, R)
    assert _current(engine, R) == {"clarion:H1": ("rent_arrears", "Smith"), "peabody:H1": ("eviction", "Jones")}
    with engine.connect() as conn:
        logged = conn.execute(select(landing_log.c.source, landing_log.c.partner, landing_log.c.status)
                              .order_by(landing_log.c.partner)).all()
    assert [tuple(r) for r in logged] == [("housing", p, LandingStatus.STAGED) for p in PARTNERS]


def test_as_of_and_supersede_apply_per_partner(tmp_path, warehouse_url):
    config = _config(tmp_path, warehouse_url)
    engine = connect(warehouse_url)
    _write(tmp_path, "clarion", "tenancy_events_20250301.csv", [_row("H1", "rent_arrears", "2025-02-01")])
    _write(tmp_path, "peabody", "tenancy_events_20250315.csv", [_row("H1", "eviction", "2025-03-01")])
    _night(engine, config, R)
    # clarion's newer file takes H1's row from clarion, and from clarion only: peabody's H1 is another record
    _write(tmp_path, "clarion", "tenancy_events_20250320.csv", [_row("H1", "asb_warning", "2025-03-10")])
    _night(engine, config, R)
    assert _current(engine, R) == {"clarion:H1": ("asb_warning", "Smith"), "peabody:H1": ("eviction", "Smith")}
    # as of a date before clarion's newer file, its older row counts; peabody's file is not there yet
    assert _current(engine, date(2025, 3, 10)) == {"clarion:H1": ("rent_arrears", "Smith")}
    # clarion re-sends its first file (new bytes, same name): it supersedes clarion's landing of that name only
    _write(tmp_path, "peabody", "tenancy_events_20250301.csv", [_row("P9", "eviction", "2025-02-01")])
    _night(engine, config, R)
    _write(tmp_path, "clarion", "tenancy_events_20250301.csv", [_row("H1", "notice_seeking_possession", "2025-02-01")])
    _night(engine, config, R)
    with engine.connect() as conn:
        statuses = conn.execute(select(landing_log.c.partner, landing_log.c.file_name, landing_log.c.status)
                                .order_by(landing_log.c.id)).all()
    assert [tuple(r) for r in statuses] == [
        ("clarion", "tenancy_events_20250301.csv", LandingStatus.SUPERSEDED),
        ("peabody", "tenancy_events_20250315.csv", LandingStatus.STAGED),
        ("clarion", "tenancy_events_20250320.csv", LandingStatus.STAGED),
        ("peabody", "tenancy_events_20250301.csv", LandingStatus.STAGED),
        ("clarion", "tenancy_events_20250301.csv", LandingStatus.STAGED),
    ]
    assert _current(engine, date(2025, 3, 10)) == {"clarion:H1": ("notice_seeking_possession", "Smith"),
                                                   "peabody:P9": ("eviction", "Smith")}


def test_identical_files_of_two_partners_are_two_landings(tmp_path, warehouse_url):
    """Two partners' header-only (or otherwise identical) files are not one partner's repeat."""
    config = _config(tmp_path, warehouse_url)
    engine = connect(warehouse_url)
    for partner in PARTNERS:
        _write(tmp_path, partner, "tenancy_events_20250301.csv", [])
    _night(engine, config, R)
    with engine.connect() as conn:
        statuses = conn.execute(select(landing_log.c.partner, landing_log.c.status).order_by(landing_log.c.id)).all()
    assert [tuple(r) for r in statuses] == [(p, LandingStatus.STAGED) for p in PARTNERS]
    # the same bytes again from one partner under another name: that partner's duplicate
    _write(tmp_path, "clarion", "tenancy_events_20250302.csv", [])
    assert land_source(engine, config, "housing", R, partner="clarion")["duplicates"] == 1


def test_a_partners_bad_rows_and_broken_file_are_its_own(tmp_path, warehouse_url):
    """Quarantine rows belong to the partner's landing; a broken file fails that partner's validate, naming
    the file, and the other partner's validate goes on."""
    config = _config(tmp_path, warehouse_url)
    engine = connect(warehouse_url)
    good = [_row(f"R{i}", "rent_arrears", "2025-02-01") for i in range(40)]
    _write(tmp_path, "clarion", "tenancy_events_20250301.csv", [*good, _row("BAD", "party", "2025-02-01")])
    _write(tmp_path, "peabody", "tenancy_events_20250301.csv", [_row("X", "party", "2025-02-01")])
    land_source(engine, config, "housing", R, partner="clarion")
    land_source(engine, config, "housing", R, partner="peabody")
    assert validate_source(engine, config, "housing", R, partner="clarion")["rows_quarantined"] == 1
    with pytest.raises(FilesRejected, match="tenancy_events_20250301.csv"):
        validate_source(engine, config, "housing", R, partner="peabody")
    stage_source(engine, config, "housing", R, partner="clarion")
    with engine.connect() as conn:
        held = conn.execute(select(landing_log.c.partner, quarantine.c.rules)
                            .join(landing_log, landing_log.c.id == quarantine.c.landing_id)).all()
    assert [r.partner for r in held] == ["clarion"] and "event" in held[0].rules
    assert len(_current(engine, R)) == 40 and all(k.startswith("clarion:") for k in _current(engine, R))


def test_the_generator_splits_a_source_among_partners_with_the_truth_unchanged(tmp_path):
    """Opt-in: the same borough, each split file's rows dealt among the partners (a record_id to one partner),
    the truth's flags byte for byte, and records.csv naming a split record as tfp does (<partner>:<id>)."""
    import csv

    from tfp_dev.generate import generate

    split = {"housing": ("clarion", "peabody", "hyde"), "probation": ("nps", "crc")}
    generate(tmp_path / "one", families=40, seed=9, on=R)
    written = generate(tmp_path / "many", families=40, seed=9, on=R, partners=split)

    def rows(path: Path) -> list[list[str]]:
        with path.open(encoding="utf-8", newline="") as handle:
            return list(csv.reader(handle))

    for source, dataset in (("housing", "tenancy_events"), ("probation", "cases")):
        name = f"{dataset}_20250331.csv"
        header, *whole = rows(tmp_path / "one" / source / name)
        parts = {p: rows(tmp_path / "many" / source / p / name) for p in split[source]}
        assert all(part[0] == header for part in parts.values())
        assert sorted(r for part in parts.values() for r in part[1:]) == sorted(whole)
        owners = {r[0]: p for p, part in parts.items() for r in part[1:]}
        assert all(owners[r[0]] == p for p, part in parts.items() for r in part[1:])  # one partner per record_id
        assert all(len(part) > 1 for part in parts.values())
        assert not (tmp_path / "many" / source / name).exists()
        assert {written[f"{p}/{name}"] for p in split[source]} and name not in written
    for name in ("families.csv", "families_consent.csv", "families_public_task.csv", "persons.csv"):
        assert (tmp_path / "many" / "truth" / name).read_bytes() == (tmp_path / "one" / "truth" / name).read_bytes()
    one, many = rows(tmp_path / "one/truth/records.csv"), rows(tmp_path / "many/truth/records.csv")
    assert len(one) == len(many)
    for a, b in zip(one[1:], many[1:], strict=True):
        if a[0] in ("tenancy_events", "cases"):
            assert b[1].split(":", 1)[1] == a[1] and b[1].split(":", 1)[0] in (*split["housing"], *split["probation"])
            assert b[2:] == a[2:]
        else:
            assert a == b
    # default off: the other sources' files are the same bytes
    for path in (tmp_path / "one").glob("*/*.csv"):
        if path.parts[-2] not in ("housing", "probation", "truth"):
            assert (tmp_path / "many" / path.relative_to(tmp_path / "one")).read_bytes() == path.read_bytes()
    with pytest.raises(ValueError, match="cannot split children_services"):
        generate(tmp_path / "bad", families=5, seed=1, on=R, partners={"children_services": ("a", "b")})


def test_the_nightly_dag_has_a_chain_per_partner_grouped_under_its_source(tmp_path, monkeypatch):
    """With the deployment's config at hand when the DAG file is parsed: <source>.<partner>.<step> for a
    source with partners, today's <source>.<step> for the others; a manual run may pick a partner id."""
    from airflow.dag_processing.dagbag import DagBag

    from helpers import write_config

    path = write_config(tmp_path, "sqlite:///w.db", sources={"housing": {"partners": [
        {"id": p, "transport": "directory", "path": f"in/{p}"} for p in PARTNERS]}})
    monkeypatch.setenv("TFP_CONFIG", str(path))
    dag = DagBag(dag_folder=str(Path(__file__).resolve().parents[1] / "dags")).dags["tfp_nightly"]
    ids = set(dag.task_ids)
    for partner in PARTNERS:
        assert {f"housing.{partner}.{step}" for step in ("extract", "validate", "stage")} <= ids
        extract = dag.get_task(f"housing.{partner}.extract")
        assert extract.downstream_task_ids == {f"housing.{partner}.validate"}
        assert "choose_sources" in extract.upstream_task_ids
        assert dag.get_task(f"housing.{partner}.stage").downstream_task_ids == {"check_inputs"}
    assert "housing.extract" not in ids and "police.extract" in ids
    assert set(dag.params.get_param("sources").schema["items"]["enum"]) >= {"housing", "clarion", "peabody"}


def test_a_source_task_without_a_partner_runs_each_of_its_partners(tmp_path, sqlite_url):
    """The DAG parsed without the config at hand has today's per-source tasks: each runs the source's
    partners in turn, counts added up."""
    from helpers import write_config
    from tfp import pipeline

    path = write_config(tmp_path, sqlite_url, sources={"housing": {"partners": [
        {"id": p, "transport": "directory", "path": f"in/{p}"} for p in PARTNERS]}})
    connect(sqlite_url)
    for partner in PARTNERS:
        _write(tmp_path, partner, "tenancy_events_20250301.csv", [_row("H1", "eviction", "2025-02-01")])
    assert pipeline.extract(str(path), R, "housing")["landed"] == 2
    assert pipeline.validate(str(path), R, "housing")["files_validated"] == 2
    assert pipeline.stage(str(path), R, "housing")["files_staged"] == 2
    assert set(_current(connect(sqlite_url), R)) == {"clarion:H1", "peabody:H1"}

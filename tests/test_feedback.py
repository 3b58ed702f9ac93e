"""Feedback to each partner (issue 17 item 4; contract section 10): after validate, each partner with an
outbound path receives tfp_feedback_<partner>_<date>.csv (file,record_id,status,rules) and a .txt summary with
its link rate, over its own transport (a folder; SFTP); nothing of another partner; once per landed file;
never in a dry run. On SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select
from test_partners import EVENTS, R, _row, _write

from helpers import make_config
from tfp.extract import land_source
from tfp.feedback import HEADER, send_feedback
from tfp.stage import stage_source
from tfp.validate import FilesRejected, validate_source
from tfp.warehouse import connect, feedback_log, links
from tfp_dev.sftpserver import SftpServer

PARTNERS = ("clarion", "peabody", "hyde")


@pytest.fixture
def sftp(tmp_path, monkeypatch):
    with SftpServer(tmp_path / "peabody_server", password="p-secret") as server:
        (tmp_path / "peabody_server" / "out").mkdir(parents=True)
        (tmp_path / "peabody_server" / "feedback").mkdir(parents=True)
        monkeypatch.setenv("AIRFLOW_CONN_SFTP_PEABODY", json.dumps({
            "conn_type": "sftp", "host": server.host, "port": server.port, "login": "tfp", "password": "p-secret",
            "extra": {"host_key": server.host_key, "no_host_key_check": False}}))
        yield tmp_path / "peabody_server"


def _config(tmp_path: Path, url: str):
    return make_config(tmp_path, url, sources={"housing": {"partners": [
        {"id": "clarion", "transport": "directory", "path": "in/clarion", "outbound": "out/clarion"},
        {"id": "peabody", "transport": "sftp", "conn_id": "sftp_peabody", "path": "/out", "outbound": "/feedback"},
        {"id": "hyde", "transport": "directory", "path": "in/hyde"}]}})


def _night(engine, config) -> None:
    for partner in PARTNERS:
        land_source(engine, config, "housing", R, partner=partner)
        try:
            validate_source(engine, config, "housing", R, partner=partner)
        except FilesRejected:
            pass  # the night fails at validate; the partner is still told why
        stage_source(engine, config, "housing", R, partner=partner)


def _read(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle))


def test_each_partner_is_told_of_its_own_files_and_rows_once_and_never_in_a_dry_run(tmp_path, warehouse_url, sftp):
    config = _config(tmp_path, warehouse_url)
    engine = connect(warehouse_url)
    good = [_row(f"R{i}", "rent_arrears", "2025-02-01") for i in range(40)]
    _write(tmp_path, "clarion", "tenancy_events_20250301.csv", [*good, _row("BAD1", "party", "2025-02-01")])
    _write(tmp_path, "clarion", "tenancy_events_20250302.csv", [_row("X1", "party", "2025-02-01")])  # rejected
    (sftp / "out" / "tenancy_events_20250301.csv").write_text(
        "\n".join([",".join(EVENTS), *(",".join(_row(f"P{i}", "eviction", "2025-02-01")) for i in range(20))]) + "\n")
    _write(tmp_path, "hyde", "tenancy_events_20250301.csv", good)
    _night(engine, config)
    with engine.begin() as conn:  # night R linked 2 of clarion's 40 current records and 1 of peabody's 20
        conn.execute(insert(links), [
            {"reference_date": R, "dataset": "tenancy_events", "record_id": f"{partner}:{record_id}",
             "person_ref": person, "match_probability": 1.0 if person else None,
             "method": "probabilistic" if person else "unlinked"}
            for partner, ids, linked in (("clarion", [f"R{i}" for i in range(40)], 2),
                                         ("peabody", [f"P{i}" for i in range(20)], 1))
            for n, record_id in enumerate(ids) for person in [f"PER{n}" if n < linked else None]])

    dry = send_feedback(engine, config, R, dry_run=True)
    assert dry["partners_sent"] == 0 and not (tmp_path / "out").exists()
    assert not list((sftp / "feedback").iterdir())

    counts = send_feedback(engine, config, R)
    assert counts["partners_sent"] == 2 and counts["landings_reported"] == 3
    clarion = tmp_path / "out" / "clarion"
    assert sorted(p.name for p in clarion.iterdir()) == ["tfp_feedback_clarion_20250331.csv",
                                                         "tfp_feedback_clarion_20250331.txt"]
    rows = _read(clarion / "tfp_feedback_clarion_20250331.csv")
    assert tuple(rows[0]) == HEADER
    assert rows[1] == ["tenancy_events_20250301.csv", "", "landed", ""]
    assert rows[2][:3] == ["tenancy_events_20250301.csv", "BAD1", "quarantined"] and "event" in rows[2][3]
    assert rows[3][:3] == ["tenancy_events_20250302.csv", "", "rejected"] and rows[3][3]
    assert len(rows) == 4  # no row of another partner, no row that passed
    summary = (clarion / "tfp_feedback_clarion_20250331.txt").read_text()
    assert "link rate" in summary and "5.0%" in summary and "rows quarantined: 1" in summary
    text = (clarion / "tfp_feedback_clarion_20250331.csv").read_text() + summary
    assert "peabody" not in text and "P1" not in text and "Smith" not in text and "SW1A" not in text
    peabody = {p.name: p for p in (sftp / "feedback").iterdir()}
    assert sorted(peabody) == ["tfp_feedback_peabody_20250331.csv", "tfp_feedback_peabody_20250331.txt"]
    assert _read(peabody["tfp_feedback_peabody_20250331.csv"]) == [list(HEADER), [
        "tenancy_events_20250301.csv", "", "landed", ""]]
    assert "5.0%" in peabody["tfp_feedback_peabody_20250331.txt"].read_text()
    assert not (tmp_path / "in" / "hyde" / "feedback").exists()  # hyde has no outbound path: nothing is sent

    # once per landed file: a re-run sends nothing; a re-sent file is reported in a new file of that night
    before = {p: p.stat().st_mtime_ns for p in clarion.iterdir()}
    assert send_feedback(engine, config, R)["partners_sent"] == 0
    assert {p: p.stat().st_mtime_ns for p in clarion.iterdir()} == before
    _write(tmp_path, "clarion", "tenancy_events_20250302.csv", [_row("X1", "eviction", "2025-02-01")])
    _night(engine, config)
    assert send_feedback(engine, config, R)["landings_reported"] == 1
    assert _read(clarion / "tfp_feedback_clarion_20250331_2.csv")[1:] == [
        ["tenancy_events_20250302.csv", "", "landed", ""]]
    # a re-sent staged file: the earlier landing, reported as landed, is now reported superseded
    _write(tmp_path, "clarion", "tenancy_events_20250301.csv", good)
    _night(engine, config)
    assert send_feedback(engine, config, R)["landings_reported"] == 1
    assert _read(clarion / "tfp_feedback_clarion_20250331_3.csv")[1:] == [
        ["tenancy_events_20250301.csv", "", "superseded", ""], ["tenancy_events_20250301.csv", "", "landed", ""]]
    assert "superseded: 1" in (clarion / "tfp_feedback_clarion_20250331_3.txt").read_text()
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(feedback_log)).scalar_one() == 5
    assert send_feedback(engine, config, R)["partners_sent"] == 0

"""Extract: the as-of-R file rules, files landed once, landing copies encrypted with their own key."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import delete, select

from helpers import make_config, write_feed
from tfp.extract import SourceUnavailable, land_source, select_files
from tfp.landing import LandingStore, LandingTampered
from tfp.warehouse import connect, landing_key, landing_log

HEADER = ["record_id", "person_ref", "need", "start_date", "end_date"]


def test_select_files_as_of_reference_date():
    names = ["needs_20250101.csv", "needs_20250131.csv", "needs_20250201.csv", "families_20250115.csv",
             "incidents_20250101.csv", "notes.txt", "needs_2025013.csv", "needs_20250230.csv", "../needs_20250101.csv"]
    chosen = select_files("children_services", names, date(2025, 1, 31))
    assert [f.name for f in chosen] == ["needs_20250101.csv", "families_20250115.csv", "needs_20250131.csv"]
    assert all(f.source == "children_services" for f in chosen)


def _logged(engine):
    with engine.connect() as conn:
        return conn.execute(select(landing_log).order_by(landing_log.c.id)).all()


def test_files_are_landed_once_and_duplicates_recognised(tmp_path, warehouse_url):
    config = make_config(tmp_path, warehouse_url)
    engine = connect(warehouse_url)
    write_feed(tmp_path, "children_services", "needs_20250101.csv", HEADER, [["r1", "P1", "early_help", "2024-12-01", ""]])
    write_feed(tmp_path, "children_services", "needs_20250301.csv", HEADER, [["r2", "P1", "neet", "2025-02-01", ""]])
    drop = tmp_path / "inbound/children_services"
    sent = (drop / "needs_20250101.csv").read_bytes()
    first = land_source(engine, config, "children_services", date(2025, 1, 31))
    assert first["landed"] == 1 and first["files_seen"] == 1  # the March file is after R
    assert sorted(p.name for p in drop.iterdir()) == ["needs_20250301.csv"]  # the landed plaintext is gone
    (drop / "needs_20250101.csv").write_bytes(sent)  # the partner drops the same file again
    again = land_source(engine, config, "children_services", date(2025, 1, 31))
    assert again["landed"] == 0 and again["already_landed"] == 1
    # the same bytes re-sent under another name: recorded, never counted twice
    (drop / "needs_20250102.csv").write_bytes(sent)
    resent = land_source(engine, config, "children_services", date(2025, 1, 31))
    assert resent["duplicates"] == 1 and resent["landed"] == 0
    rows = _logged(engine)
    assert [r.status for r in rows] == ["landed", "duplicate"]
    assert rows[1].duplicate_of == rows[0].id


def test_landing_copy_is_encrypted_and_tamper_evident(tmp_path, sqlite_url):
    config = make_config(tmp_path, sqlite_url)
    engine = connect(sqlite_url)
    source = write_feed(tmp_path, "children_services", "needs_20250101.csv", HEADER,
                        [["r1", "PERSONREF77", "early_help", "2024-12-01", ""]])
    sent = source.read_bytes()
    land_source(engine, config, "children_services", date(2025, 1, 31))
    (row,) = _logged(engine)
    copy = config.work_dir / row.landing_path
    assert b"PERSONREF77" not in copy.read_bytes()
    assert LandingStore.of(engine, config).read(row.id) == sent
    blob = bytearray(copy.read_bytes())
    blob[-5] ^= 1
    copy.write_bytes(bytes(blob))
    with pytest.raises(LandingTampered, match=f"landing copy {row.id}"):
        LandingStore.of(engine, config).read(row.id)
    copy.write_bytes(bytes(blob[:-20]))  # truncated
    with pytest.raises(LandingTampered):
        LandingStore.of(engine, config).read(row.id)


def test_destroying_the_key_makes_the_copy_unreadable(tmp_path, sqlite_url):
    config = make_config(tmp_path, sqlite_url)
    engine = connect(sqlite_url)
    write_feed(tmp_path, "children_services", "needs_20250101.csv", HEADER, [["r1", "P1", "early_help", "2024-12-01", ""]])
    land_source(engine, config, "children_services", date(2025, 1, 31))
    (row,) = _logged(engine)
    with engine.begin() as conn:
        conn.execute(delete(landing_key).where(landing_key.c.landing_id == row.id))
    with pytest.raises(Exception):  # noqa: B017 - no key, no plaintext: any failure to read is the point
        LandingStore.of(engine, config).read(row.id)


def test_a_missing_source_folder_fails_naming_it(tmp_path, sqlite_url):
    config = make_config(tmp_path, sqlite_url)
    (tmp_path / "inbound/police").rmdir()
    with pytest.raises(SourceUnavailable, match="inbound/police does not exist"):
        land_source(connect(sqlite_url), config, "police", date(2025, 1, 31))


def test_a_killed_runs_leftovers_are_swept_and_live_copies_kept(tmp_path, warehouse_url):
    """A run killed mid-landing leaves a copy whose landing row never committed (so it has no key) or a
    temporary copy; the next extract of that source removes them and touches nothing live."""
    import os
    import socket
    import subprocess

    config = make_config(tmp_path, warehouse_url)
    engine = connect(warehouse_url)
    write_feed(tmp_path, "children_services", "needs_20250101.csv", HEADER, [["r1", "P1", "early_help", "2024-12-01", ""]])
    land_source(engine, config, "children_services", date(2025, 1, 31))
    folder = config.work_dir / "landing" / "children_services"
    live = sorted(p.name for p in folder.iterdir())
    gone_pid = subprocess.Popen(["true"])  # a writer that has exited
    gone_pid.wait()
    host = socket.gethostname()
    leftovers = ["99.raw.bin", "99.validated.bin", f".99.raw.bin.part-{host}-{gone_pid.pid}-0123abcd"]
    running = f".98.validated.bin.part-{host}-{os.getpid()}-0123abcd"  # a live writer: ours
    foreign = ".97.raw.bin.part-another-host-1-0123abcd"  # another host's, and fresh
    for name in [*leftovers, running, foreign, "notes.txt"]:
        (folder / name).write_bytes(b"x")
    counts = land_source(engine, config, "children_services", date(2025, 1, 31))
    assert counts["orphans_removed"] == 3
    assert sorted(p.name for p in folder.iterdir()) == sorted([*live, running, foreign, "notes.txt"])
    assert LandingStore.of(engine, config).read(_logged(engine)[0].id).startswith(b"record_id")

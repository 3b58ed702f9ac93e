"""Review items 2, 4 and 11: partner drops as an attack surface, plaintext that outlives its landing, and
modes of everything personal tfp writes (0600 files in 0700 folders, whatever the umask)."""

from __future__ import annotations

import logging
import os
import stat
import time
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import select, text

from helpers import make_config, write_feed
from tfp.extract import _DirectoryReader, land_source
from tfp.warehouse import connect, landing_key, landing_log

R = date(2025, 1, 31)
HEADER = ["record_id", "person_ref", "need", "start_date", "end_date"]
ROW = ["r1", "P1", "early_help", "2024-12-01", ""]


def _logged(engine):
    with engine.connect() as conn:
        return conn.execute(select(landing_log).order_by(landing_log.c.id)).all()


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# -- item 11: links and size ---------------------------------------------------------------------------

def test_a_link_named_like_a_feed_file_is_refused_unread(tmp_path, sqlite_url, caplog):
    """A partner plants `needs_<date>.csv -> /some/file/outside`: nothing of the target is landed or read,
    the run says which name it refused and why, and neither the link nor its target is removed."""
    config = make_config(tmp_path, sqlite_url)
    engine = connect(sqlite_url)
    outside = tmp_path / "outside.csv"
    outside.write_text(",".join(HEADER) + "\nr9,SECRETREF,early_help,2024-12-01,\n", encoding="utf-8")
    link = tmp_path / "inbound/children_services/needs_20250101.csv"
    link.symlink_to(outside)
    with caplog.at_level(logging.WARNING, logger="tfp.extract"):
        counts = land_source(engine, config, "children_services", R)
    assert counts["refused"] == 1 and counts["landed"] == 0
    assert _logged(engine) == []
    assert "needs_20250101.csv is a symbolic link" in caplog.text and "SECRETREF" not in caplog.text
    assert link.is_symlink() and outside.exists()


def test_the_reader_never_opens_through_a_link_even_when_it_appears_after_listing(tmp_path):
    """The name is a regular file when listed and a link when read (a partner racing the run)."""
    from tfp.extract import NotARegularFile

    drop = tmp_path / "drop"
    drop.mkdir()
    (tmp_path / "outside.csv").write_text("secret\n")
    (drop / "needs_20250101.csv").write_text("record_id\n")
    reader = _DirectoryReader(drop, removes=True)
    try:
        assert reader.list_names() == ["needs_20250101.csv"]
        (drop / "needs_20250101.csv").unlink()
        (drop / "needs_20250101.csv").symlink_to(tmp_path / "outside.csv")
        with pytest.raises(NotARegularFile, match="symbolic link"):
            reader.read("needs_20250101.csv", 1000)
    finally:
        reader.close()


def test_a_file_over_max_file_bytes_is_rejected_unread_and_fails_validate(tmp_path, warehouse_url):
    """Rejected as README's "rejected" says: a landing row marked rejected naming the rule, nothing read or
    copied, validate fails naming file and rule on every run until the partner re-sends a smaller file."""
    from tfp.validate import FilesRejected, validate_source

    config = make_config(tmp_path, warehouse_url, quality={"max_file_bytes": 200})
    engine = connect(warehouse_url)
    big = write_feed(tmp_path, "children_services", "needs_20250101.csv", HEADER, [ROW] * 10)
    at_limit = write_feed(tmp_path, "children_services", "needs_20250102.csv", HEADER, [ROW])
    at_limit.write_bytes(at_limit.read_bytes().ljust(200, b"\n"))
    size = big.stat().st_size
    assert size > 200
    counts = land_source(engine, config, "children_services", R)
    assert counts["rejected"] == 1 and counts["landed"] == 1
    rows = {r.file_name: r for r in _logged(engine)}
    bad = rows["needs_20250101.csv"]
    assert bad.status == "rejected" and bad.landing_path is None and bad.sha256 == ""
    assert bad.rejection == f"larger than max_file_bytes ({size} bytes; the limit is 200)"
    with engine.connect() as conn:
        assert conn.execute(select(landing_key.c.landing_id)).scalars().all() == [rows["needs_20250102.csv"].id]
    assert big.exists()  # not landed, so not removed: the purge takes it at the programme's end
    with pytest.raises(FilesRejected, match=r"file needs_20250101\.csv rejected: larger than max_file_bytes"):
        validate_source(engine, config, "children_services", R)
    land_source(engine, config, "children_services", R)  # the same file again: no second row
    assert len(_logged(engine)) == 2
    write_feed(tmp_path, "children_services", "needs_20250101.csv", HEADER, [ROW])  # re-sent, small enough
    assert land_source(engine, config, "children_services", R)["landed"] == 1
    validate_source(engine, config, "children_services", R)


def test_the_default_limit_refuses_a_3_gb_file_before_reading_it(tmp_path, sqlite_url):
    """A sparse 3 GB file: reading it would take minutes and gigabytes; refusing it takes a stat."""
    config = make_config(tmp_path, sqlite_url)
    assert config.quality.max_file_bytes == 2_000_000_000
    engine = connect(sqlite_url)
    huge = tmp_path / "inbound/children_services/needs_20250101.csv"
    with huge.open("wb") as f:
        f.truncate(3_000_000_000)
    started = time.monotonic()
    counts = land_source(engine, config, "children_services", R)
    assert time.monotonic() - started < 5
    assert counts["rejected"] == 1
    (row,) = _logged(engine)
    assert row.status == "rejected" and "max_file_bytes" in row.rejection


# -- item 4: plaintext in local drop folders ---------------------------------------------------------------

def test_landed_plaintext_is_removed_and_what_was_not_landed_stays(tmp_path, sqlite_url):
    config = make_config(tmp_path, sqlite_url)
    engine = connect(sqlite_url)
    drop = tmp_path / "inbound/children_services"
    write_feed(tmp_path, "children_services", "needs_20250101.csv", HEADER, [ROW])
    write_feed(tmp_path, "children_services", "needs_20250301.csv", HEADER, [ROW])  # after R
    (drop / "notes.txt").write_text("not a feed\n")
    (drop / "incidents_20250101.csv").write_text("another source's dataset\n")
    counts = land_source(engine, config, "children_services", R)
    assert counts["landed"] == 1 and counts["removed_from_drop"] == 1
    assert sorted(p.name for p in drop.iterdir()) == ["incidents_20250101.csv", "needs_20250301.csv", "notes.txt"]


def test_keep_local_files_keeps_the_partners_file(tmp_path, sqlite_url):
    config = make_config(tmp_path, sqlite_url, keep_local_files=True)
    engine = connect(sqlite_url)
    path = write_feed(tmp_path, "children_services", "needs_20250101.csv", HEADER, [ROW])
    counts = land_source(engine, config, "children_services", R)
    assert counts["landed"] == 1 and counts["removed_from_drop"] == 0 and path.exists()


def test_a_run_killed_between_landing_and_removal_leaves_the_file_for_the_next_run(tmp_path, sqlite_url,
                                                                                   monkeypatch):
    """Removal comes only after the landing is committed; the next run finds the file already landed
    (by checksum), lands nothing twice and removes it then."""
    config = make_config(tmp_path, sqlite_url)
    engine = connect(sqlite_url)
    path = write_feed(tmp_path, "children_services", "needs_20250101.csv", HEADER, [ROW])
    seen = []

    def killed(self, name):
        with connect(sqlite_url).connect() as conn:  # what another process would see now
            seen.append(conn.execute(select(landing_log.c.status)).scalars().all())
        raise KeyboardInterrupt  # the run dies here

    monkeypatch.setattr(_DirectoryReader, "remove", killed)
    with pytest.raises(KeyboardInterrupt):
        land_source(engine, config, "children_services", R)
    assert seen == [["landed"]] and path.exists()
    monkeypatch.undo()
    counts = land_source(engine, config, "children_services", R)
    assert counts["already_landed"] == 1 and counts["landed"] == 0 and counts["removed_from_drop"] == 1
    assert not path.exists() and len(_logged(engine)) == 1


def test_a_file_rewritten_while_it_was_landed_is_left_for_the_next_run(tmp_path, sqlite_url, monkeypatch):
    config = make_config(tmp_path, sqlite_url)
    engine = connect(sqlite_url)
    path = write_feed(tmp_path, "children_services", "needs_20250101.csv", HEADER, [ROW])
    from tfp import extract

    real = extract.land_file

    def and_partner_rewrites(*args):
        outcome = real(*args)
        path.write_text(",".join(HEADER) + "\nr2,P2,neet,2024-12-01,\n")
        return outcome

    monkeypatch.setattr(extract, "land_file", and_partner_rewrites)
    assert land_source(engine, config, "children_services", R)["removed_from_drop"] == 0
    assert path.exists()
    monkeypatch.undo()
    assert land_source(engine, config, "children_services", R)["landed"] == 1  # the new bytes, next run
    assert not path.exists()


def test_programme_end_purge_removes_feed_files_left_in_drop_folders(tmp_path, sqlite_url):
    """Even with keep_local_files, and for files never landed (after R, too large): every feed-named
    regular file in a configured drop folder goes; other files, links and their targets stay."""
    from tfp.retention import programme_end

    config = make_config(tmp_path, sqlite_url, keep_local_files=True)
    engine = connect(sqlite_url)
    write_feed(tmp_path, "children_services", "needs_20250101.csv", HEADER, [ROW])
    write_feed(tmp_path, "children_services", "needs_20250301.csv", HEADER, [ROW])
    write_feed(tmp_path, "police", "incidents_20250101.csv", ["record_id"], [["x"]])
    drop = tmp_path / "inbound/children_services"
    (drop / "notes.txt").write_text("not a feed\n")
    (tmp_path / "elsewhere.csv").write_text("not ours\n")
    (drop / "families_20250101.csv").symlink_to(tmp_path / "elsewhere.csv")
    land_source(engine, config, "children_services", R)
    end = config.retention.delete_all_after
    dry = programme_end(engine, config, end, dry_run=True)
    assert (drop / "needs_20250101.csv").exists()
    outcome = programme_end(engine, config, end, dry_run=False)
    assert outcome.found == dry.found
    assert sorted(p.name for p in drop.iterdir()) == ["families_20250101.csv", "notes.txt"]
    assert list((tmp_path / "inbound/police").iterdir()) == []
    assert (tmp_path / "elsewhere.csv").exists()


# -- item 2: modes under umask 022 ---------------------------------------------------------------------

@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_everything_personal_is_private_under_umask_022(tmp_path, umask_022, keys_env):
    """The warehouse and its WAL, landing copies (raw and validated) and their folders, the outbox and
    its files: 0600 in 0700 folders, even where the folders existed 0755 before (as check_setup makes
    them) and the umask would give 0644."""
    from tfp.anonymise import Outputs
    from tfp.package import PackageTarget, write_package
    from tfp.validate import validate_source

    sqlite_url = f"sqlite:///{tmp_path / 'db' / 'warehouse.db'}"
    config = make_config(tmp_path, sqlite_url)
    for folder in (config.work_dir, config.landing_dir, config.outbox_dir):
        folder.mkdir(parents=True, exist_ok=True)
    assert _mode(config.landing_dir) == 0o755
    engine = connect(sqlite_url)
    with engine.begin() as conn:
        conn.execute(text("PRAGMA journal_mode=WAL"))
    write_feed(tmp_path, "children_services", "needs_20250101.csv", HEADER, [ROW])
    land_source(engine, config, "children_services", R)
    validate_source(engine, config, "children_services", R)
    outputs = Outputs("a,b\n1,2\n", "c\n3\n", "d\n", 1, 1, 0)
    write_package(outputs, PackageTarget(config.outbox_dir, "E09000031", R, "none", None, os.urandom(32), "test"))

    database = tmp_path / "db" / "warehouse.db"
    assert (tmp_path / "db" / "warehouse.db-wal").exists()
    private = {database, database.with_name("warehouse.db-wal"), database.with_name("warehouse.db-shm")}
    private |= {p for top in (config.landing_dir, config.outbox_dir) for p in top.rglob("*")}
    folders = {tmp_path / "db", config.landing_dir, config.outbox_dir} | {p for p in private if p.is_dir()}
    files = private - folders
    assert len([p for p in files if p.name.endswith(".bin")]) == 2  # the raw and the validated copy
    assert len([p for p in files if p.parent.parent == config.outbox_dir]) >= 5
    assert {str(p): oct(_mode(p)) for p in folders if _mode(p) != 0o700} == {}
    assert {str(p): oct(_mode(p)) for p in files if _mode(p) != 0o600} == {}
    engine.dispose()


def test_an_older_warehouse_file_is_narrowed_to_0600(tmp_path, umask_022):
    from tfp.warehouse import get_engine

    database = tmp_path / "old.db"
    database.write_bytes(b"")
    database.chmod(0o644)
    get_engine(f"sqlite:///{database}")
    assert _mode(database) == 0o600


def test_a_temporary_file_is_private_while_it_is_written(tmp_path, umask_022):
    from tfp.fsmodes import atomic_writer

    with atomic_writer(tmp_path / "out.bin") as out:
        out.write(b"personal")
        (temp,) = [p for p in tmp_path.iterdir() if p.name != "out.bin"]
        assert _mode(temp) == 0o600
    assert _mode(tmp_path / "out.bin") == 0o600 and [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_folders_others_can_write_to_are_warned_about(tmp_path, sqlite_url):
    from tfp.fsmodes import folder_warnings

    config = make_config(tmp_path, sqlite_url)
    config.work_dir.mkdir(mode=0o700)
    tmp_path.chmod(0o700)
    assert folder_warnings(config) == []
    tmp_path.chmod(0o777)  # holds work_dir and the warehouse
    config.work_dir.chmod(0o770)
    try:
        warnings = folder_warnings(config)
    finally:
        tmp_path.chmod(0o700)
    assert len(warnings) == 2
    assert warnings[0].startswith(f"work_dir {config.work_dir} is writable by group (mode 0770)")
    assert warnings[1].startswith(f"the folder holding work_dir {tmp_path} is writable by group and others")


def test_tfp_run_prints_the_warning(tmp_path, sqlite_url, keys_env, monkeypatch, capsys):
    from helpers import write_config
    from tfp_airflow import runner

    config_path = write_config(tmp_path, sqlite_url)
    (tmp_path / "work").mkdir()
    (tmp_path / "work").chmod(0o777)
    monkeypatch.setattr(runner, "run_dag", lambda *args, **kwargs: ("success", tmp_path / "work"))
    runner.run_nightly(config_path, R)
    assert f"warning: work_dir {tmp_path / 'work'} is writable by group and others (mode 0777)" in capsys.readouterr().err

"""PostgreSQL keeps sample values of analysed columns in pg_statistic (review item 13): tfp never
lets a personal column be sampled, and the programme-end purge leaves no personal value in the
database's files, catalog included. The files are read where this test may read them (as root on
this machine); elsewhere pg_statistic is read through SQL."""

from __future__ import annotations

import csv
import os
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from helpers import write_config
from tfp import pipeline
from tfp.config import load_config
from tfp.feeds import SOURCES
from tfp.retention import compact, run_category
from tfp.warehouse import STATISTICS_KEPT, connect, metadata
from tfp_dev.generate import generate

R = date(2025, 3, 31)
IDENTIFYING = ("forename", "surname", "postcode", "nino", "upn", "uprn", "pnc_id", "person_ref", "family_ref",
               "record_id")


def _values(inbound: Path) -> set[str]:
    """Every identifying value of the generated feeds, internal references included."""
    values: set[str] = set()
    for path in inbound.glob("*/*.csv"):
        if path.parent.name == "truth":
            continue
        with path.open(encoding="utf-8-sig", newline="") as handle:
            for row in csv.DictReader(handle):
                values.update(row[c] for c in IDENTIFYING if len(row.get(c) or "") >= 5)
    return values


class Needles:
    """Whole-word search for many values in megabytes of binary files, fast: every value is one or two
    alphanumeric runs (joined by a space or slash), so the runs of a file, alone and in pairs, are
    looked up in a set instead of running a regex of a thousand alternatives."""

    _single = re.compile(rb"[A-Za-z0-9]+")
    _pair = re.compile(rb"(?<![A-Za-z0-9])(?=([A-Za-z0-9]+[ /][A-Za-z0-9]+)(?![A-Za-z0-9]))")

    def __init__(self, values: set[str]) -> None:
        self.values = {v.encode() for v in values}

    def found(self, data: bytes) -> set[bytes]:
        return (set(self._single.findall(data)) | set(self._pair.findall(data))) & self.values

    def search(self, data: bytes) -> bool:
        return bool(self.found(data))


@pytest.fixture
def night(tmp_path, pg_url, keys_env):
    """A generated borough's night on PostgreSQL up to the criteria (two criteria runs, as a re-run does)."""
    generate(tmp_path / "inbound", families=60, seed=3, on=R)
    values = _values(tmp_path / "inbound")  # before landing: drop folders are emptied once landed
    assert len(values) > 500
    path = str(write_config(tmp_path, pg_url))
    for source in SOURCES:
        pipeline.extract(path, R, source)
        pipeline.validate(path, R, source)
        pipeline.stage(path, R, source)
    pipeline.link(path, R)
    pipeline.consent(path, R)
    pipeline.criteria(path, R)
    engine = connect(pg_url)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))  # what autovacuum does to every table sooner or later
    return load_config(path), engine, Needles(values)


def _files(conn, *relations: str) -> list[Path] | None:
    """The files (all segments and forks) of these relations and their TOAST, after a checkpoint;
    None when this process may not read the data directory."""
    data = Path(conn.execute(text("SHOW data_directory")).scalar_one())
    if not os.access(data, os.R_OK | os.X_OK):
        return None
    conn.execute(text("CHECKPOINT"))
    found = []
    for relation in relations:
        for (filepath,) in conn.execute(text(
                "SELECT pg_relation_filepath(oid) FROM pg_class WHERE oid = CAST(:r AS regclass) "
                "OR oid = (SELECT reltoastrelid FROM pg_class WHERE oid = CAST(:r AS regclass)) "
                "OR oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = "
                "(SELECT reltoastrelid FROM pg_class WHERE oid = CAST(:r AS regclass)))"), {"r": relation}):
            base = data / filepath
            found += [p for p in base.parent.glob(f"{base.name}*") if re.fullmatch(rf"{base.name}(\.\d+|_\w+)?", p.name)]
    return found


def _database_files(conn) -> list[Path] | None:
    """Every file of this database's folder and of the shared catalog, after a checkpoint."""
    data = Path(conn.execute(text("SHOW data_directory")).scalar_one())
    if not os.access(data, os.R_OK | os.X_OK):
        return None
    conn.execute(text("CHECKPOINT"))
    oid = conn.execute(text("SELECT oid FROM pg_database WHERE datname = current_database()")).scalar_one()
    return [p for folder in (data / "base" / str(oid), data / "global") for p in folder.iterdir() if p.is_file()]


def _leaks(files: list[Path], pattern: Needles) -> dict[str, set[bytes]]:
    """File name -> the values found in it, less the words every database's catalog holds anyway
    ("Martin" and "French" are in pg_description and pg_collation of template0)."""
    data = next(p for p in files[0].parents if (p / "base").is_dir() and (p / "global").is_dir())
    template = data / "base" / "1"  # template1
    stock = {v for p in template.iterdir() if p.is_file() for v in pattern.found(p.read_bytes())}
    found = {p.name: pattern.found(p.read_bytes()) - stock for p in files}
    return {name: values for name, values in found.items() if values}


def _sampled_values(conn) -> str:
    """pg_statistic as SQL shows it (live rows only): every sampled value of every column, as text."""
    rows = conn.execute(text(
        "SELECT concat_ws(' ', most_common_vals::text, histogram_bounds::text) FROM pg_stats "
        "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')")).scalars()
    return " ".join(r for r in rows if r)


@pytest.mark.slow  # a generated borough's night on PostgreSQL
def test_no_personal_column_is_ever_sampled(night):
    """Neither ANALYZE of the whole database (autovacuum) nor the criteria's ANALYZE of its temporary
    tables puts a personal value into pg_statistic, live or dead."""
    _, engine, pattern = night
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        assert not pattern.search(_sampled_values(conn).encode())
        files = _files(conn, "pg_catalog.pg_statistic")
        if files is not None:
            assert files, "pg_statistic has files"
            assert _leaks(files, pattern) == {}
        personal = conn.execute(text(
            "SELECT c.relname || '.' || a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind = 'r' AND a.attnum > 0 AND a.attstattarget <> 0")).scalars().all()
    assert [p for p in personal if p.split(".")[1] not in STATISTICS_KEPT] == []
    assert set(c for t in metadata.tables.values() for c in t.c.keys() if c in IDENTIFYING) <= \
        {c for c in IDENTIFYING} - STATISTICS_KEPT


@pytest.mark.slow  # a generated borough's night on PostgreSQL, then the purge
def test_purge_leaves_no_personal_value_in_the_database_files(night):
    """A warehouse analysed before tfp zeroed the statistics targets (sample values live in
    pg_statistic): after the programme-end purge, no file of the database or the shared catalog
    holds a personal value."""
    config, engine, pattern = night
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in ("links", "stg_families", "stg_incidents"):
            conn.execute(text(f"ALTER TABLE {table} ALTER COLUMN record_id SET STATISTICS -1"))
            if table == "stg_families":
                for column in ("surname", "nino", "postcode"):
                    conn.execute(text(f"ALTER TABLE {table} ALTER COLUMN {column} SET STATISTICS -1"))
            conn.execute(text(f"ANALYZE {table}"))
        assert pattern.search(_sampled_values(conn).encode()), "the old warehouse's statistics hold values"
        before = _database_files(conn)
        if before is not None:
            assert _leaks(before, pattern), "the database files hold personal data before the purge"
    end = config.retention.delete_all_after
    run_category(engine, config, "programme_end", end + timedelta(days=1), dry_run=False)
    compact(engine)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        assert not pattern.search(_sampled_values(conn).encode())
        after = _database_files(conn)
    if after is not None:
        assert _leaks(after, pattern) == {}


def test_an_older_warehouse_loses_its_sampled_values_on_upgrade(pg_url):
    """A warehouse analysed before this version holds sample values that a statistics target of 0
    does not remove: `tfp db upgrade` (revision 0002) drops them (the column's own type declared
    again), table kept."""
    from alembic import command
    from sqlalchemy import MetaData, Table, insert

    from tfp.warehouse import _alembic_config, get_engine, staging, upgrade

    engine = get_engine(pg_url)
    with engine.begin() as conn:  # the schema as 68f7203 left it, and no later revision
        command.upgrade(_alembic_config(conn), "0001")
    with engine.begin() as conn:  # landing_log as 0001 has it (no partner column yet: revision 0006)
        old_log = Table("landing_log", MetaData(), autoload_with=conn)
        lid = conn.execute(insert(old_log).values(
            source="children_services", dataset="families", file_name="families_20250101.csv",
            file_date=R, sha256="0" * 64, bytes=1, landed_at=datetime.now(UTC), landed_by_run=R,
            status="staged")).inserted_primary_key[0]
        conn.execute(insert(staging["families"]), [
            {"landing_id": lid, "record_id": f"R{i}", "file_date": R, "row_number": i, "surname": f"Surname{i % 7}",
             "nino": f"AB{i:06d}C", "person_ref": f"P{i:07d}", "family_ref": "F1"} for i in range(300)])
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for column in ("surname", "nino", "person_ref"):  # as every column was before
            conn.execute(text(f"ALTER TABLE stg_families ALTER COLUMN {column} SET STATISTICS -1"))
        conn.execute(text("ANALYZE stg_families"))
        assert "Surname3" in _sampled_values(conn)
        node = conn.execute(text("SELECT pg_relation_filenode('stg_families')")).scalar_one()
    upgrade(pg_url)
    with engine.connect() as conn:
        sampled = _sampled_values(conn)
        assert "Surname" not in sampled and "AB000" not in sampled and "P000" not in sampled
        assert conn.execute(text("SELECT pg_relation_filenode('stg_families')")).scalar_one() == node
        assert conn.execute(text("SELECT count(*) FROM stg_families")).scalar_one() == 300


def test_a_destroyed_landing_key_is_gone_from_the_key_table_file(pg_url, tmp_path):
    """Crypto-shredding on PostgreSQL: a plain VACUUM leaves a deleted key's 32 bytes in a free slot
    of landing_key's file; retention rewrites that small table, so the key is gone from its files."""
    from helpers import make_config

    config = make_config(tmp_path, pg_url)
    engine = connect(pg_url)
    keys = _keyed_landing(engine, 40)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        files = _files(conn, "landing_key")
    if files is None:
        pytest.skip("the data directory is not readable here")
    assert all(any(k in p.read_bytes() for p in files) for k in keys)
    assert run_category(engine, config, "landing_copies", datetime.now(UTC).date(), dry_run=False).deleted == 20
    compact(engine)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        files = _files(conn, "landing_key")
    held = b"".join(p.read_bytes() for p in files)
    assert [i for i, k in enumerate(keys) if k in held] == list(range(0, 40, 2))  # only the kept (recent) keys


def _keyed_landing(engine, count: int) -> list[bytes]:
    """``count`` landing copies with a key each, every odd one landed 60 days ago (past landing_days)."""
    from sqlalchemy import insert, update

    from tfp.warehouse import landing_key, landing_log

    keys = [os.urandom(32) for _ in range(count)]
    old = datetime.now(UTC) - timedelta(days=60)
    with engine.begin() as conn:
        for i, key in enumerate(keys):
            lid = conn.execute(insert(landing_log).values(
                source="police", dataset="incidents", file_name=f"incidents_{i}.csv", file_date=R, sha256="0" * 64,
                bytes=1, landed_at=old if i % 2 else datetime.now(UTC), landed_by_run=R, status="staged",
                landing_path="x")).inserted_primary_key[0]
            conn.execute(update(landing_log).where(landing_log.c.id == lid).values(
                landing_path=f"landing/police/{lid}.raw.bin"))
            conn.execute(insert(landing_key).values(landing_id=lid, key=key))
    return keys


@pytest.fixture
def keyed_night(pg_url, tmp_path):
    """A config, its engine and ten keyed landing copies (every odd one past landing_days), where the test
    can read the key table's files; skipped where the data directory is not readable."""
    from helpers import make_config

    config = make_config(tmp_path, pg_url)
    engine = connect(pg_url)
    keys = _keyed_landing(engine, 10)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if _files(conn, "landing_key") is None:
            pytest.skip("the data directory is not readable here")
    return config, engine, keys


def _compact_while_open(engine, session) -> bool:
    """Run compact() while ``session`` (an open transaction) commits and closes two seconds later in
    another thread; True when compact returned only after that."""
    import threading

    ended = threading.Event()

    def end_it() -> None:
        ended.wait(2.0)
        session.exec_driver_sql("COMMIT")
        ended.set()

    closer = threading.Thread(target=end_it)
    closer.start()
    compact(engine)
    waited = ended.is_set()  # read before join(), which would make it true anyway
    closer.join()
    session.close()
    return waited


def test_a_session_open_since_before_the_deletion_delays_the_vacuum_until_it_ends(keyed_night):
    """VACUUM FULL keeps the row versions an open snapshot may still read: a session that began before
    retention (a report, a pg_dump) would keep destroyed keys in the file. Retention waits for it."""
    config, engine, keys = keyed_night
    reader = engine.connect()
    reader.exec_driver_sql("BEGIN ISOLATION LEVEL REPEATABLE READ")
    reader.exec_driver_sql("SELECT 1").scalar_one()  # its snapshot, from before the deletion (and no lock)
    assert run_category(engine, config, "landing_copies", datetime.now(UTC).date(), dry_run=False).deleted == 5

    # what a vacuum without waiting leaves behind: the destroyed keys, still in the file
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM FULL landing_key"))
        held = b"".join(p.read_bytes() for p in _files(conn, "landing_key"))
    assert any(k in held for k in keys[1::2])

    assert _compact_while_open(engine, reader)  # compact returned only after the older session ended
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        held = b"".join(p.read_bytes() for p in _files(conn, "landing_key"))
    assert [i for i, k in enumerate(keys) if k in held] == [0, 2, 4, 6, 8]


def test_a_session_that_never_ends_makes_retention_incomplete_naming_no_query(pg_url, tmp_path):
    from tfp.errors import RetentionIncomplete
    from tfp.retention import wait_for_older_snapshots

    engine = connect(pg_url)
    _keyed_landing(engine, 2)
    with engine.connect() as reader:
        reader.exec_driver_sql("BEGIN ISOLATION LEVEL REPEATABLE READ")
        reader.exec_driver_sql("SELECT 'Sentinel-Query-Text'").all()
        with engine.begin() as conn:  # a deletion the reader's snapshot predates
            conn.execute(text("DELETE FROM landing_key WHERE landing_id = (SELECT min(landing_id) FROM landing_key)"))
        with pytest.raises(RetentionIncomplete) as raised:
            wait_for_older_snapshots(engine, timeout=1.0, poll=0.2)
        reader.exec_driver_sql("ROLLBACK")
    assert "database sessions began before retention's deletions" in str(raised.value)
    assert "Sentinel" not in str(raised.value) + raised.value.hint
    wait_for_older_snapshots(engine, timeout=5.0)  # nothing older now: returns at once


def test_a_session_that_wrote_before_the_deletion_delays_the_vacuum_though_it_has_no_snapshot_now(keyed_night):
    """A read-committed session idle in transaction after a write (a client that inserted, an ETL that never
    commits) shows no backend_xmin between statements, only its backend_xid; yet PostgreSQL keeps every row
    version deleted after that xid began, so VACUUM FULL copies the destroyed keys into the new file."""
    config, engine, keys = keyed_night
    writer = engine.connect()
    writer.exec_driver_sql("BEGIN ISOLATION LEVEL READ COMMITTED")
    writer.exec_driver_sql("SELECT txid_current()").scalar_one()  # it holds an xid, and no snapshot between statements
    with engine.connect() as probe:
        xmin, xid = probe.execute(text("SELECT backend_xmin, backend_xid FROM pg_stat_activity WHERE pid = :p"),
                                  {"p": writer.connection.dbapi_connection.info.backend_pid}).one()
    assert xmin is None and xid is not None  # what pg_stat_activity shows of it
    assert run_category(engine, config, "landing_copies", datetime.now(UTC).date(), dry_run=False).deleted == 5

    assert _compact_while_open(engine, writer)  # compact returned only after the writer ended
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        held = b"".join(p.read_bytes() for p in _files(conn, "landing_key"))
    assert [i for i, k in enumerate(keys) if k in held] == [0, 2, 4, 6, 8]


def test_a_prepared_transaction_from_before_the_deletion_delays_the_vacuum(pg_url):
    """A prepared (two-phase) transaction is in no session of pg_stat_activity, yet it holds the horizon back
    as an open transaction does, until COMMIT PREPARED or ROLLBACK PREPARED."""
    from tfp.errors import RetentionIncomplete
    from tfp.retention import wait_for_older_snapshots

    engine = connect(pg_url)
    with engine.connect() as conn:
        if int(conn.execute(text("SHOW max_prepared_transactions")).scalar_one()) == 0:
            pytest.skip("this server has max_prepared_transactions = 0: no transaction can be prepared")
    _keyed_landing(engine, 2)
    gid = f"tfp-test-{os.getpid()}"
    with engine.connect() as writer:
        writer.exec_driver_sql("BEGIN")
        writer.exec_driver_sql("SELECT txid_current()").scalar_one()
        writer.exec_driver_sql(f"PREPARE TRANSACTION '{gid}'")
    try:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM landing_key WHERE landing_id = (SELECT min(landing_id) FROM landing_key)"))
        with pytest.raises(RetentionIncomplete):
            wait_for_older_snapshots(engine, timeout=1.0, poll=0.2)
    finally:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f"ROLLBACK PREPARED '{gid}'")
    wait_for_older_snapshots(engine, timeout=5.0)


def test_a_vacuum_waiting_for_a_lock_never_queues_the_night_behind_it(pg_url, tmp_path):
    """VACUUM FULL needs an exclusive lock; a session idle in transaction after reading the key table (no
    snapshot, no xid: the wait lets it by) holds a share lock. A VACUUM FULL queued behind it would queue
    every later reader of the table (the night's extract) behind itself, for as long as that session
    lasts, and a killed retention task leaves the queued backend there. Retention tries the lock a few
    seconds at a time instead, lets readers through in between, and vacuums once the lock is free."""
    import threading

    from helpers import make_config

    config = make_config(tmp_path, pg_url)
    engine = connect(pg_url)
    keys = _keyed_landing(engine, 10)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        readable = _files(conn, "landing_key") is not None
    assert run_category(engine, config, "landing_copies", datetime.now(UTC).date(), dry_run=False).deleted == 5
    holder = engine.connect()
    holder.exec_driver_sql("BEGIN ISOLATION LEVEL READ COMMITTED")
    holder.exec_driver_sql("SELECT count(*) FROM landing_key").scalar_one()  # its share lock stays till COMMIT
    outcome: list[BaseException | None] = []

    def retention_finish() -> None:
        try:
            compact(engine)
            outcome.append(None)
        except BaseException as e:  # noqa: BLE001 -- handed to the test's thread
            outcome.append(e)

    finisher = threading.Thread(target=retention_finish)
    finisher.start()
    try:
        # the night reads the key table meanwhile: it is never stuck behind the waiting vacuum
        with engine.connect() as night:
            night.exec_driver_sql("SET lock_timeout = '30s'")  # retention's try is 5 s; without one, for ever
            for _ in range(2):
                assert night.exec_driver_sql("SELECT count(*) FROM landing_key").scalar_one() == 5
                night.commit()
                threading.Event().wait(0.5)
    finally:
        holder.exec_driver_sql("COMMIT")
        holder.close()
        finisher.join()
    assert outcome == [None]  # the vacuum ran once the lock was free
    if readable:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            held = b"".join(p.read_bytes() for p in _files(conn, "landing_key"))
        assert [i for i, k in enumerate(keys) if k in held] == [0, 2, 4, 6, 8]


def test_a_lock_held_past_the_wait_makes_retention_incomplete(pg_url):
    from tfp.errors import RetentionIncomplete

    engine = connect(pg_url)
    _keyed_landing(engine, 2)
    with engine.connect() as holder:
        holder.exec_driver_sql("BEGIN ISOLATION LEVEL READ COMMITTED")
        holder.exec_driver_sql("SELECT count(*) FROM landing_key").scalar_one()
        with pytest.raises(RetentionIncomplete) as raised:
            compact(engine, timeout=2.0)
        holder.exec_driver_sql("ROLLBACK")
    assert "lock" in str(raised.value)
    compact(engine, timeout=30.0)  # the lock is free: it vacuums

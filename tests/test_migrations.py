"""The warehouse schema's history (issue 16 item 4): Alembic migrations, `tfp db upgrade`, a run that
refuses an unmigrated or newer schema, and no DDL on connect."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import MetaData, Table, event, inspect, select, text

from tfp import warehouse

R1 = date(2025, 3, 31)
R2 = date(2025, 4, 30)


def _as_68f7203(url: str) -> None:
    """A warehouse as tfp 68f7203 left it: revision 0001's tables (its frozen DDL), no history."""
    from alembic import command

    with warehouse.get_engine(url).begin() as conn:
        command.upgrade(warehouse._alembic_config(conn), warehouse.FIRST_REVISION)
        conn.execute(text("DROP TABLE alembic_version"))


def _copy_rows(source_url: str, target_url: str, tables) -> int:
    """Every row of these tables, in dependency order; returns how many."""
    source, target = warehouse.get_engine(source_url), warehouse.get_engine(target_url)
    copied = 0
    with source.connect() as src, target.begin() as dst:
        for table in warehouse.metadata.sorted_tables:
            if table.name in tables:
                rows = [dict(r._mapping) for r in src.execute(select(table))]
                if table.name == "links":  # as a tfp before the review queue (0004) wrote them: unlinked
                    rows = [dict(r, method="unlinked") if r["method"] == "queued" else r for r in rows]
                # the target's table as it has it: the 68f7203 one has none of warehouse.ADDED_COLUMNS (the
                # revisions that add them fill them, e.g. 0006 landing_log.partner = source), the control at head
                # keeps their values. Stripping them from the control too would leave its landing_log.partner ''
                # (the column's default), so its older rows would get other record keys than the new ones
                target_table = Table(table.name, MetaData(), autoload_with=dst)
                rows = [{k: v for k, v in r.items() if k in target_table.c} for r in rows]
                if rows:
                    dst.execute(target_table.insert(), rows)
                copied += len(rows)
        if target.dialect.name == "postgresql":  # serial columns continue after the copied ids
            for name in ("landing_log", "quarantine", "delivery_log", "deletion_log"):
                dst.execute(text(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                                 f"COALESCE((SELECT max(id) FROM {name}), 0) + 1, false)"))
    return copied


def _night(config_path: Path, day: date) -> dict[str, bytes]:
    from tfp import pipeline
    from tfp.feeds import SOURCES

    pipeline.check_setup(str(config_path), day)
    for source in SOURCES:
        pipeline.extract(str(config_path), day, source)
        pipeline.validate(str(config_path), day, source)
        pipeline.stage(str(config_path), day, source)
    pipeline.link(str(config_path), day)
    pipeline.consent(str(config_path), day)
    pipeline.criteria(str(config_path), day)
    outbox = Path(pipeline.package(str(config_path), day)["outbox"])
    return {p.name: p.read_bytes() for p in sorted(outbox.iterdir())
            if p.is_file() and "manifest" not in p.name and not p.name.endswith(".sig")}


def _new_url(kind: str, tmp_path: Path, name: str) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / name / 'warehouse.db'}"
    from conftest import _new_pg_database

    return _new_pg_database()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_68f7203_warehouse_with_data_upgrades_and_the_next_night_is_unchanged(kind, tmp_path, keys_env,
                                                                                real_connect):
    """Night R1 runs on a fresh warehouse; its rows go into a warehouse made by 68f7203's schema and
    into a fresh one at head (neither has the release history 68f7203 did not keep). `tfp db upgrade`
    adopts and migrates the old one; night R2 then delivers the same bytes from both."""
    from conftest import PG_SERVER, _drop_pg_database
    from helpers import write_config
    from tfp_dev.generate import generate

    if kind == "postgresql" and not PG_SERVER:
        pytest.skip("PostgreSQL variant: set TFP_TEST_POSTGRES_URL to run it")
    urls = {name: _new_url(kind, tmp_path, name) for name in ("first", "old", "control")}
    try:
        for name in ("first", "control"):
            warehouse.upgrade(urls[name])
        _as_68f7203(urls["old"])
        with warehouse.get_engine(urls["old"]).connect() as conn:  # what later revisions add is not there yet
            assert not any(set(names) & {c["name"] for c in inspect(conn).get_columns(table_name)}
                           for table_name, names in warehouse.ADDED_COLUMNS.items())
        generate(tmp_path / "first" / "r1", families=40, seed=5, on=R1)
        for name in ("old", "control"):  # a night takes its feeds from the drop folder: one copy each
            generate(tmp_path / name / "r2", families=40, seed=5, on=R2)
        configs = {}
        for name, url in urls.items():
            folder = tmp_path / name
            configs[name] = write_config(folder, url, inbound="r1" if name == "first" else "r2",
                                         delivery={"transport": "directory", "path": str(folder / "out"),
                                                   "encryption": "none"})
        _night(configs["first"], R1)
        old_tables = set(warehouse.metadata.tables) - warehouse.ADDED_TABLES
        for name in ("old", "control"):
            assert _copy_rows(urls["first"], urls[name], old_tables) > 1000
        with pytest.raises(warehouse.ConfigError, match="before its schema history"):
            warehouse.connect(urls["old"])

        notes = warehouse.upgrade(urls["old"])
        assert "stamped" in notes[0] and f"to {warehouse.head_revision()}" in notes[-1]
        with warehouse.get_engine(urls["old"]).begin() as conn:  # no personal column left to sample
            assert warehouse.no_personal_statistics(conn) == 0
        old, control = _night(configs["old"], R2), _night(configs["control"], R2)
        assert old and old == control
    finally:
        for url in urls.values():
            warehouse.get_engine(url).dispose()
            if kind == "postgresql":
                _drop_pg_database(url)


def test_connect_runs_no_ddl_on_a_migrated_warehouse(warehouse_url, real_connect):
    warehouse.upgrade(warehouse_url)
    engine = warehouse.get_engine(warehouse_url)
    statements: list[str] = []

    def record(_conn, _cursor, statement, *_args) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        warehouse.connect(warehouse_url)
        warehouse.connect(warehouse_url)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    ddl = [s for s in statements if s.lstrip().split()[0].upper() in ("CREATE", "ALTER", "DROP", "COMMENT", "GRANT")]
    assert statements and not ddl, ddl


def test_a_run_refuses_an_unmigrated_and_a_newer_schema(pg_url, sqlite_url, tmp_path, keys_env, real_connect):
    """PostgreSQL is migrated by the operator's `tfp db upgrade` only; SQLite by the night itself;
    a schema newer than this tfp is refused on both."""
    from helpers import write_config
    from tfp import pipeline

    config = write_config(tmp_path, pg_url)
    with pytest.raises(warehouse.ConfigError, match=r"schema is empty, not 0\d+; run `tfp db upgrade --config FILE`"):
        pipeline.check_setup(str(config), R1)
    assert not inspect(warehouse.get_engine(pg_url)).get_table_names()  # nothing was created
    warehouse.upgrade(pg_url)
    pipeline.check_setup(str(config), R1)

    (tmp_path / "lite").mkdir()
    lite = write_config(tmp_path / "lite", sqlite_url)
    pipeline.check_setup(str(lite), R1)  # the embedded warehouse is migrated by the night's first task
    for url, path in ((pg_url, config), (sqlite_url, lite)):
        with warehouse.get_engine(url).begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        with pytest.raises(warehouse.ConfigError, match=r"newer than this tfp \(9999"):
            pipeline.check_setup(str(path), R1)
        with pytest.raises(warehouse.ConfigError, match="newer"):
            warehouse.upgrade(url)


def test_an_older_schema_is_refused_until_upgraded(warehouse_url, real_connect):
    from alembic import command

    engine = warehouse.get_engine(warehouse_url)
    with engine.begin() as conn:
        command.upgrade(warehouse._alembic_config(conn), warehouse.FIRST_REVISION)
    with pytest.raises(warehouse.ConfigError, match="schema is at 0001"):
        warehouse.connect(warehouse_url)
    assert warehouse.upgrade(warehouse_url)[-1].startswith("the warehouse schema was upgraded from 0001")
    warehouse.connect(warehouse_url)
    assert "nothing to do" in warehouse.upgrade(warehouse_url)[0]


def test_the_migrations_create_the_schema_of_the_code(warehouse_url, real_connect):
    """Head's tables and columns are those of tfp.warehouse.metadata (a change to one needs a revision)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    warehouse.upgrade(warehouse_url)
    with warehouse.get_engine(warehouse_url).connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), warehouse.metadata)
    assert not diff, diff


def test_tfp_db_upgrade_migrates_the_configs_warehouse(tmp_path, pg_url, real_connect, capsys):
    from helpers import write_config
    from tfp.cli import main

    config = write_config(tmp_path, pg_url)
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    assert f"upgraded from empty to {warehouse.head_revision()}" in capsys.readouterr().out
    warehouse.connect(pg_url)
    assert main(["db", "upgrade", "--config", str(config), "--password-env", "TFP_NO_SUCH_VARIABLE"]) == 2
    assert "TFP_NO_SUCH_VARIABLE" in capsys.readouterr().err


def test_concurrent_upgrades_of_an_empty_warehouse_take_turns(pg_url, real_connect):
    """Two operators (or a backfill's first runs) upgrading at once: the advisory lock lets one migrate
    while the other waits, then finds nothing to do."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(warehouse.upgrade, [pg_url, pg_url]))
    assert sorted("nothing to do" in r[-1] for r in results) == [False, True], results
    warehouse.connect(pg_url)


# -- revision 0003: the named states as CHECK constraints ----------------------------------------------

def _status_rows() -> dict[str, list[dict]]:
    """A row of each checked table per allowed value (landing_log with its key and a quarantined row,
    which reference it: SQLite's rebuild of landing_log must keep them)."""
    from tfp.statuses import ConsentState, FlagScope, LandingStatus, LinkMethod, ReviewDecision, ReviewReason

    at = datetime(2025, 3, 1, tzinfo=UTC)
    landings = [{"id": i, "source": "police", "dataset": "incidents", "file_name": f"incidents_2025030{i}.csv",
                 "file_date": date(2025, 3, i), "sha256": f"{i:064d}", "bytes": 10, "landed_at": at,
                 "landed_by_run": R1, "status": status}
                for i, status in enumerate(LandingStatus, start=1)]
    return {
        "landing_log": landings,
        "landing_key": [{"landing_id": 2, "key": b"k" * 32}],
        "quarantine": [{"landing_id": 2, "row_number": 1, "rules": "r", "row_json": "{}", "quarantined_on": R1}],
        "links": [{"reference_date": R1, "dataset": "incidents", "record_id": f"r{i}", "person_ref": None,
                   "match_probability": None, "method": m} for i, m in enumerate(LinkMethod)],
        "person_consent": [{"reference_date": R1, "person_ref": f"P{i}", "state": s, "state_on": None, "kept": False}
                           for i, s in enumerate(ConsentState)],
        "family_flags": [{"reference_date": R1, "scope": s, "family_ref": "F1", "programme_status": "intervention",
                          **dict.fromkeys(warehouse.FLAGS, 0), "problem_count": 0, "eligible": 0}
                         for s in FlagScope],
        # revision 0004: the review queue, a pair queued for each reason and decided each way
        "review_queue": [{"review_id": "rv1", "dataset": "incidents", "record_id": "r1", "person_ref": "P1",
                          "first_queued_on": R1}],
        "review_night": [{"reference_date": date(2025, 3, i), "review_id": "rv1", "reason": reason,
                          "match_probability": 0.9} for i, reason in enumerate(ReviewReason, start=1)],
        "review_decision": [{"review_id": "rv1", "decided_at": datetime(2025, 4, i, tzinfo=UTC),
                             "decided_on": date(2025, 4, i), "decision": d, "reviewer": "reviewer a",
                             "imported_at": at, "imported_by": "tfp"} for i, d in enumerate(ReviewDecision, start=1)],
    }


def _rows_of_0002() -> dict[str, list[dict]]:
    """_status_rows as a warehouse at 0002 can hold them: no review tables, only the link methods of 0003."""
    rows = {k: v for k, v in _status_rows().items() if not k.startswith("review_")}
    rows["links"] = [r for r in rows["links"] if r["method"] in ("nino", "upn", "probabilistic", "unlinked")]
    return rows


def _insert(url: str, rows: dict[str, list[dict]]) -> None:
    """Insert into the tables as the database has them (an older revision lacks later columns)."""
    from sqlalchemy import MetaData, Table

    with warehouse.get_engine(url).begin() as conn:
        for name, values in rows.items():
            conn.execute(Table(name, MetaData(), autoload_with=conn).insert(), values)


# columns a later revision added, which a warehouse at 0002 does not have yet
ADDED_AFTER_0002 = {"landing_log": {"partner"}}


def _contents(url: str, names) -> dict[str, list[tuple]]:
    with warehouse.get_engine(url).connect() as conn:
        return {name: sorted(tuple(r) for r in conn.execute(select(
                    *(c for c in warehouse.metadata.tables[name].c if c.name not in ADDED_AFTER_0002.get(name, ())))))
                for name in names}


def _at_0002(url: str) -> None:
    from alembic import command

    with warehouse.get_engine(url).begin() as conn:
        command.upgrade(warehouse._alembic_config(conn), "0002")


def test_the_warehouse_refuses_a_status_outside_its_enum(warehouse_url, real_connect):
    """Each checked column takes every value of its enum and nothing else, on both databases."""
    from sqlalchemy.exc import IntegrityError

    from tfp.statuses import CHECKED

    warehouse.upgrade(warehouse_url)
    rows = _status_rows()
    _insert(warehouse_url, rows)  # every member of every enum is allowed
    engine = warehouse.get_engine(warehouse_url)
    names = {c["name"] for table, _ in CHECKED for c in inspect(engine).get_check_constraints(table)}
    assert set(warehouse.STATUS_CHECKS) <= names
    for (table, column), allowed in CHECKED.items():
        bad = dict(rows[table][0], **{column: "bogus"})
        if table == "landing_log":
            bad["id"] = 99
        elif table == "family_flags":
            bad["family_ref"] = "F2"
        elif table == "review_night":
            bad["reference_date"] = date(2025, 5, 1)
        elif table == "review_decision":
            bad["decided_at"] = datetime(2025, 5, 1, tzinfo=UTC)
        else:
            bad[next(k for k in ("record_id", "person_ref") if k in bad)] = "X99"
        assert bad[column] not in set(allowed)
        with pytest.raises(IntegrityError, match=f"ck_{table}_{column}|CHECK constraint failed"):
            with engine.begin() as conn:
                conn.execute(warehouse.metadata.tables[table].insert(), [bad])


def test_revisions_0003_to_0005_allow_exactly_the_enums(real_connect):
    """The revisions write their value lists out (history does not follow the code): 0003's lists, as 0004
    replaced or added them, are the enums'."""
    import importlib.util

    from tfp.statuses import CHECKED

    allowed = {}
    for name in ("0003_status_check_constraints", "0004_review_queue", "0005_health_source"):
        path = Path(warehouse.__file__).parent / "migrations" / "versions" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"revision_{name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        allowed.update(module.ALLOWED)
    assert {k: set(v) for k, v in allowed.items()} == {k: {m.value for m in e} for k, e in CHECKED.items()}


def test_a_0002_warehouse_with_data_upgrades_to_head(warehouse_url, real_connect):
    """A warehouse at 0002 holding rows in every checked table (and rows that reference landing_log)
    upgrades to head with every row as it was; a value outside an enum then is refused."""
    from sqlalchemy.exc import IntegrityError

    _at_0002(warehouse_url)
    rows = _rows_of_0002()
    _insert(warehouse_url, rows)
    before = _contents(warehouse_url, rows)
    notes = warehouse.upgrade(warehouse_url)
    assert notes[-1] == f"the warehouse schema was upgraded from 0002 to {warehouse.head_revision()}"
    warehouse.connect(warehouse_url)
    assert _contents(warehouse_url, rows) == before
    with warehouse.get_engine(warehouse_url).connect() as conn:  # 0006: each file came from its source's partner
        pairs = conn.execute(text("SELECT source, partner FROM landing_log")).all()
    assert pairs and all(partner == source for source, partner in pairs)
    engine = warehouse.get_engine(warehouse_url)
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            assert not conn.execute(text("PRAGMA foreign_key_check")).all()
        assert [fk["referred_table"] for fk in inspect(conn).get_foreign_keys("landing_key")] == ["landing_log"]
    with pytest.raises(IntegrityError):
        with engine.begin() as conn:
            conn.execute(text("UPDATE landing_log SET status = 'lost' WHERE id = 1"))


def test_a_0002_warehouse_holding_an_unknown_status_is_not_upgraded(warehouse_url, real_connect):
    """A value outside an enum fails the upgrade, and the warehouse stays at 0002 as it was."""
    _at_0002(warehouse_url)
    rows = _rows_of_0002()
    rows["landing_log"][0]["status"] = "lost"
    _insert(warehouse_url, rows)
    before = _contents(warehouse_url, rows)
    with pytest.raises(Exception):  # noqa: B017 - the database's own error (IntegrityError on both)
        warehouse.upgrade(warehouse_url)
    with warehouse.get_engine(warehouse_url).connect() as conn:
        assert warehouse.schema_revision(conn) == "0002"
    assert _contents(warehouse_url, rows) == before

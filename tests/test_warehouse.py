"""The warehouse schema on SQLite and PostgreSQL: a warehouse made on connect by a tfp before the schema
history, older than 68f7203 (no landing_log.gx_result), is adopted by `tfp db upgrade`, gains the
column and keeps its rows; until then connect() refuses it."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy import MetaData, create_engine, insert, inspect, select

from tfp.config import ConfigError
from tfp.warehouse import (
    ADDED_COLUMNS,
    ADDED_TABLES,
    LEGACY_ADDED_COLUMNS,
    STATUS_CHECKS,
    connect,
    landing_log,
    metadata,
    upgrade,
)

R = date(2025, 3, 31)


def test_an_older_warehouse_gains_the_added_columns_and_keeps_its_rows(warehouse_url, real_connect):
    older = MetaData()
    for table in metadata.sorted_tables:
        if table.name in ADDED_TABLES:
            continue
        table.to_metadata(older)
        copy = older.tables[table.name]  # without what later revisions added: 0003's CHECK constraints
        copy.constraints = {c for c in copy.constraints if c.name not in STATUS_CHECKS}
        for name in (*LEGACY_ADDED_COLUMNS.get(table.name, ()), *ADDED_COLUMNS.get(table.name, ())):
            copy = older.tables[table.name]
            copy._columns.remove(copy.c[name])
    engine = create_engine(warehouse_url)
    older.create_all(engine)
    assert "gx_result" not in {c["name"] for c in inspect(engine).get_columns("landing_log")}
    with engine.begin() as conn:
        conn.execute(insert(older.tables["landing_log"]).values(
            source="police", dataset="incidents", file_name="incidents_20250331.csv", file_date=R, sha256="0" * 64,
            bytes=1, landed_at=datetime(2025, 3, 31, 2, tzinfo=UTC), landed_by_run=R, status="landed"))
    engine.dispose()

    with pytest.raises(ConfigError, match="before its schema history"):
        connect(warehouse_url)
    notes = upgrade(warehouse_url)
    assert "stamped" in notes[0] and "added column landing_log.gx_result" in notes
    upgraded = connect(warehouse_url)
    assert {"gx_result"} <= {c["name"] for c in inspect(upgraded).get_columns("landing_log")}
    with upgraded.begin() as conn:
        conn.execute(landing_log.update().values(gx_result="{}"))
        assert conn.execute(select(landing_log.c.file_name, landing_log.c.gx_result)).all() == [
            ("incidents_20250331.csv", "{}")]
    assert "nothing to do" in upgrade(warehouse_url)[0]  # a second upgrade changes nothing


def test_a_database_with_only_some_tfp_tables_is_not_adopted(warehouse_url, real_connect):
    """Stamping a half-made or foreign database would hide missing tables until a night failed."""
    engine = create_engine(warehouse_url)
    metadata.tables["landing_log"].to_metadata(MetaData()).create(engine)
    engine.dispose()
    with pytest.raises(ConfigError, match="not these of revision 0001: deletion_log"):
        upgrade(warehouse_url)

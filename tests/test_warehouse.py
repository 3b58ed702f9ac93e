"""The warehouse schema on SQLite and PostgreSQL: a warehouse made by an earlier release gains the
columns added since, on connect, and keeps its rows."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import MetaData, create_engine, insert, inspect, select

from tfp.warehouse import ADDED_COLUMNS, connect, landing_log, metadata

R = date(2025, 3, 31)


def test_an_older_warehouse_gains_the_added_columns_and_keeps_its_rows(warehouse_url):
    older = MetaData()
    for table in metadata.sorted_tables:
        added = ADDED_COLUMNS.get(table.name, ())
        table.to_metadata(older)
        for name in added:
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

    upgraded = connect(warehouse_url)
    assert {"gx_result"} <= {c["name"] for c in inspect(upgraded).get_columns("landing_log")}
    with upgraded.begin() as conn:
        conn.execute(landing_log.update().values(gx_result="{}"))
        assert conn.execute(select(landing_log.c.file_name, landing_log.c.gx_result)).all() == [
            ("incidents_20250331.csv", "{}")]
    connect(warehouse_url)  # a second connect changes nothing

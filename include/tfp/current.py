"""What the warehouse holds "as of" a reference date (contract section 3).

For ``families`` only the newest file dated on or before R counts; every other dataset adds up
over its files, the newest file winning for a ``record_id`` seen more than once. Linking,
criteria, consent and de-identification all read their rows through here, so a backfill of an
old date sees exactly what that night saw.
"""

from __future__ import annotations

from datetime import date
from functools import cache
from pathlib import Path

from sqlalchemy import Connection, text

from tfp.feeds import DATASETS
from tfp.resources import sql_dir

# include/sql in a checkout, tfp/sql in an installed wheel (tfp.resources)
SQL_DIR: Path = sql_dir()
INDEXED_COLUMNS = ("record_id", "person_ref")
# A partner record's key downstream (links, review queue): its record_id, qualified by its partner unless
# the partner is the source's own (the short form), since a record_id is unique per partner only.
PARTNER_SEPARATOR = ":"
RECORD_KEY_SQL = ("CASE WHEN l.partner = l.source THEN s.record_id "
                  f"ELSE l.partner || '{PARTNER_SEPARATOR}' || s.record_id END")


def record_key(partner: str, source: str, record_id: str) -> str:
    """The key of a partner record downstream of staging (see RECORD_KEY_SQL)."""
    return record_id if partner == source else f"{partner}{PARTNER_SEPARATOR}{record_id}"


def record_key_column(table):
    """RECORD_KEY_SQL as a SQLAlchemy expression over a staging table (correlated to its landing row)."""
    from sqlalchemy import case, select

    from tfp.warehouse import landing_log

    partner = select(landing_log.c.partner).where(landing_log.c.id == table.c.landing_id).scalar_subquery()
    source = select(landing_log.c.source).where(landing_log.c.id == table.c.landing_id).scalar_subquery()
    return case((partner == source, table.c.record_id),
                else_=partner + PARTNER_SEPARATOR + table.c.record_id)


@cache
def sql_file(relative: str) -> str:
    """The text of a file under ``include/sql``."""
    return (SQL_DIR / relative).read_text(encoding="utf-8")


def current_sql(dataset: str) -> str:
    """A SELECT of the current rows of ``dataset``, with one parameter, ``:reference_date``."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}")
    if dataset == "families":
        return sql_file("current/snapshot.sql")
    # The table and column names come from the fixed list of datasets, never from input.
    from tfp.warehouse import staging

    columns = ", ".join(f"{RECORD_KEY_SQL} AS record_id" if c.name == "record_id" else f"s.{c.name}"
                        for c in staging[dataset].columns)
    return sql_file("current/cumulative.sql").replace("{table}", f"stg_{dataset}").replace("{columns}", columns)


def current_rows(conn: Connection, dataset: str, reference_date: date):
    """The current rows of ``dataset`` as a pandas DataFrame (staging columns, no helper columns)."""
    import pandas as pd

    result = conn.execute(text(current_sql(dataset)), {"reference_date": reference_date})
    # Plain tuples from the DB-API cursor: building a Row object per row costs more than the query.
    columns = [d[0] for d in result.cursor.description]
    rows = result.cursor.fetchall()
    result.close()
    frame = pd.DataFrame.from_records(rows, columns=columns)
    return frame.drop(columns=["newest"], errors="ignore")


def create_current_tables(conn: Connection, reference_date: date, datasets=None) -> None:
    """Materialise ``cur_<dataset>`` temporary tables on this connection for SQL that joins them."""
    for dataset in datasets or DATASETS:
        conn.execute(text(f"DROP TABLE IF EXISTS cur_{dataset}"))
        conn.execute(
            text(f"CREATE TEMPORARY TABLE cur_{dataset} AS {current_sql(dataset)}"),
            {"reference_date": reference_date},
        )
        # The criteria join these on record_id and person_ref: without indexes a join is a scan per row.
        for column in INDEXED_COLUMNS:
            if column in DATASETS[dataset].columns:
                conn.execute(text(f"CREATE INDEX ix_cur_{dataset}_{column} ON cur_{dataset} ({column})"))

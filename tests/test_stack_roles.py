"""The stack's PostgreSQL roles, run for real: scripts/postgres-init.sh against this machine's server.

The warehouse has its own database; its owner role creates the schema, and the role the tasks use can
read and write rows but cannot create, alter, drop or truncate a table, nor reach Airflow's database.
Roles and databases get unique names per test and are dropped afterwards.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, ProgrammingError

from conftest import PG_SERVER

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def stack(tmp_path):
    """Runs the init script with unique names; yields role -> URL (plus the database names)."""
    if not PG_SERVER:
        pytest.skip("PostgreSQL variant: set TFP_TEST_POSTGRES_URL to run it (.ci/run does)")
    server = make_url(PG_SERVER)
    tag = uuid.uuid4().hex[:10]
    names = {"airflow_db": f"t_af_{tag}", "tfp_db": f"t_tfp_{tag}", "airflow_role": f"t_af_{tag}",
             "owner_role": f"t_own_{tag}", "app_role": f"t_app_{tag}"}
    passwords = {"airflow_db_password": uuid.uuid4().hex, "tfp_owner_password": uuid.uuid4().hex,
                 "tfp_app_password": uuid.uuid4().hex}
    for name, value in passwords.items():
        (tmp_path / name).write_text(value + "\n")
    env = {**os.environ, "TFP_SECRETS_DIR": str(tmp_path), "TFP_INIT_SQL": str(ROOT / "scripts/postgres-init.sql"),
           "PGHOST": server.host or "127.0.0.1", "PGPORT": str(server.port or 5432),
           "POSTGRES_USER": server.username or "postgres", "POSTGRES_DB": server.database or "postgres",
           **{f"TFP_PG_{k.upper()}": v for k, v in names.items()}}
    if server.password:
        env["PGPASSWORD"] = server.password
    subprocess.run([ROOT / "scripts/postgres-init.sh"], env=env, check=True, capture_output=True, text=True)

    def url(role: str, password: str, database: str) -> str:
        return server.set(username=role, password=password, database=database).render_as_string(hide_password=False)

    urls = {"owner": url(names["owner_role"], passwords["tfp_owner_password"], names["tfp_db"]),
            "app": url(names["app_role"], passwords["tfp_app_password"], names["tfp_db"]),
            "airflow": url(names["airflow_role"], passwords["airflow_db_password"], names["airflow_db"]),
            "app_to_airflow": url(names["app_role"], passwords["tfp_app_password"], names["airflow_db"]),
            "airflow_to_tfp": url(names["airflow_role"], passwords["airflow_db_password"], names["tfp_db"])}
    yield urls
    from tfp.warehouse import get_engine

    for value in urls.values():
        get_engine(value).dispose()
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for key in ("tfp_db", "airflow_db"):
            conn.execute(text(f'DROP DATABASE IF EXISTS "{names[key]}" WITH (FORCE)'))
        for key in ("app_role", "owner_role", "airflow_role"):
            conn.execute(text(f'DROP ROLE IF EXISTS "{names[key]}"'))
    admin.dispose()


def _landing_row() -> dict:
    return {"source": "police", "dataset": "incidents", "file_name": "f.csv", "file_date": dt.date(2026, 11, 30),
            "sha256": "0" * 64, "bytes": 1, "landed_at": dt.datetime.now(dt.UTC),
            "landed_by_run": dt.date(2026, 11, 30), "status": "landed"}


def test_owner_creates_the_schema_and_the_app_role_reads_and_writes_rows(stack):
    from tfp.warehouse import connect, get_engine, landing_log

    connect(stack["owner"])  # what airflow-init does until `tfp db upgrade` exists
    app = get_engine(stack["app"])  # the engine alone: no DDL
    with app.begin() as conn:
        (row_id,) = conn.execute(insert(landing_log).values(**_landing_row()).returning(landing_log.c.id)).one()
        conn.execute(landing_log.update().where(landing_log.c.id == row_id).values(status="staged"))
        assert conn.execute(select(landing_log.c.status)).scalar_one() == "staged"
        conn.execute(text("SELECT tfp_yyyymmdd(CAST('2026-12-01' AS date))"))
        conn.execute(text("CREATE TEMPORARY TABLE counted_persons (person_ref VARCHAR(100) PRIMARY KEY)"))
        conn.execute(landing_log.delete())
    with app.connect() as conn:
        owners = set(conn.execute(text("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'")).scalars())
    assert owners == {make_url(stack["owner"]).username}


@pytest.mark.parametrize("statement", [
    "CREATE TABLE intruder (x int)",
    "DROP TABLE landing_log",
    "ALTER TABLE landing_log ADD COLUMN intruder text",
    "TRUNCATE landing_log",
    "CREATE OR REPLACE FUNCTION tfp_yyyymmdd(d date) RETURNS integer LANGUAGE sql AS $$ SELECT 0 $$",
    "CREATE SCHEMA intruder",
])
def test_the_app_role_cannot_change_the_schema(stack, statement):
    from tfp.warehouse import connect, get_engine

    connect(stack["owner"])
    with pytest.raises(ProgrammingError, match="permission denied|must be owner"):
        with get_engine(stack["app"]).begin() as conn:
            conn.execute(text(statement))


@pytest.mark.parametrize("key", ["app_to_airflow", "airflow_to_tfp"])
def test_no_role_reaches_the_other_database(stack, key):
    engine = create_engine(stack[key])
    try:
        with pytest.raises(OperationalError, match="permission denied for database"):
            engine.connect().close()
    finally:
        engine.dispose()


def test_the_app_role_can_call_connect_once_the_schema_exists(stack, real_connect):
    """`tfp db upgrade` runs as the owner; connect() only checks the revision, so the app role may call it
    (before the schema history, connect() ran CREATE OR REPLACE FUNCTION, which only the owner may)."""
    from tfp.config import ConfigError
    from tfp.warehouse import connect, upgrade

    with pytest.raises(ConfigError, match="run `tfp db upgrade"):
        connect(stack["app"])
    upgrade(stack["owner"])
    connect(stack["app"])


@pytest.mark.slow  # every stage of a generated borough's night, then retention
def test_a_night_and_its_retention_run_as_the_app_role(stack, tmp_path, keys_env):
    """Every stage of a generated borough's night, then the nightly retention, connected as the app role.

    The owner migrates the schema (``tfp db upgrade``); the app role's ``connect`` only checks it. The
    programme-end purge is left out: it drops and recreates tables, so it runs as the owner by design.
    """
    from datetime import date, timedelta

    from helpers import write_config
    from tfp import pipeline, warehouse
    from tfp.config import load_config
    from tfp.feeds import SOURCES
    from tfp.retention import compact, run_category
    from tfp_dev.generate import generate

    warehouse.upgrade(stack["owner"])
    reference = date(2025, 3, 31)
    generate(tmp_path / "inbound", families=40, seed=5, on=reference)
    path = str(write_config(tmp_path, stack["app"]))
    for source in SOURCES:
        pipeline.extract(path, reference, source)
        pipeline.validate(path, reference, source)
        pipeline.stage(path, reference, source)
    pipeline.link(path, reference)
    pipeline.consent(path, reference)
    assert pipeline.criteria(path, reference)
    pipeline.package(path, reference)
    config = load_config(path)
    engine = warehouse.get_engine(stack["app"])
    later = reference + timedelta(days=500)
    deleted = {category: run_category(engine, config, category, later, dry_run=False).deleted
               for category in ("landing_copies", "quarantine", "staging", "withdrawn")}
    assert deleted["staging"] > 0, deleted
    compact(engine)


def _server_version() -> int:
    if not PG_SERVER:
        return 0
    engine = create_engine(PG_SERVER)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SHOW server_version_num")).scalar_one())
    finally:
        engine.dispose()


@pytest.mark.xfail(PG_SERVER is not None and _server_version() < 170000, strict=True,
                   reason="before PostgreSQL 17 only a table's owner may VACUUM or ANALYZE it: others are "
                          "skipped with a warning (the stack runs 17, whose MAINTAIN grant allows it)")
def test_the_app_role_may_vacuum_and_analyze(stack):
    """Retention's VACUUM makes deleted rows unrecoverable; a skipped one would leave them in the files."""
    from tfp.warehouse import connect, get_engine

    connect(stack["owner"])
    warnings: list[str] = []
    with get_engine(stack["app"]).connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.connection.driver_connection.add_notice_handler(lambda n: warnings.append(n.message_primary))
        conn.execute(text("VACUUM links"))
        conn.execute(text("ANALYZE links"))
    assert not warnings, warnings

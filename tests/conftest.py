"""Shared fixtures: a warehouse on SQLite and on the machine's real PostgreSQL, and fresh keys.

PostgreSQL variants need ``TFP_TEST_POSTGRES_URL`` (a server URL such as
``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``); each test gets its own database,
dropped afterwards. Without the variable they are skipped with that reason.
"""

from __future__ import annotations

import base64
import os
import secrets
import tempfile
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

import tfp_airflow

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
# One Airflow home per test process, set before anything imports Airflow (it reads settings once).
# pytest-xdist workers inherit the controller's environment: each worker makes its own home, so
# two workers never share one SQLite metadata database.
if "AIRFLOW_HOME" not in os.environ or (
        os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get("TFP_TEST_AIRFLOW_HOME") == os.environ["AIRFLOW_HOME"]):
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="tfp-test-airflow-")
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["TFP_TEST_AIRFLOW_HOME"] = os.environ["AIRFLOW_HOME"]
# Where the session's migrated Airflow home template is made, once, shared by the xdist workers;
# the process that made the folder removes it at the end (pytest_unconfigure).
_OWN_TEMPLATE = "TFP_TEST_AIRFLOW_TEMPLATE" not in os.environ
if _OWN_TEMPLATE:
    os.environ["TFP_TEST_AIRFLOW_TEMPLATE"] = tempfile.mkdtemp(prefix="tfp-test-airflow-template-")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(Path(__file__).resolve().parents[1] / "dags"))

PG_SERVER = os.environ.get("TFP_TEST_POSTGRES_URL")

# The template is migrated by the code `tfp run` migrates its own home with.
_MIGRATE_TEMPLATE = "import sys; from pathlib import Path; from tfp_airflow.runner import prepare_airflow; " \
                    "prepare_airflow(Path(sys.argv[1]))"


def _airflow_template() -> Path:
    """The session's migrated Airflow home: made once (under a lock, for xdist's workers) by the code
    ``tfp run`` uses to migrate its own home, so its migration marker is the one ``tfp run`` checks."""
    import fcntl
    import subprocess
    import sys

    root = Path(os.environ["TFP_TEST_AIRFLOW_TEMPLATE"])
    home = root / "home"
    with (root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "done").exists():
            env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__"))}
            env.update({"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"})
            done = subprocess.run([sys.executable, "-c", _MIGRATE_TEMPLATE, str(root / "unused")], env=env,
                                  capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                raise RuntimeError(f"migrating the test Airflow home failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
            (root / "done").touch()
    return home


# What a copy takes from the template: the SQLite metadata database and tfp's migration marker, not
# airflow.cfg (it names the template's own paths, its database among them).
_TEMPLATE_FILES = ("airflow.db", ".tfp-migrated")


def airflow_home(dest: Path) -> Path:
    """``dest`` as a migrated Airflow home of its own (a copy of the session's template), so ``tfp run``
    or an Airflow stack on it skips the metadata migration that otherwise costs each test seconds to
    tens of seconds. A ``dest`` that already holds a database is left as it is."""
    import shutil

    dest.mkdir(parents=True, exist_ok=True)
    if not (dest / "airflow.db").exists():
        template = _airflow_template()
        for name in _TEMPLATE_FILES:
            shutil.copy2(template / name, dest / name)
    return dest


_SQLITE_TEMPLATE: Path | None = None


def _sqlite_template() -> Path:
    """This process's migrated SQLite warehouse, made once by ``create_schema`` (what `tfp db upgrade`
    runs): an empty SQLite warehouse becomes a page-for-page copy of it, which takes milliseconds where
    running the migrations takes a second or more of fsyncs on each of hundreds of tests."""
    global _SQLITE_TEMPLATE
    if _SQLITE_TEMPLATE is None:
        from tfp import warehouse

        path = Path(tempfile.mkdtemp(prefix="tfp-test-warehouse-")) / "template.db"
        engine = warehouse.get_engine(f"sqlite:///{path}")
        warehouse.create_schema(engine)
        engine.dispose()
        _SQLITE_TEMPLATE = path
    return _SQLITE_TEMPLATE


def _migrate_empty_then_check(engine, hint=None):
    """Tests stand in for the operator's one `tfp db upgrade`: a warehouse that has no table at all
    is migrated to head the first time anything connects to it (a SQLite file by copying the session's
    migrated template into it); any other is only checked, as in production. ``real_connect`` switches
    this off."""
    import sqlite3

    from sqlalchemy import inspect

    from tfp import warehouse

    with engine.connect() as conn:
        empty = not inspect(conn).get_table_names()
    if empty and warehouse.sqlite_path(engine.url.render_as_string(hide_password=False)) is not None:
        template = sqlite3.connect(_sqlite_template())
        raw = engine.raw_connection()
        try:
            template.backup(raw.driver_connection)
        finally:
            raw.close()
            template.close()
    elif empty:
        warehouse.create_schema(engine)
    _CHECK_SCHEMA(engine, **({"hint": hint} if hint else {}))


def _install_test_migration() -> None:
    from tfp import warehouse

    global _CHECK_SCHEMA
    _CHECK_SCHEMA = warehouse.check_schema
    warehouse.check_schema = _migrate_empty_then_check  # connect() looks it up on every call


_CHECK_SCHEMA = None
_install_test_migration()

# Tests call tfp as a task does: with the Airflow adapter's lookups installed (the DAG files install them),
# so AIRFLOW_VAR_* and AIRFLOW_CONN_* reach tfp through Airflow. tests/test_airflow_free.py runs without.
tfp_airflow.install()


@pytest.fixture
def real_connect(monkeypatch):
    """connect() exactly as in production: an empty or older warehouse is refused, not migrated."""
    from tfp import warehouse

    monkeypatch.setattr(warehouse, "check_schema", _CHECK_SCHEMA)


def _new_pg_database() -> str:
    server = make_url(PG_SERVER)
    name = f"tfp_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return server.set(database=name).render_as_string(hide_password=False)


def new_pg_warehouse(url: str | None = None) -> str:
    """A PostgreSQL warehouse migrated as the operator's ``tfp db upgrade`` leaves it (a new database when
    no ``url``): for tests whose runs connect from other processes, where no first connect migrates it."""
    from tfp.warehouse import upgrade

    url = url or _new_pg_database()
    upgrade(url)
    return url


def _drop_pg_database(url: str) -> None:
    from tfp.warehouse import get_engine

    get_engine(url).dispose()
    target = make_url(url)
    admin = create_engine(target.set(database=make_url(PG_SERVER).database), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def pg_url():
    if not PG_SERVER:
        pytest.skip("PostgreSQL variant: set TFP_TEST_POSTGRES_URL to run it (.ci/run does)")
    url = _new_pg_database()
    yield url
    _drop_pg_database(url)


@pytest.fixture
def sqlite_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    yield url
    from tfp.warehouse import get_engine

    get_engine(url).dispose()


_PG_SHARED: str | None = None


def _pg_shared_database() -> str:
    """This process's database for the PostgreSQL variants of ``warehouse_url``, made on first use and
    dropped at the end (pytest_unconfigure). Commits there do not wait for the WAL flush: no test
    crashes the server, and a fresh database per test (CREATE DATABASE, then DROP DATABASE, which
    forces a checkpoint of the whole server) cost seconds per test."""
    global _PG_SHARED
    if _PG_SHARED is None:
        url = _new_pg_database()
        admin = create_engine(make_url(PG_SERVER), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{make_url(url).database}" SET synchronous_commit = off'))
        admin.dispose()
        _PG_SHARED = url
    return _PG_SHARED


@pytest.fixture
def pg_schema_url():
    """An empty PostgreSQL warehouse of its own: a new schema (the connection's only search_path entry)
    in this process's shared database, dropped afterwards. Tests that look at the whole database (its
    files, pg_statistic, its backends) use ``pg_url``, a database of their own."""
    if not PG_SERVER:
        pytest.skip("PostgreSQL variant: set TFP_TEST_POSTGRES_URL to run it (.ci/run does)")
    from tfp.warehouse import get_engine

    base = make_url(_pg_shared_database())
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = base.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    yield url
    get_engine(url).dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def warehouse_url(request, tmp_path):
    """The same test on both databases (on PostgreSQL, a schema of its own in a shared database)."""
    if request.param == "sqlite":
        yield request.getfixturevalue("sqlite_url")
    else:
        yield request.getfixturevalue("pg_schema_url")


def make_keys() -> dict[str, str]:
    """Fresh secrets for one test, as the environment variables the example config names."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    signing = Ed25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return {
        "TFP_PSEUDONYM_KEY": secrets.token_hex(32),
        "TFP_LINKAGE_KEY": secrets.token_hex(32),
        "TFP_SIGNING_KEY": base64.b64encode(signing).decode(),
    }


@pytest.fixture
def keys_env(monkeypatch):
    keys = make_keys()
    for name, value in keys.items():
        monkeypatch.setenv(name, value)
    return keys


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (``--dist loadgroup``), every test marked ``airflow_stack`` goes to one worker,
    one after another: two Airflow stacks side by side on two cores time each other out. (Under
    pytest 9 this marker alone no longer groups: see pytest_xdist_make_scheduler below.)"""
    for item in items:
        if item.get_closest_marker("airflow_stack"):
            item.add_marker(pytest.mark.xdist_group("airflow_stack"))


def pytest_unconfigure(config):
    import shutil

    if _OWN_TEMPLATE:
        shutil.rmtree(os.environ["TFP_TEST_AIRFLOW_TEMPLATE"], ignore_errors=True)
    if _SQLITE_TEMPLATE is not None:
        shutil.rmtree(_SQLITE_TEMPLATE.parent, ignore_errors=True)
    if _PG_SHARED is not None:
        _drop_pg_database(_PG_SHARED)


try:
    import xdist  # noqa: F401 - only to know whether pytest-xdist is there
except ImportError:
    xdist = None

if xdist is not None:
    def pytest_xdist_make_scheduler(config, log):
        """``--dist loadgroup`` with the airflow_stack group kept by test file, and each file that has a
        module-scoped fixture kept on one worker.

        pytest 9 reads a test's id from ``item._id``: xdist 3.8's loadgroup still appends the group to
        ``item._nodeid`` on the workers, which is now ignored, so its groups never form. Here the
        controller (which sees only test ids) puts every test of a file that uses the ``airflow_stack``
        marker into one group instead.
        """
        if config.getvalue("dist") != "loadgroup":
            return None
        from xdist.scheduler import LoadGroupScheduling

        here = Path(__file__).parent
        sources = {f"{here.name}/{p.name}": p.read_text(encoding="utf-8") for p in here.glob("test_*.py")}
        stack_files = {name for name, source in sources.items() if "mark.airflow_stack" in source}
        # A module-scoped fixture (a night's report, a DagBag, a generated borough) is built once per
        # worker that runs one of the file's tests: its file stays on one worker, so it is built once.
        module_files = {name for name, source in sources.items() if 'scope="module"' in source}

        class StackGroups(LoadGroupScheduling):
            def _split_scope(self, nodeid: str) -> str:
                path = nodeid.split("::", 1)[0]
                if path in stack_files:
                    return "airflow_stack"
                if path in module_files:
                    return path
                return super()._split_scope(nodeid)

        return StackGroups(config, log)

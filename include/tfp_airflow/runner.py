"""``tfp run`` and ``tfp retention``: the real DAGs, in-process, through Airflow's ``dag.test()``.

Airflow reads its settings when first imported, so this module sets ``AIRFLOW_HOME`` and the
few settings tfp needs before importing it: ``AIRFLOW_HOME`` when set (even a new, empty folder),
otherwise ``<work_dir>/airflow``; the DAGs folder (``dags_folder``); no example DAGs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from contextlib import contextmanager
from datetime import date
from pathlib import Path

from tfp.config import ConfigError, load_config, load_keys, secret_names, sensitive_var_conn_names
from tfp.errors import LiveAirflow
from tfp.resources import shipped
from tfp_airflow.heap import freeze_at_exit, long_lived
from tfp_airflow.lookups import install

LONDON = "Europe/London"


def dags_folder() -> Path:
    """The folder whose DAG files ``tfp run`` and ``tfp retention`` run.

    ``AIRFLOW__CORE__DAGS_FOLDER`` when set, so a deployment's ``tfp run`` runs the same files as its
    scheduler (the image's ``/opt/airflow/dags``); otherwise the DAG files this package ships
    (``tfp_airflow/dags``: a copy in a wheel, a link to the repository's ``dags/`` in a checkout).
    """
    configured = os.environ.get("AIRFLOW__CORE__DAGS_FOLDER")
    if configured:
        return Path(configured).expanduser()
    return shipped("tfp_airflow", "dags")


def plugins_folder() -> Path:
    """The folder of the tfp plugin (the reports page), shipped in the package like the DAG files."""
    return shipped("tfp_airflow", "plugins")


def prepare_airflow(work_dir: Path, sensitive: list[str] | tuple[str, ...] = ()) -> Path:
    """Point Airflow at its home and this project's DAGs, and migrate its metadata database if needed.

    ``sensitive`` (the variables holding keys and passwords) join Airflow's sensitive names, so
    Variables of those names are masked in the UI and the API, as well as any operator's own names.
    """
    home = Path(os.environ.get("AIRFLOW_HOME") or work_dir / "airflow").resolve()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["AIRFLOW_HOME"] = str(home)
    os.environ["AIRFLOW__CORE__SENSITIVE_VAR_CONN_NAMES"] = sensitive_var_conn_names(
        list(sensitive), os.environ.get("AIRFLOW__CORE__SENSITIVE_VAR_CONN_NAMES", ""))
    os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(dags_folder()))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(plugins_folder()))
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("SCARF_ANALYTICS", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    # A short summary on the console: Airflow's own INFO chatter only when asked for
    # (AIRFLOW__LOGGING__LOGGING_LEVEL=INFO); warnings and task failures always show.
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    logging.getLogger("airflow").setLevel(logging.WARNING)
    import airflow
    from airflow.utils import db

    refuse_live_scheduler(home)
    # Migrating takes seconds even when nothing changes: do it once per home and Airflow version.
    marker = home / ".tfp-migrated"
    database = hashlib.sha256(os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "").encode()).hexdigest()[:16]
    stamp = f"airflow {airflow.__version__} database {database}\n"
    if not marker.exists() or marker.read_text() != stamp:
        db.upgradedb()
        marker.write_text(stamp)
    return home


def refuse_live_scheduler(home: Path) -> None:
    """Raise LiveAirflow when a scheduler heartbeats into this home's metadata database (a running
    SchedulerJob within Airflow's own health threshold)."""
    from airflow.jobs.job import Job
    from airflow.settings import engine
    from airflow.utils.session import create_session
    from sqlalchemy import inspect, select

    if not inspect(engine).has_table("job"):
        return  # a new home: nothing runs against it
    with create_session() as session:
        jobs = session.scalars(select(Job).where(Job.job_type == "SchedulerJob", Job.state == "running")).all()
        if any(job.is_alive() for job in jobs):
            raise LiveAirflow(
                f"AIRFLOW_HOME {home} belongs to an Airflow whose scheduler is running: tfp run would race it. "
                "Trigger the DAG there (airflow dags trigger / the UI), or run tfp with AIRFLOW_HOME unset "
                "(it then uses <work_dir>/airflow) or set to a folder of its own")


class _DropPolling(logging.Filter):
    """dag.test() says 'No tasks to run' every second while a task waits for its retry: not news."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No tasks to run")


def _outcomes(dag, run_id: str) -> list[tuple[str, str, int]]:
    """(task id, state, tries) of every task of one run, in run order: the tasks that started by their
    start time, then those that never started (skipped, upstream failed) in the DAG's dependency order."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(select(TaskInstance.task_id, TaskInstance.state, TaskInstance.try_number,
                                      TaskInstance.start_date)
                               .where(TaskInstance.dag_id == dag.dag_id, TaskInstance.run_id == run_id)).all()
    return run_order(rows, [task.task_id for task in dag.topological_sort()])


def run_order(rows, dependency_order: list[str]) -> list[tuple[str, str, int]]:
    """``rows`` of (task id, state, tries, start time or None) sorted as the tasks ran (see _outcomes)."""
    rank = {task_id: i for i, task_id in enumerate(dependency_order)}
    never = len(rank)

    def key(row):
        task_id, _, _, started = row
        return (started is None, started.timestamp() if started else 0.0, rank.get(task_id, never), task_id)

    return [(task_id, str(state.value if hasattr(state, "value") else state), tries)
            for task_id, state, tries, _ in sorted(rows, key=key)]


def _quiet_known_noise() -> None:
    import warnings

    # dag.test() runs the execution API through starlette's test client, which warns about httpx.
    warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette.testclient`")


def _dag_source() -> tuple[Path, str, str]:
    """The DAGs folder, how to name it in an error, and what to do about one; checked to be a folder,
    before Airflow is imported or migrated, so a wrong path fails in a second."""
    folder = dags_folder()
    if os.environ.get("AIRFLOW__CORE__DAGS_FOLDER"):
        where = "AIRFLOW__CORE__DAGS_FOLDER"
        fix = ("point AIRFLOW__CORE__DAGS_FOLDER at the folder that holds tfp_nightly.py and tfp_retention.py, "
               "or unset it: tfp then runs the DAG files it ships")
    else:
        where, fix = "the DAGs folder", "reinstall tfp (pip install . from the repository): the package ships its DAG files"
    if not folder.is_dir():
        raise ConfigError(f"{where} {folder} is not a folder", hint=fix)
    return folder, where, fix


def _check_warehouse_schema(config, config_path: Path, migrated_by_the_dag: bool) -> None:
    """Refuse, in one line and before Airflow starts, a warehouse whose schema is not this tfp's: an
    unmigrated one (SchemaBehind, naming `tfp db upgrade --config <this config>`) or a newer one.

    The night's first task migrates an embedded SQLite warehouse itself (``migrated_by_the_dag``), so
    only retention checks one. A warehouse that cannot be reached is left to the tasks, which retry.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from tfp import warehouse
    from tfp.config import warehouse_url

    engine = warehouse.get_engine(warehouse_url(config))
    try:
        if migrated_by_the_dag and engine.dialect.name == "sqlite":
            return
        warehouse.check_schema(engine, hint=f"tfp db upgrade --config {config_path}")
    except SQLAlchemyError:
        return
    finally:
        engine.dispose()


def _get_dag(dag_id: str, folder: Path, where: str, fix: str):
    """``dag_id`` parsed from the DAG files in ``folder``."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(folder))
    if bag.import_errors:
        raise RuntimeError(f"the DAGs folder has import errors in: {', '.join(sorted(bag.import_errors))}")
    dag = bag.dags.get(dag_id)  # what the folder parsed to, not the metadata database
    if dag is None:
        raise ConfigError(f"{where} {folder} has no DAG {dag_id}", hint=fix)
    return dag


def _build_execution_api() -> None:
    """Build the execution API that ``dag.test()`` serves this process's tasks from, now (inside
    ``long_lived``) rather than at the first task, and for the one API version its tasks speak.

    Airflow's app answers every version of the API since 3.0 (nine), for workers of older Task SDKs;
    Cadwyn builds each version's routes and models, about 5 s of a 2,000-family night. The only client
    of this in-process app is this process's Task SDK, which sends its own ``API_VERSION``: when that is
    the app's newest version, the app is built for that version alone (its routes and models are the
    newest's, unchanged). Any other case, or any error, builds Airflow's app as it is.
    """
    try:
        from airflow.sdk.execution_time.supervisor import in_process_api_server
    except ImportError:  # another Airflow: dag.test() builds its own at the first task, as before
        return
    try:
        with _newest_api_version_only():
            app = in_process_api_server().app
            _initialise(app)
    except Exception:  # noqa: BLE001 - the trimmed app is an optimisation; Airflow's own is always right
        in_process_api_server.cache_clear()
        _initialise(in_process_api_server().app)


def _initialise(app) -> None:
    """What Cadwyn does at an app's first request: generate its versioned routes."""
    if getattr(app, "_cadwyn_initialized", True) is False and hasattr(app, "_cadwyn_initialize"):
        app._cadwyn_initialize()


@contextmanager
def _newest_api_version_only():
    """While Airflow creates the in-process app: its version bundle holds the newest version alone, and its
    router leaves out the routes that exist only in older versions; both are put back afterwards."""
    from copy import copy

    from airflow.api_fastapi.execution_api import routes, versions
    from airflow.sdk.api.datamodels._generated import API_VERSION
    from cadwyn import HeadVersion, Version, VersionBundle
    from cadwyn.route_generation import _DELETED_ROUTE_TAG

    bundle, router = versions.bundle, routes.execution_api_router
    if str(bundle.versions[0].value) != API_VERSION or getattr(bundle.head_version, "changes", ()):
        yield  # the Task SDK speaks another version than the newest: Airflow's app as it is
        return
    newest = copy(router)
    newest.routes = [r for r in router.routes if _DELETED_ROUTE_TAG not in (getattr(r, "tags", None) or ())]
    versions.bundle = VersionBundle(HeadVersion(), Version(bundle.versions[0].value))
    routes.execution_api_router = newest
    try:
        yield
    finally:
        versions.bundle, routes.execution_api_router = bundle, router


def run_dag(dag_id: str, config_path: Path, reference_date: date, conf: dict | None = None) -> tuple[str, Path]:
    """Run one DAG for one reference date; returns the run's state and the config's work_dir."""
    config_path = Path(config_path).resolve()
    install()  # keys and Connections may be Airflow Variables and Connections, as in a task
    config = load_config(config_path)
    load_keys(config)  # a missing or short key stops here, before any work
    folder, where, fix = _dag_source()
    _check_warehouse_schema(config, config_path, migrated_by_the_dag=dag_id == "tfp_nightly")
    _quiet_known_noise()
    freeze_at_exit()
    with long_lived():  # Airflow, the parsed DAG and the execution API stay until the process ends
        prepare_airflow(config.work_dir, secret_names(config))
        # the deployment names the config (contract section 10): for this process, the operator's --config
        os.environ["TFP_CONFIG"] = str(config_path)
        import pendulum

        dag = _get_dag(dag_id, folder, where, fix)
        _build_execution_api()
    logical = pendulum.datetime(reference_date.year, reference_date.month, reference_date.day, 1, tz=LONDON)
    polling = _DropPolling()
    logging.getLogger("airflow.sdk.definitions.dag").addFilter(polling)
    try:
        run = dag.test(logical_date=logical, run_conf=dict(conf or {}))
    finally:
        logging.getLogger("airflow.sdk.definitions.dag").removeFilter(polling)
    state = str(getattr(run, "state", "failed"))
    outcomes = _outcomes(dag, run.run_id) if run is not None else []
    print(f"{dag_id} tasks:")
    for task_id, task_state, tries in outcomes:
        print(f"  {task_id}: {task_state}" + (f" (tries: {tries})" if tries > 1 else ""))
    if not outcomes:  # Airflow makes an empty, "successful" run for a date before the DAG's start_date
        print(f"  no task ran (is {reference_date} before the DAG's start date?)", file=sys.stderr)
        state = "failed"
    return state, config.work_dir


def _summary(report_path: Path, keys: tuple[str, ...]) -> str:
    if not report_path.exists():
        return ""
    report = json.loads(report_path.read_text(encoding="utf-8"))
    return ", ".join(f"{k}={report[k]}" for k in keys if k in report)


def run_nightly(config_path: Path, reference_date: date) -> int:
    from tfp.fsmodes import folder_warnings

    for warning in folder_warnings(load_config(config_path)):
        print(f"warning: {warning}", file=sys.stderr)
    try:
        state, work_dir = run_dag("tfp_nightly", config_path, reference_date)
    except ConfigError:
        raise
    report = work_dir / "reports" / reference_date.isoformat() / "run_report.json"
    ok = state.endswith("success")
    print(f"tfp_nightly {reference_date}: {'succeeded' if ok else 'FAILED'}")
    summary = _summary(report, ("rows_read", "rows_staged", "rows_quarantined", "records_linked", "records_unlinked", "families_assessed", "families_eligible",
                                "persons_submitted", "persons_excluded_by_consent"))
    if summary and ok:
        print(f"  {summary}")
        print(f"  report: {report}")
    if not ok:
        print("  see the task logs above (or in the Airflow home's logs folder) for the file and rule", file=sys.stderr)
    return 0 if ok else 1


def run_retention(config_path: Path, reference_date: date, dry_run: bool = False) -> int:
    state, work_dir = run_dag("tfp_retention", config_path, reference_date, {"dry_run": dry_run})
    ok = state.endswith("success")
    report = work_dir / "reports" / reference_date.isoformat() / "retention_report.json"
    print(f"tfp_retention {reference_date}{' (dry run)' if dry_run else ''}: {'succeeded' if ok else 'FAILED'}")
    if report.exists():
        for line in retention_lines(json.loads(report.read_text(encoding="utf-8"))):
            print(f"  {line}")
        print(f"  report: {report}")
    return 0 if ok else 1


def retention_lines(report: dict) -> list[str]:
    """A retention report as readable lines, one per category: what it deleted, or on a dry run what it
    would delete, with the cutoff (counts only)."""
    from tfp.retention import CATEGORIES

    dry = bool(report.get("dry_run"))
    categories = report.get("categories") or {}
    lines = []
    for name in [c for c in CATEGORIES if c in categories] + sorted(set(categories) - set(CATEGORIES)):
        c = categories[name]
        count = int(c.get("found", 0)) if dry else int(c.get("deleted", 0))
        verb = "would delete" if dry else "deleted"
        lines.append(f"{name.replace('_', ' ')}: {verb} {count} {c.get('unit', '')} (cutoff {c.get('cutoff', '')})")
    total = sum(int(c.get("found" if dry else "deleted", 0)) for c in categories.values())
    lines.append(f"{'would delete' if dry else 'deleted'} {total} in all" + (" (dry run: nothing was deleted)" if dry else ""))
    return lines

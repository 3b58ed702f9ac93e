"""``tfp airflow``: a real local Airflow for one config, in the foreground (contract section 10).

api-server (on 127.0.0.1 only), scheduler, dag-processor and triggerer, LocalExecutor, metadata on
SQLite under ``AIRFLOW_HOME`` as ``tfp run`` picks it (``<work_dir>/airflow`` when unset). The settings
go into the home's ``airflow.cfg``, so the airflow command line of the same venv with the same
``AIRFLOW_HOME`` works against it; ``TFP_CONFIG`` and the keys reach the components through their
environment only. Each component is its own process group: Ctrl-C (or SIGTERM) stops them all, then
kills what is left after a grace period.

Sign-in is Airflow's SimpleAuthManager with one ``admin`` whose password is kept in a 0600 JSON file
in the home (SimpleAuthManager's own passwords file), made once and reused by the next start.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
ADMIN = "admin"
PASSWORDS_FILE = "simple_auth_manager_passwords.json"
DAG_PREFIXES = ("tfp_nightly", "tfp_retention")
STOP_GRACE = 30.0  # seconds between SIGTERM and SIGKILL


class LocalAirflowError(RuntimeError):
    """A component did not come up, or exited while the others ran."""


# -- settings -------------------------------------------------------------------------------------

_SECTION = re.compile(r"^\s*\[([^\]]+)\]\s*$")


def set_options(cfg: Path, options: Mapping[tuple[str, str], str]) -> None:
    """Set ``[section] key = value`` in an ``airflow.cfg``, keeping its other lines and comments.

    Airflow writes a commented default file on first import; a configparser round trip would drop
    every comment, so this edits the few lines it owns and appends what is missing.
    """
    lines = cfg.read_text(encoding="utf-8").splitlines() if cfg.exists() else []
    for (section, key), value in options.items():
        current, header, found = None, None, None
        pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
        for i, line in enumerate(lines):
            match = _SECTION.match(line)
            if match:
                current = match.group(1).strip()
                if current == section and header is None:
                    header = i
            elif current == section and pattern.match(line):
                found = i
        entry = f"{key} = {value}"
        if found is not None:
            lines[found] = entry
        elif header is not None:
            lines.insert(header + 1, entry)
        else:
            lines += ["", f"[{section}]", entry]
    fd = os.open(cfg, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    os.chmod(cfg, 0o600)


def _configured(cfg: Path, section: str, key: str) -> bool:
    """Whether ``airflow.cfg`` gives ``[section] key`` a non-empty value."""
    import configparser

    parser = configparser.ConfigParser(interpolation=None, strict=False)
    with contextlib.suppress(OSError, configparser.Error):
        parser.read(cfg, encoding="utf-8")
    return bool(parser.get(section, key, fallback="").strip())


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_or_free(port: int) -> int:
    return port if port_free(port) else free_port()


def airflow_settings(home: Path, port: int, sensitive: str, passwords_file: Path,
                     users: Mapping[str, str] | None = None) -> dict[tuple[str, str], str]:
    """The settings a local tfp Airflow needs, as ``{(section, key): value}``.

    ``users`` are SimpleAuthManager's ``{username: role}``; ``admin`` alone when not given.
    """
    from tfp_airflow.runner import dags_folder, plugins_folder

    url = f"http://127.0.0.1:{port}"
    return {
        ("core", "dags_folder"): str(dags_folder()),
        ("core", "plugins_folder"): str(plugins_folder()),
        ("core", "load_examples"): "False",
        ("core", "executor"): "LocalExecutor",
        ("core", "parallelism"): str(max(4, os.cpu_count() or 1)),
        ("core", "execution_api_server_url"): f"{url}/execution/",
        ("core", "sensitive_var_conn_names"): sensitive,
        ("core", "simple_auth_manager_users"): ",".join(f"{u}:{r}" for u, r in (users or {ADMIN: "admin"}).items()),
        ("core", "simple_auth_manager_passwords_file"): str(passwords_file),
        ("core", "simple_auth_manager_all_admins"): "False",
        ("api", "host"): "127.0.0.1",
        ("api", "port"): str(port),
        ("api", "base_url"): url,
        ("api", "workers"): "1",  # two cores and SQLite: more workers only contend
        # a loaded machine with SQLite can keep the api-server busy for more than the 5 s default
        ("workers", "execution_api_timeout"): "60",
        # not 8793/8794 when another Airflow on this machine has them
        ("logging", "worker_log_server_port"): str(_port_or_free(8793)),
        ("logging", "trigger_log_server_port"): str(_port_or_free(8794)),
    }


def write_passwords(path: Path, users: Iterable[str] = (ADMIN,)) -> dict[str, str]:
    """SimpleAuthManager's passwords file, mode 0600: existing passwords kept, missing ones made."""
    passwords: dict[str, str] = {}
    if path.exists():
        with contextlib.suppress(ValueError):
            passwords = json.loads(path.read_text(encoding="utf-8") or "{}")
    for user in users:
        passwords.setdefault(user, secrets.token_urlsafe(16))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(passwords) + "\n")
    os.chmod(path, 0o600)  # an existing file keeps its mode through os.open
    return passwords


# -- metadata: pools, Connections, pausing ---------------------------------------------------------

def warehouse_schema(config) -> list[str]:
    """Migrate an embedded SQLite warehouse now, as the night's first task would: otherwise the retention
    DAG's first scheduled run, which starts beside the first night, finds no schema. A PostgreSQL
    warehouse is its owner's to migrate (``tfp db upgrade``): only a warning when it is behind."""
    from sqlalchemy.exc import SQLAlchemyError

    from tfp.config import warehouse_url
    from tfp.errors import TfpError
    from tfp.warehouse import connect, upgrade_embedded

    url = warehouse_url(config)
    notes = upgrade_embedded(url)
    try:
        connect(url).dispose()
    except TfpError as e:
        notes.append(f"warning: {e}")
    except SQLAlchemyError as e:  # the class only: the message may hold the URL
        notes.append(f"warning: the warehouse cannot be reached ({type(e).__name__}); the night will fail until it can")
    return notes


def used_pools() -> dict[str, int]:
    """``{pool: slots}`` for every pool a task of the DAGs folder names (default_pool included)."""
    from airflow.dag_processing.dagbag import DagBag

    from tfp_airflow.runner import dags_folder

    bag = DagBag(dag_folder=str(dags_folder()))
    pools: dict[str, int] = {}
    for dag in bag.dags.values():
        for task in dag.tasks:
            pools[task.pool] = max(pools.get(task.pool, 1), int(task.pool_slots or 1))
    return pools


def ensure_pools(pools: Mapping[str, int]) -> list[str]:
    """Create the pools that do not exist yet (``default_pool`` comes with the migration)."""
    from airflow.models.pool import Pool
    from airflow.utils.session import create_session
    from sqlalchemy import select

    made = []
    with create_session() as session:
        existing = set(session.scalars(select(Pool.pool)))
        for name, slots in pools.items():
            if name not in existing:
                session.add(Pool(pool=name, slots=max(slots, 4), description="made by tfp airflow",
                                 include_deferred=False))
                made.append(name)
    return made


def named_connections(config) -> list[str]:
    """Every Connection id the config names: any ``conn_id`` in it (SFTP sources or their partners,
    the delivery), found by walking the parsed config, so a new place for one is not missed."""
    ids: list[str] = []

    def walk(value: object) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key == "conn_id" and isinstance(item, str) and item:
                    ids.append(item)
                else:
                    walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)

    walk(config.model_dump())
    return list(dict.fromkeys(ids))


def given_connection(conn_id: str, environ: Mapping[str, str]) -> str | None:
    """A Connection's URI or JSON as given outside Airflow: the variable ``AIRFLOW_CONN_<ID>``, or a file
    named by ``AIRFLOW_CONN_<ID>_FILE`` (a mounted secret)."""
    name = f"AIRFLOW_CONN_{conn_id.upper()}"
    if environ.get(name):
        return environ[name]
    if environ.get(f"{name}_FILE"):
        return Path(environ[f"{name}_FILE"]).read_text(encoding="utf-8").strip()
    return None


def ensure_connections(conn_ids: Iterable[str], environ: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """Create or update in the metadata database each Connection given in the environment or a file, so
    the UI lists it; returns (stored, missing). A missing one is left for ``check_setup`` to name."""
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    stored, missing = [], []
    for conn_id in conn_ids:
        value = given_connection(conn_id, environ)
        if value is None:
            missing.append(conn_id)
            continue
        conn = (Connection.from_json(value, conn_id=conn_id) if value.lstrip().startswith("{")
                else Connection(conn_id=conn_id, uri=value))
        with create_session() as session:
            session.execute(delete(Connection).where(Connection.conn_id == conn_id))
            session.add(conn)
        stored.append(conn_id)
    return stored, missing


def tfp_dag_ids() -> list[str]:
    """The DAG ids this deployment defines: the pair, and one pair per borough file (TFP_BOROUGHS_DIR)."""
    from tfp.deployment import boroughs

    ids = list(DAG_PREFIXES)
    for code in boroughs():
        ids += [f"{prefix}__{code}" for prefix in DAG_PREFIXES]
    return ids


def unpause(dag_ids: Iterable[str]) -> list[str]:
    """Unpause the DAGs the dag-processor has stored; returns those still missing."""
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from sqlalchemy import select, update

    wanted = list(dag_ids)
    with create_session() as session:
        known = set(session.scalars(select(DagModel.dag_id).where(DagModel.dag_id.in_(wanted))))
        if known:
            session.execute(update(DagModel).where(DagModel.dag_id.in_(known)).values(is_paused=False))
    return [d for d in wanted if d not in known]


# -- processes ------------------------------------------------------------------------------------

@dataclass
class Components:
    """The started components, each the leader of its own process group."""

    home: Path
    env: dict[str, str]
    log_dir: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    seen: dict[int, object] = field(default_factory=dict)  # pid -> psutil.Process, every descendant seen

    def start(self, name: str, *args: str) -> None:
        airflow = str(Path(sys.executable).with_name("airflow"))
        log = (self.log_dir / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen([airflow, *args], env=self.env, cwd=self.home, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        log.close()

    def remember_descendants(self) -> None:
        """Note every process under the components, so one that left their process group is still stopped."""
        import psutil

        for proc in self.procs.values():
            with contextlib.suppress(psutil.Error):
                parent = psutil.Process(proc.pid)
                for p in [parent, *parent.children(recursive=True)]:
                    self.seen.setdefault(p.pid, p)

    def exited(self) -> str | None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                return f"{name} exited with {proc.returncode}"
        return None

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM every component's process group, wait, then SIGKILL the groups and any descendant left."""
        import psutil

        self.remember_descendants()
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        left = []
        for p in self.seen.values():
            with contextlib.suppress(psutil.Error):
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    left.append(p)
        for p in left:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(left, timeout=10)

    def tail(self, lines: int = 30) -> str:
        out = []
        for name in self.procs:
            path = self.log_dir / f"{name}.log"
            text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []
            out.append(f"--- {name} ({path}) ---\n" + "\n".join(text))
        return "\n".join(out)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=5) as resp:
            health = json.loads(resp.read())
    except (OSError, ValueError, urllib.error.URLError):
        return False
    return all((health.get(part) or {}).get("status") == "healthy"
               for part in ("metadatabase", "scheduler", "dag_processor", "triggerer"))


def _wait(components: Components, what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        problem = components.exited()
        if problem:
            raise LocalAirflowError(f"{problem} while waiting for {what}\n{components.tail()}")
        if check():
            return
        components.remember_descendants()
        time.sleep(2)
    raise LocalAirflowError(f"timed out after {timeout:.0f}s waiting for {what}\n{components.tail()}")


class _Stop(Exception):
    """SIGINT (Ctrl-C) or SIGTERM: stop every component."""


def _on_signal(signum, frame) -> None:
    raise _Stop


# -- the command ----------------------------------------------------------------------------------

def run_local_airflow(config_path: Path, port: int = 8080, boot_timeout: float = 600) -> int:
    """Prepare the home, start the four components, unpause the DAGs, then wait for Ctrl-C."""
    from tfp.config import ConfigError, load_config, load_keys, secret_names
    from tfp.deployment import borough_secret_names
    from tfp.errors import LiveAirflow
    from tfp_airflow.lookups import install
    from tfp_airflow.runner import _quiet_known_noise, prepare_airflow

    config_path = Path(config_path).resolve()
    install()  # the keys may be Airflow Variables, as in a task
    _quiet_known_noise()
    config = load_config(config_path)
    load_keys(config)  # a missing or short key stops here, before anything starts
    if not port_free(port):
        raise ConfigError(f"port {port} on 127.0.0.1 is in use: choose another with --port")
    given = dict(os.environ)  # the operator's environment, before prepare_airflow adds to it

    try:
        # every borough's key variables too (TFP_BOROUGHS_DIR): each has names of its own
        home = prepare_airflow(config.work_dir, secret_names(config) + borough_secret_names())
    except LiveAirflow as e:
        home = Path(os.environ["AIRFLOW_HOME"])
        raise ConfigError(f"AIRFLOW_HOME {home} already has a running scheduler: use that Airflow, or stop it "
                          "before starting another on the same home") from e

    passwords_file = home / PASSWORDS_FILE
    write_passwords(passwords_file)
    from tfp_airflow.preload import install_local_settings

    local_settings, written = install_local_settings(home)
    cfg = Path(os.environ.get("AIRFLOW_CONFIG") or home / "airflow.cfg")
    settings = airflow_settings(home, port, os.environ["AIRFLOW__CORE__SENSITIVE_VAR_CONN_NAMES"], passwords_file)
    if not _configured(cfg, "api_auth", "jwt_secret"):  # Airflow writes one with a new airflow.cfg
        settings[("api_auth", "jwt_secret")] = secrets.token_urlsafe(32)
    set_options(cfg, settings)

    schema = warehouse_schema(config)
    made = ensure_pools(used_pools())
    stored, missing = ensure_connections(named_connections(config), given)

    log_dir = home / "logs" / "tfp-airflow"
    log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(given)
    # the home's settings win over the operator's environment (an AIRFLOW__CORE__EXECUTOR left set, say)
    env.update({f"AIRFLOW__{section.upper()}__{key.upper()}": value for (section, key), value in settings.items()})
    env.update({"AIRFLOW_HOME": str(home), "TFP_CONFIG": str(config_path),
                "GX_ANALYTICS_ENABLED": "False", "SCARF_ANALYTICS": "false", "DO_NOT_TRACK": "1"})
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    components = Components(home=home, env=env, log_dir=log_dir)
    url = f"http://127.0.0.1:{port}"
    print(f"tfp airflow: Airflow home {home} (config {config_path})")
    print(f"  Airflow local settings: {local_settings} ({'written' if written else 'kept as it was'}; "
          "tfp's holds its Celery queue policy and preloads the tasks' libraries in the scheduler)")
    for line in schema:
        print(f"  {line}")
    if made:
        print(f"  pools made: {', '.join(made)}")
    if stored:
        print(f"  Connections stored from the environment: {', '.join(stored)}")
    if missing:
        print(f"  warning: Connection(s) {', '.join(missing)} not given (AIRFLOW_CONN_<ID> or AIRFLOW_CONN_<ID>_FILE): "
              "create them (airflow connections add) or check_setup will fail naming them", file=sys.stderr)

    # set both, whatever was inherited: a shell starts a background job with SIGINT ignored
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        components.start("api-server", "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1")
        components.start("scheduler", "scheduler")
        components.start("dag-processor", "dag-processor")
        components.start("triggerer", "triggerer")
        print(f"  starting api-server, scheduler, dag-processor, triggerer (logs in {log_dir}) ...", flush=True)
        _wait(components, "the components to report healthy", lambda: _healthy(url), boot_timeout)
        dag_ids = tfp_dag_ids()
        _wait(components, f"the DAGs {', '.join(dag_ids)} to be parsed", lambda: not unpause(dag_ids), boot_timeout)
        print(_welcome(url, passwords_file, dag_ids), flush=True)
        while True:
            problem = components.exited()
            if problem:
                raise LocalAirflowError(f"{problem}\n{components.tail()}")
            components.remember_descendants()
            time.sleep(2)
    except _Stop:
        print("\ntfp airflow: stopping ...", flush=True)
        _shutdown(components)
        print("tfp airflow: stopped", flush=True)
        return 0
    except LocalAirflowError as e:
        print(f"tfp airflow: {e}", file=sys.stderr, flush=True)
        _shutdown(components)
        return 1
    except BaseException:
        _shutdown(components)
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _shutdown(components: Components) -> None:
    """Stop the components; a second Ctrl-C must not cut the clean-up short and leave processes behind."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    components.stop()


def _welcome(url: str, passwords_file: Path, dag_ids: list[str]) -> str:
    return "\n".join([
        "",
        f"Airflow is up: {url}",
        f"  sign in as {ADMIN}; the password is in {passwords_file} (mode 0600)",
        f"  unpaused: {', '.join(dag_ids)}",
        "  first: sign in, open Dags > tfp_nightly, press Trigger, set reference_date to the night to run",
        "  (the date of the newest partner files) and trigger: the grid shows each task turn green. The",
        f"  night's run report and Data Docs are under Browse > tfp reports ({url}/tfp-reports/).",
        "  An unpaused DAG also runs on its schedule: tfp_nightly at 01:00 London, the latest night at once.",
        "  The airflow command line works against it with the same AIRFLOW_HOME. Ctrl-C stops everything.",
        "",
    ])

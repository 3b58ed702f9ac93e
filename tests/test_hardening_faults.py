"""Faults: partner SFTP unreachable, refusing, hanging or dropping; the recipient dropping mid-upload
or refusing the rename; the warehouse connection killed mid-stage; the disk full while landing; the
run killed at stage boundaries and mid-stage. After each, a re-run produces exactly what an
undisturbed run produces, and nothing is half-written under a final name."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hardening_helpers import (
    R,
    assert_counts_add_up,
    files_bytes,
    half_written,
    landings,
    make_borough,
    night_root,
    process,
    run_env,
    staged_count,
    start_run,
    tfp_run,
    wait_for,
)
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from test_hardening_input import GOOD_40, NEEDS_FILE, csv_bytes, needs_rows

from conftest import make_keys
from helpers import make_config
from tfp import sftp as sftp_module
from tfp.deliver import deliver
from tfp.extract import land_source
from tfp.package import PackagedFile
from tfp.sftp import SftpEndpoint, SftpError
from tfp.stage import stage_source
from tfp.validate import validate_source
from tfp.warehouse import connect
from tfp_dev.sftpserver import SftpServer

FEEDS = {NEEDS_FILE: GOOD_40, "needs_20250228.csv": csv_bytes(needs_rows(3000, "m"))}


def _conn_json(server: SftpServer, password: str | None = None, port: int | None = None) -> str:
    return json.dumps({"conn_type": "sftp", "host": server.host, "port": port or server.port,
                       "login": server.username, "password": password or server.password,
                       "extra": {"host_key": server.host_key, "no_host_key_check": False}})


@pytest.fixture
def partner(tmp_path):
    """A partner SFTP server holding two needs files, and a warehouse whose children_services reads it."""
    root = tmp_path / "partner"
    (root / "children_services").mkdir(parents=True)
    for name, body in FEEDS.items():
        (root / "children_services" / name).write_bytes(body)
    with SftpServer(root) as server:
        yield server


def _sftp_config(tmp_path, warehouse_url):
    return make_config(tmp_path, warehouse_url, sources={"children_services": {
        "transport": "sftp", "conn_id": "sftp_partner", "path": "/children_services"}})


def _landed_as_undisturbed(engine, config) -> None:
    """Both files landed once each, byte for byte, staged, and the landing folder holds nothing else."""
    rows = landings(engine)
    assert sorted((r["file_name"], r["sha256"], r["status"]) for r in rows) == sorted(
        (name, hashlib.sha256(body).hexdigest(), "staged") for name, body in FEEDS.items())
    assert staged_count(engine, "needs") == 40 + 3000
    copies = sorted(p.name for p in (config.work_dir / "landing").rglob("*") if p.is_file())
    assert copies == sorted(f"{r['id']}.{kind}.bin" for r in rows for kind in ("raw", "validated"))
    assert_counts_add_up(engine)


def _nothing_landed(engine, config) -> None:
    assert [r["status"] for r in landings(engine)] in ([], ["landed"])  # at most a file completed before the fault
    assert half_written(config.work_dir) == []


def test_partner_server_unreachable_then_back(tmp_path, warehouse_url, partner, monkeypatch):
    config = _sftp_config(tmp_path, warehouse_url)
    engine = connect(warehouse_url)
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    monkeypatch.setenv("AIRFLOW_CONN_SFTP_PARTNER", _conn_json(partner, port=closed_port))
    with pytest.raises(SftpError, match=f"cannot connect to 127.0.0.1:{closed_port}"):
        process(engine, config, sources=["children_services"])
    _nothing_landed(engine, config)
    monkeypatch.setenv("AIRFLOW_CONN_SFTP_PARTNER", _conn_json(partner))
    process(engine, config, sources=["children_services"])
    _landed_as_undisturbed(engine, config)


def test_partner_server_refusing_auth(tmp_path, sqlite_url, partner, monkeypatch):
    config = _sftp_config(tmp_path, sqlite_url)
    engine = connect(sqlite_url)
    monkeypatch.setenv("AIRFLOW_CONN_SFTP_PARTNER", _conn_json(partner, password="not-the-password"))
    with pytest.raises(SftpError) as info:
        process(engine, config, sources=["children_services"])
    assert "authentication" in str(info.value) and "not-the-password" not in str(info.value)
    _nothing_landed(engine, config)


def test_partner_server_hanging_mid_transfer_times_out(tmp_path, sqlite_url, partner, monkeypatch):
    monkeypatch.setattr(sftp_module.SftpClient.__init__, "__defaults__", (2.0,))  # the 30 s default, shortened
    config = _sftp_config(tmp_path, sqlite_url)
    engine = connect(sqlite_url)
    monkeypatch.setenv("AIRFLOW_CONN_SFTP_PARTNER", _conn_json(partner))
    partner.faults.hang_seconds = 6
    started = time.monotonic()
    with pytest.raises(SftpError, match="connection lost or timed out"):
        process(engine, config, sources=["children_services"])
    assert time.monotonic() - started < 30
    _nothing_landed(engine, config)
    partner.faults.hang_seconds = 0
    process(engine, config, sources=["children_services"])
    _landed_as_undisturbed(engine, config)


def test_partner_server_dropping_mid_download(tmp_path, warehouse_url, partner, monkeypatch):
    config = _sftp_config(tmp_path, warehouse_url)
    engine = connect(warehouse_url)
    monkeypatch.setenv("AIRFLOW_CONN_SFTP_PARTNER", _conn_json(partner))
    partner.faults.fail_after_bytes = len(GOOD_40) + 20_000  # the first file arrives, the second is cut
    with pytest.raises(SftpError, match="reading needs_20250228.csv .*connection lost"):
        process(engine, config, sources=["children_services"])
    _nothing_landed(engine, config)
    process(engine, config, sources=["children_services"])
    _landed_as_undisturbed(engine, config)


# -- the recipient's server ------------------------------------------------------------------------

def _outbox(folder: Path) -> list[PackagedFile]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for name, size in (("tfp_submission_E09000031_20250331.csv", 400_000), ("tfp_summary_E09000031_20250331.csv", 900),
                       ("tfp_manifest_E09000031_20250331.json", 300), ("tfp_manifest_E09000031_20250331.json.sig", 88)):
        data = hashlib.sha256(name.encode()).hexdigest().encode() * (size // 64 + 1)
        (folder / name).write_bytes(data)
        files.append(PackagedFile(name, folder / name, hashlib.sha256(data).hexdigest()))
    return files


@pytest.mark.parametrize("fault", ["drop mid-upload", "drop after upload before rename", "rename refused"])
def test_recipient_fault_then_rerun_delivers_exactly_once(tmp_path, sqlite_url, fault):
    engine = connect(sqlite_url)
    files = _outbox(tmp_path / "outbox")
    with SftpServer(tmp_path / "recipient") as ons:
        (ons.root / "inbound").mkdir()
        endpoint = SftpEndpoint(ons.host, ons.port, ons.username, ons.password, None, ons.host_key)
        if fault == "drop mid-upload":
            ons.faults.fail_after_bytes = 200_000
        elif fault == "drop after upload before rename":
            ons.faults.drop_on_rename = True  # the submission's bytes all arrive, the rename never happens
        else:
            ons.faults.refuse_rename = True
        with pytest.raises(SftpError):
            deliver(files, transport="sftp", path="/inbound", conn_id=None, engine=engine, reference_date=R,
                    endpoint=endpoint)
        inbound = ons.root / "inbound"
        assert "tfp_manifest_E09000031_20250331.json" not in files_bytes(inbound)  # the manifest goes last
        for name, data in files_bytes(inbound).items():  # a final name only ever holds a whole file
            assert ".part-" in name or data == (tmp_path / "outbox" / name).read_bytes(), name
        ons.faults.refuse_rename = False
        ons.faults.fail_after_bytes = None
        deliver(files, transport="sftp", path="/inbound", conn_id=None, engine=engine, reference_date=R,
                endpoint=endpoint)
        assert files_bytes(inbound) == {f.name: f.path.read_bytes() for f in files}
        again = deliver(files, transport="sftp", path="/inbound", conn_id=None, engine=engine, reference_date=R,
                        endpoint=endpoint)
    assert again == {"uploaded": 0, "skipped": len(files)}


# -- the warehouse connection killed mid-stage (PostgreSQL) -----------------------------------------

def test_postgres_backend_terminated_mid_stage_then_rerun(tmp_path, pg_url):
    config = make_config(tmp_path, pg_url)
    engine = connect(pg_url)
    big = csv_bytes(needs_rows(60_000, "b"))
    (tmp_path / "inbound/children_services" / NEEDS_FILE).write_bytes(big)
    land_source(engine, config, "children_services", R)
    validate_source(engine, config, "children_services", R)
    database = make_url(pg_url).database
    admin = create_engine(make_url(pg_url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    killed: list[int] = []

    def killer() -> None:
        deadline = time.monotonic() + 120
        with admin.connect() as conn:
            while time.monotonic() < deadline and not killed:
                pids = conn.execute(text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = :db AND pid <> pg_backend_pid() "
                    "AND state = 'active' AND query ILIKE 'INSERT INTO stg_needs%'"), {"db": database}).scalars().all()
                for pid in pids:
                    conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
                    killed.append(pid)
                time.sleep(0.01)

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        with pytest.raises(Exception) as info:
            stage_source(engine, config, "children_services", R)
    finally:
        thread.join()
        admin.dispose()
    assert killed, "the stage finished before its backend could be terminated"
    assert "b1" not in str(info.value) and "P1" not in str(info.value)  # hide_parameters: no row values
    engine.dispose()
    assert [r["status"] for r in landings(engine)] == ["validated"]
    assert staged_count(engine, "needs") == 0  # the stage's transaction rolled back as a whole
    stage_source(engine, config, "children_services", R)
    assert staged_count(engine, "needs") == 60_000
    assert_counts_add_up(engine)


# -- the disk full while landing --------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """work_dir/landing on a 2 MiB tmpfs (needs root and mount permission)."""
    landing = tmp_path / "work" / "landing"
    landing.mkdir(parents=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(landing)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield landing
    subprocess.run(["umount", "-l", str(landing)], check=False)


def test_disk_full_while_landing_then_space_freed(tmp_path, sqlite_url, small_disk):
    config = make_config(tmp_path, sqlite_url)
    engine = connect(sqlite_url)
    inbound = tmp_path / "inbound" / "children_services"
    (inbound / NEEDS_FILE).write_bytes(GOOD_40)
    (inbound / "needs_20250228.csv").write_bytes(csv_bytes(needs_rows(60_000, "d")))  # ~2.4 MB: does not fit
    with pytest.raises(OSError) as info:
        land_source(engine, config, "children_services", R)
    assert "No space left" in str(info.value)
    assert [(r["file_name"], r["status"]) for r in landings(engine)] == [(NEEDS_FILE, "landed")]
    assert half_written(tmp_path / "work") == []
    assert sorted(p.name for p in small_disk.rglob("*") if p.is_file()) == ["1.raw.bin"]
    subprocess.run(["mount", "-o", "remount,size=50m", str(small_disk)], check=True)
    process(engine, config, sources=["children_services"])
    assert [r["status"] for r in landings(engine)] == ["staged", "staged"]
    assert staged_count(engine, "needs") == 60_040
    assert_counts_add_up(engine)


# -- the run process killed, then re-run --------------------------------------------------------------

STAGES = ("extract", "validate", "stage", "link", "consent", "criteria", "package", "deliver", "report")
# Each stage boundary (the stage's task has started, nothing done yet: the stage before it is finished
# and recorded) and each stage's middle, in the order the night reaches them. tests/pause_harness.py
# stops the run there and says so; the test then kills it.
KILL_POINTS = tuple(f"{when}:{stage}" for stage in STAGES for when in ("before", "inside"))
HARNESS = Path(__file__).with_name("pause_harness.py")


def _start_paused(config: Path, env: dict[str, str], point: str, marker: Path) -> subprocess.Popen:
    out = open(config.parent / f"run-{R}.log", "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen([sys.executable, str(HARNESS), "run", "--config", str(config), "--date", R.isoformat()],
                            env={**env, "TFP_PAUSE": point, "TFP_PAUSE_MARKER": str(marker)}, stdout=out,
                            stderr=subprocess.STDOUT, cwd=config.parent, start_new_session=True)


def _kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.mark.slow
def test_run_killed_at_every_stage_boundary_and_mid_stage_then_rerun_equals_an_undisturbed_run(
        tmp_path_factory):
    """Beside one undisturbed run, a run is killed (SIGKILL, its whole process group) at each point of
    KILL_POINTS in turn, each time re-run from the start, and then run to the end. After every kill,
    whatever sits under a final name at the destination is complete; at the end the delivery equals
    the undisturbed one byte for byte, and nothing is half-written or orphaned in the landing zone,
    the destination or the warehouse."""
    borough = make_borough(tmp_path_factory.mktemp("borough"))
    keys = make_keys()
    calm_root, hit_root = tmp_path_factory.mktemp("calm"), tmp_path_factory.mktemp("killed")
    calm_config, hit_config = night_root(calm_root, borough), night_root(hit_root, borough)
    calm = start_run(calm_config, run_env(calm_root, keys))
    hit_env = run_env(hit_root, keys)
    log, marker = hit_root / f"run-{R}.log", hit_root / "paused"
    seen_at_destination: list[dict[str, bytes]] = []
    try:
        for point in KILL_POINTS:
            marker.unlink(missing_ok=True)
            proc = _start_paused(hit_config, hit_env, point, marker)
            stopped = wait_for(marker.exists, 600, proc)
            assert stopped and proc.poll() is None, f"never stopped at {point}:\n{log.read_text()[-3000:]}"
            _kill(proc)
            seen_at_destination.append(files_bytes(hit_root / "delivered") if (hit_root / "delivered").exists()
                                       else {})
        last = tfp_run(hit_config, hit_env)
        assert last.returncode == 0, last.stdout[-3000:] + last.stderr[-3000:]
        assert calm.wait(timeout=900) == 0, (calm_root / f"run-{R}.log").read_text()[-3000:]
    finally:
        if calm.poll() is None:
            os.killpg(calm.pid, signal.SIGKILL)
    expected = files_bytes(calm_root / "delivered")
    assert len(expected) == 6  # four CSVs, the manifest, its signature
    for point, seen in zip(KILL_POINTS, seen_at_destination, strict=True):
        complete = {name: body for name, body in seen.items() if ".part-" not in name}
        assert all(expected[name] == body for name, body in complete.items()), f"killed at {point}"
    assert len(seen_at_destination[KILL_POINTS.index("inside:deliver")]) >= 1  # killed mid-delivery
    assert seen_at_destination[KILL_POINTS.index("before:report")] == expected
    assert files_bytes(hit_root / "delivered") == expected
    assert half_written(hit_root / "work", hit_root / "delivered") == []
    engine = connect(f"sqlite:///{hit_root / 'work' / 'warehouse.db'}")
    calm_engine = connect(f"sqlite:///{calm_root / 'work' / 'warehouse.db'}")
    strip = [{k: v for k, v in r.items() if k not in ("id", "duplicate_of")} for r in landings(engine)]
    assert sorted(strip, key=str) == sorted(
        ({k: v for k, v in r.items() if k not in ("id", "duplicate_of")} for r in landings(calm_engine)), key=str)
    assert_counts_add_up(engine)
    copies = {p.name for p in (hit_root / "work" / "landing").rglob("*") if p.is_file()}
    assert copies == {f"{r['id']}.{kind}.bin" for r in landings(engine) for kind in ("raw", "validated")}
    shutil.rmtree(calm_root / "airflow", ignore_errors=True)

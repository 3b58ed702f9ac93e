"""Delivery to a folder and over SFTP (a real server on loopback): atomic, logged, idempotent."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tfp.deliver import deliver
from tfp.package import PackagedFile
from tfp.sftp import SftpEndpoint, SftpError
from tfp.warehouse import connect, delivery_log
from tfp_dev.sftpserver import SftpServer

R = date(2025, 3, 31)
NAMES = ["tfp_submission_E09000031_20250331.csv", "tfp_summary_E09000031_20250331.csv",
         "tfp_withdrawals_E09000031_20250331.csv", "tfp_manifest_E09000031_20250331.json",
         "tfp_manifest_E09000031_20250331.json.sig"]


def _write(outbox: Path, name: str, content: bytes, plaintext: bytes | None = None,
           rows: int | None = None) -> PackagedFile:
    """A packaged file; ``plaintext`` differs from ``content`` when it stands for an encrypted file."""
    path = outbox / name
    path.write_bytes(content)
    return PackagedFile(name=name, path=path,
                        plaintext_sha256=hashlib.sha256(plaintext if plaintext is not None else content).hexdigest(),
                        rows=rows)


def _outbox(tmp_path: Path, version: str = "v1") -> list[PackagedFile]:
    outbox = tmp_path / "outbox"
    outbox.mkdir(exist_ok=True)
    files = [_write(outbox, n, f"header\n{n},{version}\n".encode(), rows=1) for n in NAMES[:3]]
    files.append(_write(outbox, NAMES[3], json.dumps({"files": [f.name for f in files]}).encode()))
    files.append(_write(outbox, NAMES[4], b"c2lnbmF0dXJl\n"))
    return files


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def _log(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(select(delivery_log).order_by(delivery_log.c.id)).all()


def _run(files, engine, dest, **kw) -> dict[str, int]:
    return deliver(files, engine=engine, reference_date=R, path=str(dest), **kw)


def test_deliver_to_directory_is_idempotent(warehouse_url, tmp_path):
    engine = connect(warehouse_url)
    dest = tmp_path / "ons"
    files = _outbox(tmp_path)
    assert _run(files, engine, dest, transport="directory", conn_id=None) == {"uploaded": 5, "skipped": 0}
    assert sorted(os.listdir(dest)) == sorted(NAMES)  # no temporary files left
    for f in files:
        assert (dest / f.name).read_bytes() == f.path.read_bytes()
    rows = _log(engine)
    assert [r.file_name for r in rows] == NAMES  # manifest and signature last, as given
    first = rows[0]
    data = files[0].path.read_bytes()
    assert (first.reference_date, first.destination, first.sha256, first.plaintext_sha256, first.bytes, first.rows) == (
        R, str(dest.resolve()), hashlib.sha256(data).hexdigest(), files[0].plaintext_sha256, len(data), 1)
    assert first.delivered_at is not None

    before = _mtimes(dest)
    assert _run(files, engine, dest, transport="directory", conn_id=None) == {"uploaded": 0, "skipped": 5}
    assert _mtimes(dest) == before
    assert len(_log(engine)) == 5


def test_changed_file_replaces_the_old_one_and_is_logged(sqlite_url, tmp_path):
    engine = connect(sqlite_url)
    dest = tmp_path / "ons"
    files = _outbox(tmp_path)
    _run(files, engine, dest, transport="directory", conn_id=None)
    before = _mtimes(dest)
    files[1] = _write(files[1].path.parent, NAMES[1], b"header\nchanged\n", rows=1)
    assert _run(files, engine, dest, transport="directory", conn_id=None) == {"uploaded": 1, "skipped": 4}
    assert (dest / NAMES[1]).read_bytes() == b"header\nchanged\n"
    after = _mtimes(dest)
    assert {n for n in NAMES if after[n] != before[n]} == {NAMES[1]}
    rows = _log(engine)
    assert len(rows) == 6
    assert (rows[-1].file_name, rows[-1].plaintext_sha256) == (NAMES[1], files[1].plaintext_sha256)


def test_same_plaintext_new_ciphertext_is_uploaded(sqlite_url, tmp_path):
    """An unchanged output keeps its ciphertext (package reuses it), so a re-run sends nothing. A fresh
    ciphertext of the same plaintext (package's state lost or untrusted) is sent: the signed manifest sent
    with it lists the new ciphertext, and the old one would fail the recipient's check."""
    engine = connect(sqlite_url)
    dest = tmp_path / "ons"
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    name = "tfp_submission_E09000031_20250331.csv.age"
    first = _write(outbox, name, b"ciphertext-1", plaintext=b"header\nrow\n", rows=1)
    assert _run([first], engine, dest, transport="directory", conn_id=None)["uploaded"] == 1
    assert _run([first], engine, dest, transport="directory", conn_id=None) == {"uploaded": 0, "skipped": 1}
    again = _write(outbox, name, b"ciphertext-2", plaintext=b"header\nrow\n", rows=1)
    assert _run([again], engine, dest, transport="directory", conn_id=None) == {"uploaded": 1, "skipped": 0}
    assert (dest / name).read_bytes() == b"ciphertext-2"


def test_a_same_size_file_that_is_not_what_the_log_says_is_sent_again(sqlite_url, tmp_path):
    engine = connect(sqlite_url)
    dest = tmp_path / "ons"
    files = _outbox(tmp_path)
    _run(files, engine, dest, transport="directory", conn_id=None)
    good = (dest / NAMES[0]).read_bytes()
    (dest / NAMES[0]).write_bytes(bytes(len(good)))  # same size, other bytes
    assert _run(files, engine, dest, transport="directory", conn_id=None) == {"uploaded": 1, "skipped": 4}
    assert (dest / NAMES[0]).read_bytes() == good


def test_a_folder_deliver_creates_is_private_and_files_are_0600(sqlite_url, tmp_path):
    old = os.umask(0o022)
    try:
        _run(_outbox(tmp_path), connect(sqlite_url), tmp_path / "new" / "ons", transport="directory", conn_id=None)
    finally:
        os.umask(old)
    dest = tmp_path / "new" / "ons"
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in dest.iterdir()} == {n: "0o600" for n in NAMES}
    assert oct(dest.stat().st_mode & 0o777) == "0o700" and oct((tmp_path / "new").stat().st_mode & 0o777) == "0o700"


def test_file_missing_at_destination_is_sent_again(sqlite_url, tmp_path):
    engine = connect(sqlite_url)
    dest = tmp_path / "ons"
    files = _outbox(tmp_path)
    _run(files, engine, dest, transport="directory", conn_id=None)
    (dest / NAMES[2]).unlink()
    assert _run(files, engine, dest, transport="directory", conn_id=None) == {"uploaded": 1, "skipped": 4}
    assert (dest / NAMES[2]).exists()


def test_another_reference_date_is_delivered_separately(sqlite_url, tmp_path):
    engine = connect(sqlite_url)
    dest = tmp_path / "ons"
    files = _outbox(tmp_path)
    _run(files, engine, dest, transport="directory", conn_id=None)
    result = deliver(files, engine=engine, reference_date=date(2025, 4, 1), path=str(dest),
                     transport="directory", conn_id=None)
    assert result == {"uploaded": 5, "skipped": 0}


@pytest.fixture
def sftp_server(tmp_path):
    with SftpServer(tmp_path / "sftp_root") as server:
        (server.root / "inbound" / "E09000031").mkdir(parents=True)
        yield server


def test_deliver_over_sftp_is_idempotent_and_replaces_changes(sqlite_url, tmp_path, sftp_server):
    engine = connect(sqlite_url)
    ep = SftpEndpoint(host=sftp_server.host, port=sftp_server.port, username=sftp_server.username,
                      password=sftp_server.password, private_key=None, host_key=sftp_server.host_key)
    remote = sftp_server.root / "inbound" / "E09000031"
    files = _outbox(tmp_path)
    kw = {"transport": "sftp", "conn_id": None, "endpoint": ep}
    assert _run(files, engine, "/inbound/E09000031", **kw) == {"uploaded": 5, "skipped": 0}
    assert sorted(os.listdir(remote)) == sorted(NAMES)
    for f in files:
        assert (remote / f.name).read_bytes() == f.path.read_bytes()
    assert {r.destination for r in _log(engine)} == {f"sftp://127.0.0.1:{ep.port}/inbound/E09000031"}

    before = _mtimes(remote)
    assert _run(files, engine, "/inbound/E09000031", **kw) == {"uploaded": 0, "skipped": 5}
    assert _mtimes(remote) == before

    files[0] = _write(files[0].path.parent, NAMES[0], b"header\nnew row\n", rows=1)
    assert _run(files, engine, "/inbound/E09000031", **kw) == {"uploaded": 1, "skipped": 4}
    assert (remote / NAMES[0]).read_bytes() == b"header\nnew row\n"
    assert len(_log(engine)) == 6


def test_deliver_over_sftp_by_connection_id(sqlite_url, tmp_path, sftp_server, monkeypatch):
    conn = {"conn_type": "sftp", "host": sftp_server.host, "port": sftp_server.port, "login": sftp_server.username,
            "password": sftp_server.password,
            "extra": {"host_key": sftp_server.host_key, "no_host_key_check": False}}
    monkeypatch.setenv("AIRFLOW_CONN_SFTP_ONS_TEST", json.dumps(conn))
    engine = connect(sqlite_url)
    files = _outbox(tmp_path)
    result = _run(files, engine, "/inbound/E09000031", transport="sftp", conn_id="sftp_ons_test")
    assert result == {"uploaded": 5, "skipped": 0}
    with engine.connect() as c:
        assert c.execute(select(func.count()).select_from(delivery_log)).scalar_one() == 5


def test_interrupted_sftp_delivery_is_completed_by_a_rerun(sqlite_url, tmp_path, sftp_server):
    engine = connect(sqlite_url)
    ep = SftpEndpoint(host=sftp_server.host, port=sftp_server.port, username=sftp_server.username,
                      password=sftp_server.password, private_key=None, host_key=sftp_server.host_key)
    remote = sftp_server.root / "inbound" / "E09000031"
    files = _outbox(tmp_path)
    files[0] = _write(files[0].path.parent, NAMES[0], os.urandom(600_000), rows=1000)
    sftp_server.faults.fail_after_bytes = 300_000
    with pytest.raises(SftpError, match="connection lost"):
        _run(files, engine, "/inbound/E09000031", transport="sftp", conn_id=None, endpoint=ep)
    assert not (remote / NAMES[0]).exists()
    assert not (remote / NAMES[3]).exists()  # the manifest never precedes its files
    assert _log(engine) == []
    assert _run(files, engine, "/inbound/E09000031", transport="sftp", conn_id=None, endpoint=ep) == {
        "uploaded": 5, "skipped": 0}
    assert sorted(os.listdir(remote)) == sorted(NAMES)


def test_temporary_files_of_a_killed_delivery_are_swept(sqlite_url, tmp_path):
    """A delivery killed before its rename leaves `.<name>.part-*` at the destination; the next delivery
    of that date removes them even when every file is already there, and leaves other dates' alone."""
    engine = connect(sqlite_url)
    dest = tmp_path / "ons"
    files = _outbox(tmp_path)
    _run(files, engine, dest, transport="directory", conn_id=None)
    stale = [f".{NAMES[0]}.part-abc123", f".{NAMES[3]}.part-def456"]
    other = ".tfp_submission_E09000031_20250330.csv.part-0a0b0c"
    for name in [*stale, other]:
        (dest / name).write_bytes(b"half a fi")
    assert _run(files, engine, dest, transport="directory", conn_id=None) == {"uploaded": 0, "skipped": 5}
    assert sorted(os.listdir(dest)) == sorted([*NAMES, other])

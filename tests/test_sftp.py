"""The SFTP client against a real asyncssh server on loopback: pinning, atomic uploads, faults."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import asyncssh
import pytest

from tfp.sftp import (
    HostKeyRefused,
    SftpClient,
    SftpEndpoint,
    SftpError,
    endpoint_from_connection,
    endpoint_of,
)
from tfp_dev.sftpserver import SftpServer


@pytest.fixture
def server(tmp_path):
    with SftpServer(tmp_path / "root") as s:
        (s.root / "inbound").mkdir()
        yield s


@pytest.fixture
def endpoint(server) -> SftpEndpoint:
    return SftpEndpoint(host=server.host, port=server.port, username=server.username,
                        password=server.password, private_key=None, host_key=server.host_key)


def _other_key(algorithm: str = "ssh-ed25519") -> str:
    key = asyncssh.generate_private_key(algorithm)
    return " ".join(key.export_public_key("openssh").decode().split()[:2])


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".part-" in p.name)


def test_list_read_and_upload(server, endpoint):
    inbound = server.root / "inbound"
    (inbound / "police_20250101.csv").write_bytes(b"a,b\n1,2\n")
    (inbound / "housing_20250101.csv").write_bytes(b"x\n")
    (inbound / "archive").mkdir()  # folders are not files
    with SftpClient(endpoint, timeout=5) as client:
        assert client.list_files("/inbound") == [("housing_20250101.csv", 2), ("police_20250101.csv", 8)]
        assert client.read_bytes("/inbound/police_20250101.csv") == b"a,b\n1,2\n"
        data = bytes(range(256)) * 1000
        client.upload_atomic(data, "/inbound", "out.bin")
        client.remove("/inbound/housing_20250101.csv")
    assert (inbound / "out.bin").read_bytes() == data
    assert not (inbound / "housing_20250101.csv").exists()
    assert _leftovers(inbound) == []


def test_chroot_keeps_client_inside_root(server, endpoint, tmp_path):
    (tmp_path / "secret.txt").write_text("outside")
    with SftpClient(endpoint, timeout=5) as client:
        assert "secret.txt" not in [n for n, _ in client.list_files("/..")]
        with pytest.raises(OSError):
            client.read_bytes("/../secret.txt")


def test_changed_host_key_is_refused_naming_the_host(endpoint):
    pinned = _other_key()
    with pytest.raises(HostKeyRefused) as e:
        SftpClient(replace(endpoint, host_key=pinned), timeout=5).open()
    assert f"{endpoint.host}:{endpoint.port}" in str(e.value)
    assert pinned.split()[1] not in str(e.value)


def test_pinned_key_of_another_type_is_refused(endpoint):
    # Only an ECDSA key is pinned; the server offers Ed25519 only.
    with pytest.raises(HostKeyRefused, match="does not match the pinned key"):
        SftpClient(replace(endpoint, host_key=_other_key("ecdsa-sha2-nistp256")), timeout=5).open()


def test_wrong_password_is_refused(endpoint):
    with pytest.raises(SftpError, match="authentication"):
        SftpClient(replace(endpoint, password="wrong"), timeout=5).open()


def test_interrupted_upload_leaves_no_file_and_retry_succeeds(server, endpoint):
    inbound = server.root / "inbound"
    data = b"0123456789abcdef" * 64 * 1024  # 1 MiB
    server.faults.fail_after_bytes = 200_000
    with pytest.raises(SftpError, match="connection lost"), SftpClient(endpoint, timeout=5) as client:
        client.upload_atomic(data, "/inbound", "tfp_submission.csv")
    assert not (inbound / "tfp_submission.csv").exists()
    assert server.faults.bytes_seen > 200_000
    with SftpClient(endpoint, timeout=5) as client:
        client.upload_atomic(data, "/inbound", "tfp_submission.csv")
    assert (inbound / "tfp_submission.csv").read_bytes() == data
    assert _leftovers(inbound) == []  # the retry removed the interrupted temporary file


def test_interrupted_read_raises(server, endpoint):
    (server.root / "inbound" / "big.csv").write_bytes(b"x" * 500_000)
    server.faults.fail_after_bytes = 100_000
    with pytest.raises(SftpError, match="connection lost"), SftpClient(endpoint, timeout=5) as client:
        client.read_bytes("/inbound/big.csv")


def test_upload_replaces_existing_file(server, endpoint):
    target = server.root / "inbound" / "tfp_summary.csv"
    target.write_bytes(b"old contents that are longer than the new\n")
    with SftpClient(endpoint, timeout=5) as client:
        client.upload_atomic(b"new\n", "/inbound", "tfp_summary.csv")
    assert target.read_bytes() == b"new\n"


def test_without_posix_rename_remove_then_rename(server, endpoint):
    target = server.root / "inbound" / "tfp_summary.csv"
    target.write_bytes(b"old\n")
    server.faults.no_posix_rename = True
    with SftpClient(endpoint, timeout=5) as client:
        client.upload_atomic(b"new\n", "/inbound", "tfp_summary.csv")
    assert target.read_bytes() == b"new\n"
    assert _leftovers(server.root / "inbound") == []


def test_refused_rename_keeps_final_name_untouched(server, endpoint):
    inbound = server.root / "inbound"
    (inbound / "tfp_summary.csv").write_bytes(b"old\n")
    server.faults.refuse_rename = True
    with SftpClient(endpoint, timeout=5) as client, pytest.raises(SftpError, match="rename refused"):
        client.upload_atomic(b"new\n", "/inbound", "tfp_summary.csv")
    assert (inbound / "tfp_summary.csv").read_bytes() == b"old\n"
    assert _leftovers(inbound) == []


def test_hanging_server_times_out(server, endpoint):
    server.faults.hang_seconds = 5
    started = time.monotonic()
    with pytest.raises(SftpError, match="timed out"), SftpClient(endpoint, timeout=0.5) as client:
        client.upload_atomic(b"data", "/inbound", "x.csv")
    assert time.monotonic() - started < 3


def test_host_key_file_is_created_then_reused(tmp_path):
    key_path = tmp_path / "keys" / "host_ed25519"
    with SftpServer(tmp_path / "a", host_key_path=key_path) as first:
        pinned = first.host_key
    assert key_path.stat().st_mode & 0o777 == 0o600
    with SftpServer(tmp_path / "b", host_key_path=key_path, password="pw") as second:
        assert second.host_key == pinned
        assert second.password == "pw"


CONN = {"conn_type": "sftp", "host": "sftp.example.org", "port": 2222, "login": "tfp", "password": "s3cret-pass",
        "extra": {"no_host_key_check": False}}


def test_endpoint_from_connection_env_json(monkeypatch):
    key = _other_key()
    monkeypatch.setenv("AIRFLOW_CONN_SFTP_ONS", json.dumps({**CONN, "extra": {**CONN["extra"], "host_key": key}}))
    for ep in (endpoint_from_connection("sftp_ons"),):
        assert ep == SftpEndpoint(host="sftp.example.org", port=2222, username="tfp", password="s3cret-pass",
                                  private_key=None, host_key=key)
        assert ep.known_hosts_name == "[sftp.example.org]:2222"
        assert "s3cret" not in repr(ep)


def test_connection_without_host_key_is_refused(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_SFTP_ONS", json.dumps(CONN))
    with pytest.raises(SftpError, match="sftp_ons: no host_key"):
        endpoint_from_connection("sftp_ons")


def test_connection_with_host_key_check_off_is_refused(monkeypatch):
    extra = {"host_key": _other_key(), "no_host_key_check": True}
    monkeypatch.setenv("AIRFLOW_CONN_SFTP_ONS", json.dumps({**CONN, "extra": extra}))
    with pytest.raises(SftpError, match="no_host_key_check"):
        endpoint_from_connection("sftp_ons")


def test_undefined_connection_is_refused(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_SFTP_NOWHERE", raising=False)
    with pytest.raises(SftpError, match="connection sftp_nowhere is not defined"):
        endpoint_from_connection("sftp_nowhere")


def test_a_connection_in_uri_form_is_read_by_airflow(monkeypatch):
    """The adapter hands tfp what Airflow parsed (no hand parsing of AIRFLOW_CONN_*): the URI form too."""
    from urllib.parse import quote

    key = _other_key()
    monkeypatch.setenv("AIRFLOW_CONN_SFTP_ONS", f"sftp://tfp:s3cret-pass@sftp.example.org:2222/?host_key={quote(key)}")
    assert endpoint_from_connection("sftp_ons") == SftpEndpoint(
        host="sftp.example.org", port=2222, username="tfp", password="s3cret-pass", private_key=None, host_key=key)


def test_tfp_takes_a_connections_plain_fields_and_without_a_lookup_knows_no_connection(monkeypatch):
    """tfp itself reads no Airflow Connection: the fields are handed in (tfp.lookups), else it is not defined."""
    from tfp import lookups
    from tfp.lookups import ConnectionFields

    key = _other_key()
    fields = ConnectionFields(host="sftp.example.org", port=None, login="tfp", password=None,
                              extra={"host_key": key})
    assert "s3cret" not in repr(ConnectionFields("h", 22, "tfp", "s3cret-pass"))
    assert endpoint_of("sftp_ons", fields) == SftpEndpoint(host="sftp.example.org", port=22, username="tfp",
                                                          password=None, private_key=None, host_key=key)
    monkeypatch.setenv("AIRFLOW_CONN_SFTP_ONS", json.dumps({**CONN, "extra": {"host_key": key}}))
    previous = lookups.install(lookups.Lookups())
    try:
        with pytest.raises(SftpError, match="connection sftp_ons is not defined"):
            endpoint_from_connection("sftp_ons")
        lookups.install(lookups.Lookups(connection=lambda conn_id: fields))
        assert endpoint_from_connection("sftp_ons").host == "sftp.example.org"
    finally:
        lookups.install(previous)


# -- partner drops over SFTP: pick-up-and-delete, size limit (review items 4 and 11) ----------------------

def _sftp_source_config(tmp_path, server, monkeypatch, **source):
    from helpers import make_config

    monkeypatch.setenv("AIRFLOW_CONN_SFTP_PARTNER", json.dumps({
        "conn_type": "sftp", "host": server.host, "port": server.port, "login": server.username,
        "password": server.password, "extra": {"host_key": server.host_key}}))
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    config = make_config(tmp_path, url, sources={"children_services": {
        "transport": "sftp", "conn_id": "sftp_partner", "path": "/inbound", **source}})
    from tfp.warehouse import connect

    return config, connect(url)


NEEDS = b"record_id,person_ref,need,start_date,end_date\nr1,P1,early_help,2024-12-01,\n"


@pytest.mark.parametrize("remove", [False, True])
def test_remove_after_pickup_deletes_the_remote_file_once_landed(server, tmp_path, monkeypatch, remove):
    from datetime import date

    from tfp.extract import land_source

    inbound = server.root / "inbound"
    (inbound / "needs_20250101.csv").write_bytes(NEEDS)
    (inbound / "needs_20250301.csv").write_bytes(NEEDS.replace(b"r1", b"r2"))  # after R: not landed, kept
    config, engine = _sftp_source_config(tmp_path, server, monkeypatch, **({"remove_after_pickup": True}
                                                                          if remove else {}))
    counts = land_source(engine, config, "children_services", date(2025, 1, 31))
    assert counts["landed"] == 1 and counts["removed_from_drop"] == int(remove)
    left = sorted(p.name for p in inbound.iterdir())
    assert left == (["needs_20250301.csv"] if remove else ["needs_20250101.csv", "needs_20250301.csv"])


def test_a_remote_file_over_max_file_bytes_is_rejected_unread(server, tmp_path, monkeypatch):
    from datetime import date

    from sqlalchemy import select

    from tfp.extract import land_source
    from tfp.warehouse import landing_log

    (server.root / "inbound" / "needs_20250101.csv").write_bytes(NEEDS * 10)
    config, engine = _sftp_source_config(tmp_path, server, monkeypatch, remove_after_pickup=True)
    config = config.model_copy(update={"quality": config.quality.model_copy(update={"max_file_bytes": 100})})
    import paramiko

    real, fetched = paramiko.SFTPClient.getfo, []
    monkeypatch.setattr(paramiko.SFTPClient, "getfo", lambda self, path, *a, **k: fetched.append(path) or real(
        self, path, *a, **k))
    counts = land_source(engine, config, "children_services", date(2025, 1, 31))
    assert counts["rejected"] == 1 and fetched == []  # refused on its size: not a byte transferred
    with engine.connect() as conn:
        (row,) = conn.execute(select(landing_log)).all()
    assert row.status == "rejected" and row.rejection.startswith(f"larger than max_file_bytes ({len(NEEDS) * 10} bytes")
    assert (server.root / "inbound" / "needs_20250101.csv").exists()  # not landed, so not removed

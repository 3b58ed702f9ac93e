"""Attacks and secrets: a changed recipient host key, tampered landing copies, missing or short keys,
quotes and semicolons through every stage, and a search for personal values after a run that failed
on bad input (a good run's search is in test_e2e_nightly.py; altered manifests and signatures are
caught by `tfp verify-delivery` in test_keys_verify.py)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from hardening_helpers import (
    TFP,
    R,
    assert_counts_add_up,
    files_bytes,
    landings,
    leak_pattern,
    leaks,
    make_borough,
    night_root,
    personal_values,
    process,
    run_env,
    staged_count,
    tfp_run,
)
from test_hardening_input import GOOD_40, NEEDS_FILE, csv_bytes, needs_rows

from conftest import make_keys
from helpers import make_config, write_config
from tfp.deliver import deliver
from tfp.extract import land_source
from tfp.feeds import SOURCES
from tfp.landing import LandingTampered
from tfp.notify import failure_summary
from tfp.package import PackagedFile
from tfp.sftp import HostKeyRefused, SftpEndpoint
from tfp.stage import stage_source
from tfp.validate import FilesRejected, validate_source
from tfp.warehouse import connect
from tfp_dev.sftpserver import SftpServer


def test_a_changed_recipient_host_key_stops_the_delivery(tmp_path, sqlite_url, monkeypatch):
    import asyncssh

    engine = connect(sqlite_url)
    (tmp_path / "out.csv").write_bytes(b"a\n1\n")
    files = [PackagedFile("tfp_summary_E09000031_20250331.csv", tmp_path / "out.csv", "0" * 64)]
    with SftpServer(tmp_path / "ons") as ons:
        (ons.root / "inbound").mkdir()
        pinned = " ".join(asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh").decode()
                          .split()[:2])  # what we pinned last year; the server now presents another key
        monkeypatch.setenv("AIRFLOW_CONN_SFTP_ONS", json.dumps({
            "conn_type": "sftp", "host": ons.host, "port": ons.port, "login": ons.username,
            "password": ons.password, "extra": {"host_key": pinned, "no_host_key_check": False}}))
        with pytest.raises(HostKeyRefused, match="does not match the pinned key") as info:
            deliver(files, transport="sftp", path="/inbound", conn_id="sftp_ons", engine=engine, reference_date=R)
        assert files_bytes(ons.root / "inbound") == {}
        assert ons.password not in str(info.value)
        subject, body = failure_summary("tfp_nightly", "deliver", R, info.value)
        assert "does not match the pinned key" in body
        # with the right key pinned it goes through
        right = SftpEndpoint(ons.host, ons.port, ons.username, ons.password, None, ons.host_key)
        deliver(files, transport="sftp", path="/inbound", conn_id=None, engine=engine, reference_date=R,
                endpoint=right)
        assert list(files_bytes(ons.root / "inbound")) == ["tfp_summary_E09000031_20250331.csv"]


@pytest.mark.parametrize("copy", ["raw", "validated"])
def test_a_tampered_landing_copy_stops_the_run(tmp_path, warehouse_url, copy):
    config = make_config(tmp_path, warehouse_url)
    engine = connect(warehouse_url)
    (tmp_path / "inbound/children_services" / NEEDS_FILE).write_bytes(GOOD_40)
    land_source(engine, config, "children_services", R)
    if copy == "validated":
        validate_source(engine, config, "children_services", R)
    (landing,) = landings(engine)
    path = config.work_dir / "landing" / "children_services" / f"{landing['id']}.{copy}.bin"
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))
    step = validate_source if copy == "raw" else stage_source
    with pytest.raises(LandingTampered) as info:
        step(engine, config, "children_services", R)
    assert str(info.value) == f"landing copy {landing['id']} ({copy}) failed authentication"
    assert staged_count(engine, "needs") == 0
    assert landings(engine)[0]["status"] == ("landed" if copy == "raw" else "validated")  # nothing moved on
    assert str(info.value) in failure_summary("tfp_nightly", "children_services.validate", R, info.value)[1]


@pytest.mark.parametrize(("change", "message"), [
    ({"TFP_PSEUDONYM_KEY": None}, "TFP_PSEUDONYM_KEY"),
    ({"TFP_LINKAGE_KEY": "ab" * 8}, "TFP_LINKAGE_KEY"),
    ({"TFP_SIGNING_KEY": "c2hvcnQ="}, "TFP_SIGNING_KEY"),
])
def test_missing_or_short_keys_stop_tfp_run_before_any_work(tmp_path, change, message):
    config = write_config(tmp_path, "sqlite:///work/warehouse.db")
    (tmp_path / "inbound/children_services" / NEEDS_FILE).write_bytes(GOOD_40)
    keys = make_keys()
    # a home of its own, not a copy of the migrated one: the test shows tfp run migrates nothing
    env = run_env(tmp_path, {k: v for k, v in {**keys, **change}.items() if v is not None},
                  AIRFLOW_HOME=str(tmp_path / "airflow"))
    for name, value in change.items():
        if value is None:
            env.pop(name, None)
    done = subprocess.run([TFP, "run", "--config", str(config), "--date", R.isoformat()], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("tfp: ") and message in done.stderr and "Traceback" not in done.stderr
    for value in keys.values():
        assert value not in done.stderr + done.stdout
    # no work was started: no work_dir, no migrated Airflow database (looking for an Airflow Variable of
    # the key's name may import Airflow, which writes a default airflow.cfg, nothing more)
    assert not (tmp_path / "work").exists() and not (tmp_path / "airflow" / ".tfp-migrated").exists()
    assert not (tmp_path / "airflow" / "airflow.db").exists()


def test_the_failure_alert_of_a_library_error_quotes_no_value():
    try:
        int("Zoë O'Brien SW1A 1AA")
    except ValueError as e:
        subject, body = failure_summary("tfp_nightly", "police.stage", R, e)
    assert "Zo" not in body and "SW1A" not in body and "ValueError (details in the task log)" in body


# -- quotes and semicolons through every stage (in-process, every task function of the DAG) ------------

QUOTE = "';--\""


def _hostile_copy(borough: Path, into: Path) -> None:
    """The borough with quotes, semicolons and SQL comment marks in every ref, record id and name."""
    for path in borough.rglob("*.csv"):
        with path.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
            columns = list(rows[0]) if rows else []
        for row in rows:
            for column in ("record_id", "person_ref", "family_ref", "tenancy_ref", "pnc_id"):
                if row.get(column):
                    row[column] += QUOTE
            for column in ("forename", "surname"):
                if row.get(column):
                    row[column] = "O'" + row[column] + "; DROP TABLE links"
        target = into / path.relative_to(borough)
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\r\n")
            writer.writeheader()
            writer.writerows(rows)


@pytest.mark.slow
def test_quotes_and_semicolons_go_through_every_stage(tmp_path_factory, warehouse_url, keys_env):
    from tfp import pipeline

    root = tmp_path_factory.mktemp("hostile")
    borough = make_borough(tmp_path_factory.mktemp("borough"))
    _hostile_copy(borough, root / "inbound")
    config_path = write_config(root, warehouse_url)
    engine = connect(warehouse_url)
    pipeline.check_setup(str(config_path), R)
    for source in SOURCES:
        pipeline.extract(str(config_path), R, source)
        pipeline.validate(str(config_path), R, source)
        pipeline.stage(str(config_path), R, source)
    linked = pipeline.link(str(config_path), R)
    consented = pipeline.consent(str(config_path), R)
    assessed = pipeline.criteria(str(config_path), R)
    packaged = pipeline.package(str(config_path), R)
    delivered = pipeline.deliver(str(config_path), R)
    assert linked["records_linked"] > 0 and consented and assessed["kept"]
    assert packaged["persons_submitted"] > 0 and delivered["uploaded"] == 6  # four CSVs, manifest, signature
    assert_counts_add_up(engine)
    from sqlalchemy import select

    from tfp.warehouse import links

    with engine.connect() as conn:
        refs = conn.execute(select(links.c.record_id, links.c.person_ref)).all()
    assert refs and all(r.record_id.endswith(QUOTE) for r in refs)
    assert all(r.person_ref.endswith(QUOTE) for r in refs if r.person_ref)


# -- nothing personal after runs that failed on bad input ----------------------------------------------

@pytest.mark.slow
def test_nothing_personal_after_a_run_that_failed_on_bad_input(tmp_path_factory):
    """A borough with a Latin-1 police file (rejected) and rows that break rules (quarantined): the run
    fails naming the file; its logs, XCom, rendered templates, reports, output and alert hold no
    personal value of the input."""
    borough = make_borough(tmp_path_factory.mktemp("borough"))
    root = tmp_path_factory.mktemp("failed")
    config = night_root(root, borough)
    police = next((root / "inbound" / "police").glob("incidents_*.csv"))
    text = police.read_text(encoding="utf-8")
    police.write_bytes(text.encode("utf-8")  # and one row in Latin-1
                       + b"P9,Zo\xeb,Kowalczykowa,1980-01-01,F,SW1A 1AA,,2024-01-01,offence,offender,Y\r\n")
    needs = next((root / "inbound" / "children_services").glob("needs_*.csv"))
    lines = needs.read_text(encoding="utf-8").splitlines()
    needs.write_text("\n".join([*lines, lines[1].replace(",20", ",3020", 1)]) + "\n", encoding="utf-8")
    done = tfp_run(config, run_env(root))
    assert done.returncode == 1
    assert "FAILED" in done.stdout
    output = done.stdout + done.stderr
    assert f"file {police.name} rejected: not readable as UTF-8" in output
    values = personal_values(borough) | {"Kowalczykowa", "SW1A 1AA"}
    found = leaks(leak_pattern(values), [root / "airflow", root / "work" / "reports"], [output])
    assert found == []
    assert files_bytes(root / "delivered") == {}  # nothing is delivered from a failed run
    shutil.rmtree(root / "airflow", ignore_errors=True)


def test_counts_and_quarantine_on_a_hostile_file(tmp_path, sqlite_url):
    """SQL, formulas, shell and traversal in every field of a file: stored as text, never run."""
    config = make_config(tmp_path, sqlite_url)
    engine = connect(sqlite_url)
    rows = needs_rows(40)
    rows[1]["person_ref"] = "'; DROP TABLE landing_log; --"
    rows[2]["person_ref"] = "=HYPERLINK(\"http://x.example\",\"x\")"
    rows[3]["need"] = "'); DELETE FROM stg_needs; --"
    (tmp_path / "inbound/children_services" / NEEDS_FILE).write_bytes(csv_bytes(rows))
    process(engine, config, sources=["children_services"])
    assert staged_count(engine, "needs") == 39 and len(landings(engine)) == 1
    assert_counts_add_up(engine)
    with pytest.raises(FilesRejected):  # and a later broken file still fails cleanly
        (tmp_path / "inbound/children_services/needs_20250201.csv").write_bytes(b"\xff\xfe" + GOOD_40)
        process(engine, config, sources=["children_services"])

"""Lineage: each stage names the files and tables it read and wrote (tfp.lineage), and a real night with
Airflow's OpenLineage provider and its file transport traces the delivered submission back to that
night's partner files through the staged tables, with no personal value in any event."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from conftest import airflow_home, make_keys
from helpers import (
    leak_pattern,
    lineage_downstream,
    lineage_edges,
    make_config,
    personal_values,
    read_lineage_events,
    write_config,
)
from tfp import extract, stage, validate
from tfp.context import RunContext, StageResult
from tfp.feeds import parse_file_name
from tfp.landing import VALIDATED
from tfp.lineage import DatasetName, Lineage, local_file, sftp_file, table
from tfp.warehouse import connect
from tfp_dev.generate import generate

R = date(2025, 3, 31)
LA = "E09000031"
TFP = str(Path(sys.executable).with_name("tfp"))


# -- names -----------------------------------------------------------------------------------------

def test_a_lineage_is_sorted_without_repeats_and_empty_is_false():
    a, b = DatasetName("file", "/a"), DatasetName("file", "/b")
    lineage = Lineage.of(inputs=[b, a, b], outputs=[a])
    assert lineage.inputs == (a, b) and lineage.outputs == (a,)
    assert lineage and not Lineage.of()


def test_table_names_carry_no_credentials():
    pg = create_engine("postgresql+psycopg://tfp_app:s3cret-pw@db.example.org:5433/tfp_wh")
    name = table(pg, "links")
    assert name == DatasetName("postgres://db.example.org:5433", "tfp_wh.public.links")
    assert "s3cret" not in repr(name) and "tfp_app" not in repr(name)
    lite = create_engine("sqlite:////srv/tfp/warehouse.db")
    assert table(lite, "stg_families") == DatasetName("sqlite:///srv/tfp/warehouse.db", "stg_families")


def test_file_names_are_absolute_paths_and_sftp_names_the_server_not_the_login(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert local_file("work/x.csv") == DatasetName("file", str(tmp_path / "work" / "x.csv"))
    assert sftp_file("sftp.example.org", 22, "inbound/E09000031", "a.csv") == \
        DatasetName("sftp://sftp.example.org:22", "/inbound/E09000031/a.csv")


def test_sftp_files_are_named_by_the_connections_server_never_its_login(tmp_path):
    """A partner's SFTP drop and an SFTP delivery: the Connection's host and port name the server."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from tfp import lookups
    from tfp.lineage import delivered, drop

    host_key = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
    conn = lookups.ConnectionFields(host="sftp.partner.example", port=2222, login="la-login", password="pw-s3cret",
                                    extra={"host_key": host_key})
    previous = lookups.install(lookups.Lookups(connection=lambda conn_id: conn if conn_id == "sftp_x" else None))
    try:
        config = make_config(tmp_path, "sqlite:///w.db", sources={"police": {"transport": "sftp", "conn_id": "sftp_x",
                                                                             "path": "/out/police"}},
                             delivery={"transport": "sftp", "conn_id": "sftp_x", "path": "inbound/E09000031",
                                       "encryption": "age", "recipient": "age1" + "q" * 58})
        assert drop(config, "police", "incidents_20250331.csv") == \
            DatasetName("sftp://sftp.partner.example:2222", "/out/police/incidents_20250331.csv")
        sent = delivered(config, [tmp_path / "outbox" / "a.csv.age"], ["a.csv.age"])
    finally:
        lookups.install(previous)
    assert sent.outputs == (DatasetName("sftp://sftp.partner.example:2222", "/inbound/E09000031/a.csv.age"),)
    assert "la-login" not in repr(sent) and "pw-s3cret" not in repr(sent)


# -- the per-source stages -------------------------------------------------------------------------

def test_extract_validate_and_stage_name_the_partner_file_its_copies_and_its_staging_table(tmp_path, warehouse_url):
    generate(tmp_path / "inbound", families=12, seed=5, on=R)
    drop = sorted((tmp_path / "inbound" / "police").glob("*.csv"))
    assert drop
    config = make_config(tmp_path, warehouse_url)
    engine = connect(warehouse_url)

    def ctx() -> RunContext:
        return RunContext(config=config, reference_date=R, warehouse=engine, source="police")

    landed = extract.run(ctx())
    store = ctx().landing
    ids = sorted(int(Path(d.name).name.split(".")[0]) for d in landed.lineage.outputs)
    assert landed.lineage == Lineage.of(inputs=[local_file(p) for p in drop],
                                        outputs=[local_file(store.path("police", i)) for i in ids])
    checked = validate.run(ctx())
    assert checked.lineage.inputs == landed.lineage.outputs
    assert set(checked.lineage.outputs) >= {local_file(store.path("police", i, VALIDATED)) for i in ids}
    staged = stage.run(ctx())
    assert staged.lineage == Lineage.of(inputs=[local_file(store.path("police", i, VALIDATED)) for i in ids],
                                        outputs=[table(engine, "stg_incidents")])
    # a second night with nothing new lands, validates and stages nothing, and names nothing
    again = [step.run(RunContext(config=config, reference_date=date(2025, 4, 1), warehouse=engine, source="police"))
             for step in (extract, validate, stage)]
    assert [r.lineage for r in again] == [Lineage(), Lineage(), Lineage()]


def test_the_lineage_stays_out_of_the_xcom():
    result = StageResult(stage="stage", counts={"rows_staged": 3},
                         lineage=Lineage.of(outputs=[DatasetName("file", "/x")]))
    assert result.to_xcom() == {"rows_staged": 3}


# -- the Airflow side ------------------------------------------------------------------------------

def test_report_does_nothing_unless_the_provider_is_configured(monkeypatch):
    from tfp_airflow import lineage as airflow_lineage

    for name in [k for k in os.environ if k.startswith(("AIRFLOW__OPENLINEAGE__", "OPENLINEAGE_"))]:
        monkeypatch.delenv(name)
    assert not airflow_lineage.enabled()
    monkeypatch.setenv("AIRFLOW__OPENLINEAGE__TRANSPORT", '{"type": "console"}')
    assert airflow_lineage.enabled()
    # outside an Airflow task there is no task to give the datasets to: nothing happens, nothing fails
    airflow_lineage.report(StageResult(stage="stage", lineage=Lineage.of(outputs=[DatasetName("file", "/x")])))


def test_datasets_are_openlineage_datasets_named_as_the_lineage():
    from tfp_airflow.lineage import datasets

    inputs, outputs = datasets(Lineage.of(inputs=[DatasetName("file", "/in.csv")],
                                          outputs=[DatasetName("sqlite:///w.db", "stg_incidents")]))
    assert [(d.namespace, d.name) for d in inputs] == [("file", "/in.csv")]
    assert [(d.namespace, d.name) for d in outputs] == [("sqlite:///w.db", "stg_incidents")]


# -- a real night ----------------------------------------------------------------------------------

@pytest.mark.slow  # a whole night through `tfp run`
def test_a_night_traces_its_delivered_submission_back_to_its_partner_files(tmp_path):
    root = tmp_path / "borough"
    root.mkdir()
    config = write_config(root, "sqlite:///work/warehouse.db")
    generate(root / "inbound", families=60, seed=20261201, on=R)
    shutil.move(root / "inbound" / "truth", tmp_path / "truth")
    inputs = sorted((root / "inbound").glob("*/*.csv"))  # the night's partner files (the run removes them)
    values = personal_values(root / "inbound", R)
    leaks = leak_pattern(values)
    roster = root / "inbound" / "children_services" / f"families_{R:%Y%m%d}.csv"
    assert leaks.search(roster.read_bytes())  # the search finds a value where there is one
    events_file = tmp_path / "lineage" / "events.jsonl"
    events_file.parent.mkdir()
    env = {**os.environ, **make_keys(), "AIRFLOW_HOME": str(airflow_home(tmp_path / "airflow")),
           "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps({"type": "file", "log_file_path": str(events_file),
                                                          "append": True}),
           "AIRFLOW__OPENLINEAGE__NAMESPACE": f"tfp-{LA}"}
    env.pop("AIRFLOW__CORE__DAGS_FOLDER", None)
    done = subprocess.run([TFP, "run", "--config", str(config), "--date", R.isoformat()],
                          env=env, cwd=root, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    data = events_file.read_bytes()
    events = read_lineage_events(events_file)
    completed = {e["job"]["name"] for e in events if e["eventType"] == "COMPLETE"}
    assert {"tfp_nightly.police.extract", "tfp_nightly.police.stage", "tfp_nightly.link", "tfp_nightly.package",
            "tfp_nightly.deliver"} <= completed
    assert {e["job"]["namespace"] for e in events} == {f"tfp-{LA}"}

    edges = lineage_edges(events)
    submission = ("file", str(root / "delivered" / f"tfp_submission_{LA}_{R:%Y%m%d}.csv"))
    assert Path(submission[1]).is_file()
    warehouse = f"sqlite://{root / 'work' / 'warehouse.db'}"
    for path in inputs:
        dataset, _ = parse_file_name(path.name)
        downstream = lineage_downstream(edges, ("file", str(path)))
        # partner file -> landed copy -> validated copy -> its staging table -> ... -> the delivered submission
        assert (warehouse, f"stg_{dataset}") in downstream, path.name
        assert submission in downstream, path.name
    # and back: the submission's sources among the partner files are exactly this night's files
    sources = {name for (ns, name) in edges if ns == "file" and name.startswith(str(root / "inbound"))}
    assert sources == {str(p) for p in inputs}

    # names only: no personal value of the input, and no credential, anywhere in the events
    found = sorted({m.group().decode() for m in leaks.finditer(data)})
    assert not found, f"{len(found)} personal values in the lineage events"
    for secret in make_keys().keys():
        assert env[secret].encode() not in data
    assert all("@" not in ns for (ns, _) in edges)

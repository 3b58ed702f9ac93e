"""The linkage review queue through whole nights of `tfp run` (the real tfp_nightly DAG, dag.test) and the
`tfp review` commands as an operator runs them: the link task's XCom carries the queue's counts, the next
night links what the reviewer linked, and no personal value, record reference or review id reaches the
Airflow home (its metadata database with the XComs, the task logs), the reports or any console output."""

from __future__ import annotations

import csv
import io
import json
import shutil
import sqlite3
import subprocess
from datetime import date

import pytest
from hardening_helpers import TFP, leak_pattern, leaks, night_root, personal_values, run_env, tfp_run

pytestmark = pytest.mark.slow

R1 = date(2025, 3, 31)
R2 = date(2025, 4, 1)


def _link_xcoms(home) -> dict[str, dict]:
    """The link task's return value by the run's reference date, from Airflow's metadata database."""
    with sqlite3.connect(home / "airflow.db") as db:
        rows = db.execute("SELECT substr(r.logical_date, 1, 10), x.value FROM xcom x JOIN dag_run r "
                          "ON r.run_id = x.run_id AND r.dag_id = x.dag_id "
                          "WHERE x.task_id = 'link' AND x.key = 'return_value'").fetchall()
    return {day: json.loads(value) for day, value in rows}


def test_review_through_tfp_run_and_the_review_commands(tmp_path):
    import pyrage

    from tfp_dev.generate import generate

    borough = tmp_path / "borough"
    generate(borough, families=40, seed=5, on=R1)
    truth = {(r["dataset"], r["record_id"]): r["person_ref"]
             for r in csv.DictReader((borough / "truth" / "records.csv").open(encoding="utf-8"))}
    shutil.rmtree(borough / "truth")
    values = personal_values(borough, R1)
    identity = pyrage.x25519.Identity.generate()
    root = tmp_path / "night"
    config = night_root(root, borough, linkage={"match_probability_threshold": 0.95,
                                                 "review_band": [0.80, 0.999999],
                                                 "review_recipient": str(identity.to_public())})
    (root / "reviewer.key").write_text(f"{identity}\n")
    env = run_env(root)
    outputs = []

    def tfp(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([TFP, *args], env=env, capture_output=True, text=True, cwd=root, timeout=300)
        outputs.append(done.stdout + done.stderr)
        assert done.returncode == 0, done.stderr
        return done

    first = tfp_run(config, env, R1)
    outputs.append(first.stdout + first.stderr)
    assert first.returncode == 0, first.stdout[-2000:]
    tfp("review", "export", "--config", str(config), "--date", R1.isoformat(), "--out", str(root / "queue.age"))
    rows = list(csv.DictReader(io.StringIO(pyrage.decrypt((root / "queue.age").read_bytes(), [identity]).decode())))
    assert rows
    plain = io.StringIO()
    writer = csv.writer(plain, lineterminator="\n")
    writer.writerow(["review_id", "decision", "reviewer", "decided_at"])
    for r in rows:
        true = truth.get((r["dataset"], r["record_id"])) == r["person_ref"]
        writer.writerow([r["review_id"], "link" if true else "not_a_link", "reviewer one", "2025-03-31T22:00:00Z"])
    (root / "decisions.age").write_bytes(pyrage.encrypt(plain.getvalue().encode(), [identity.to_public()]))
    done = tfp("review", "import", "--config", str(config), "--identity", str(root / "reviewer.key"),
               str(root / "decisions.age"))
    assert f"{len(rows)} decisions recorded" in done.stdout
    second = tfp_run(config, env, R2)
    outputs.append(second.stdout + second.stderr)
    assert second.returncode == 0, second.stdout[-2000:]

    xcoms = _link_xcoms(root / "airflow")
    by_date = xcoms
    records = {(r["dataset"], r["record_id"]) for r in rows}
    linked = sum(truth.get((r["dataset"], r["record_id"])) == r["person_ref"] for r in rows)
    assert linked
    assert by_date["2025-03-31"]["review_queued"] == len(records) and by_date["2025-03-31"]["review_decided"] == 0
    assert by_date["2025-04-01"]["review_decided"] == len(records)
    assert all(type(v) is int for x in xcoms.values() for v in x.values())
    report = json.loads((root / "work" / "reports" / R2.isoformat() / "run_report.json").read_text())
    assert report["review"]["reviewed_links"] == linked
    assert report["review_decided"] == len(records)

    refs = {r["record_id"] for r in rows} | {r["person_ref"] for r in rows} | {r["review_id"] for r in rows}
    places = [root / "airflow", root / "work" / "reports"]
    assert leaks(leak_pattern(values), places, outputs) == []
    assert leaks(leak_pattern(refs), places, outputs) == []

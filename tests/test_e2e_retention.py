"""Retention for real, through `tfp run` and `tfp retention`: after the programme's end nothing
personal is left anywhere tfp writes, and a withdrawal recorded in the consent feed takes the
person's records out of the warehouse and puts their token on the withdrawals list."""

from __future__ import annotations

import csv
import hashlib
import hmac
import os
import sqlite3
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pytest

from conftest import airflow_home, make_keys
from helpers import leak_pattern, personal_values, write_config
from tfp.months import add_months
from tfp_dev.generate import generate

pytestmark = pytest.mark.slow

R = date(2025, 3, 31)
LA = "E09000031"
TFP = str(Path(sys.executable).with_name("tfp"))


def _run(root: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([TFP, *args, "--config", str(root / "tfp.yaml")], env=env, capture_output=True,
                          text=True, cwd=root, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _borough(tmp_path: Path, families: int, seed: int, **overrides) -> tuple[Path, dict]:
    generate(tmp_path / "inbound", families=families, seed=seed, on=R)
    (tmp_path / "inbound" / "truth").rename(tmp_path / "truth")
    write_config(tmp_path, "sqlite:///work/warehouse.db", **overrides)
    env = {**os.environ, **make_keys(), "AIRFLOW_HOME": str(airflow_home(tmp_path / "airflow")),
           "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO"}
    env.pop("AIRFLOW__CORE__DAGS_FOLDER", None)
    return tmp_path, env


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def test_after_the_programme_ends_nothing_personal_remains(tmp_path):
    end = R + timedelta(days=1)
    root, env = _borough(tmp_path, 60, 99, retention={"delete_all_after": end.isoformat()})
    pattern = leak_pattern(personal_values(root / "inbound", R))  # read before the run removes what it lands
    _run(root, env, "run", "--date", R.isoformat())
    assert not list((root / "inbound").rglob("*.csv")), "the landed plaintext is gone from the drop folders"
    warehouse = root / "work" / "warehouse.db"
    assert pattern.search(warehouse.read_bytes()), "the warehouse holds personal data before the purge"
    _run(root, env, "retention", "--date", end.isoformat())
    found = []
    for place in (root / "work", root / "airflow"):
        for path in place.rglob("*"):
            if path.is_file() and pattern.search(path.read_bytes()):
                found.append(str(path.relative_to(root)))
    assert found == []
    with sqlite3.connect(warehouse) as db:
        assert db.execute("SELECT COUNT(*) FROM deletion_log WHERE category = 'programme_end'").fetchone()[0] == 1
        assert db.execute("SELECT COUNT(*) FROM delivery_log").fetchone()[0] >= 5
        assert db.execute("SELECT COUNT(*) FROM stg_incidents").fetchone()[0] == 0
    assert not list((root / "work" / "landing").rglob("*.bin"))


def test_a_withdrawal_removes_the_person_and_lists_their_token(tmp_path):
    root, env = _borough(tmp_path, 80, 5)
    _run(root, env, "run", "--date", R.isoformat())
    persons = {p["person_ref"]: p for p in _read(root / "truth" / "persons.csv")}
    records = _read(root / "truth" / "records.csv")
    linked = {}
    for r in records:
        if r["valid"] == "Y" and r["person_ref"] and persons[r["person_ref"]]["consent_state"] == "given":
            linked.setdefault(r["person_ref"], []).append(r)
    person = max(sorted(linked), key=lambda p: len(linked[p]))  # the kept person with most partner records
    theirs = linked[person]
    warehouse = root / "work" / "warehouse.db"

    def staged(db) -> int:
        return sum(db.execute(f"SELECT COUNT(*) FROM stg_{r['dataset']} WHERE record_id = ?",
                              (r["record_id"],)).fetchone()[0] for r in theirs)

    with sqlite3.connect(warehouse) as db:
        assert staged(db) == len(theirs)
    # the council records the withdrawal the next day; a new consent file carries it
    r2 = R + timedelta(days=1)
    consent = root / "inbound" / "children_services" / f"consent_{r2:%Y%m%d}.csv"
    consent.write_text("record_id,person_ref,purpose,status,recorded_at\n"
                       f"WDR-TEST-1,{person},tfp_evaluation,withdrawn,{r2.isoformat()}T09:30:00\n", encoding="utf-8")
    _run(root, env, "run", "--date", r2.isoformat())
    _run(root, env, "retention", "--date", r2.isoformat())
    with sqlite3.connect(warehouse) as db:
        assert staged(db) == 0
        assert db.execute("SELECT COUNT(*) FROM stg_needs WHERE person_ref = ?", (person,)).fetchone()[0] == 0
        # the roster keeps their references only (review item 5)
        roster = db.execute("SELECT forename, surname, date_of_birth, postcode, nino, upn, uprn, family_ref "
                            "FROM stg_families WHERE person_ref = ?", (person,)).fetchall()
        assert roster and all(r[:7] == (None,) * 7 and r[7] for r in roster)
        assert db.execute("SELECT COUNT(*) FROM links WHERE person_ref = ?", (person,)).fetchone()[0] == 0
    token = hmac.new(bytes.fromhex(env["TFP_PSEUDONYM_KEY"]), f"person:{person}".encode(), hashlib.sha256).hexdigest()
    delivered = root / "delivered"
    withdrawals = _read(delivered / f"tfp_withdrawals_{LA}_{r2:%Y%m%d}.csv")
    assert {"person_token": token, "withdrawn_on": r2.isoformat()} in withdrawals
    submission = _read(delivered / f"tfp_submission_{LA}_{r2:%Y%m%d}.csv")
    assert token not in {row["person_token"] for row in submission}
    # the next night: the person stays out, and stays on the cumulative list
    r3 = r2 + timedelta(days=1)
    _run(root, env, "run", "--date", r3.isoformat())
    assert token not in {row["person_token"] for row in _read(delivered / f"tfp_submission_{LA}_{r3:%Y%m%d}.csv")}
    assert token in {row["person_token"] for row in _read(delivered / f"tfp_withdrawals_{LA}_{r3:%Y%m%d}.csv")}
    with sqlite3.connect(warehouse) as db:
        assert staged(db) == 0


def test_retention_between_two_runs_of_a_date_changes_nothing_delivered(tmp_path):
    """Review item 3: retention deleted open claims and orders that began before the staging cutoff,
    and a re-run of the same night lost their families' worklessness and crime flags. The invariant:
    retention of date R between two runs of R changes no byte of the submission, summary or withdrawals
    (the progress file may change: its baselines look further back than retention keeps)."""
    root, env = _borough(tmp_path, 120, 31)
    cutoff = add_months(R, -15)  # the example config's staging_months
    open_claims = [b for b in _read(next((root / "inbound" / "dwp").glob("benefits_*.csv")))
                   if b["out_of_work"] == "Y" and not b["claim_end"] and b["claim_start"] < cutoff.isoformat()]
    open_orders = [c for c in _read(next((root / "inbound" / "probation").glob("cases_*.csv")))
                   if c["order_type"] != "custody" and not c["end_date"] and c["start_date"] < cutoff.isoformat()]
    assert len(open_claims) >= 5 and len(open_orders) >= 1, "the borough has open spells older than the cutoff"
    _run(root, env, "run", "--date", R.isoformat())
    delivered = root / "delivered"
    kinds = ("submission", "summary", "withdrawals")
    first = {k: (delivered / f"tfp_{k}_{LA}_{R:%Y%m%d}.csv").read_bytes() for k in kinds}
    _run(root, env, "retention", "--date", R.isoformat())
    warehouse = root / "work" / "warehouse.db"
    with sqlite3.connect(warehouse) as db:
        aged = db.execute("SELECT deleted FROM deletion_log WHERE category = 'staging' AND dry_run = 0").fetchone()[0]
        kept_open = db.execute("SELECT COUNT(*) FROM stg_benefits WHERE claim_end IS NULL AND claim_start < ?",
                               (cutoff.isoformat(),)).fetchone()[0]
    _run(root, env, "run", "--date", R.isoformat())
    again = {k: (delivered / f"tfp_{k}_{LA}_{R:%Y%m%d}.csv").read_bytes() for k in kinds}
    assert again == first
    assert aged > 0 and kept_open >= len(open_claims)  # retention did delete, but no open claim
    with sqlite3.connect(warehouse) as db:  # no attribute file of R delivered again with other contents
        changed = db.execute("SELECT file_name FROM delivery_log WHERE reference_date = ? GROUP BY file_name "
                             "HAVING COUNT(DISTINCT plaintext_sha256) > 1", (R.isoformat(),)).fetchall()
    # The progress file judges baselines over what is known tonight (contract section 10), and retention
    # rightly narrowed that: a baseline older than staging_months - lookback_months may lose evidence, and
    # the manifest that lists the file changes with it. See the README's progress section.
    assert {name for (name,) in changed} <= {f"tfp_progress_{LA}_{R:%Y%m%d}.csv",
                                            f"tfp_manifest_{LA}_{R:%Y%m%d}.json",
                                            f"tfp_manifest_{LA}_{R:%Y%m%d}.json.sig"}

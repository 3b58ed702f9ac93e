"""A whole night with the optional health source on (contract section 10, issue 17 item 2): a generated
borough whose roster has NHS numbers for most people and whose health feeds carry treatment episodes and
mental-health contacts (a few with an invalid NHS number) runs through `tfp run`; its delivery matches the
generator's truth, including the health criterion, mk_nhs and the identifiers file's nhs_number, and no NHS
number (or other personal value) is left in Airflow's home, the reports or the delivery.

One test, because the night is slow; the default night (no health) is tests/test_e2e_nightly.py."""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import json
import os
import re
import sqlite3
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
import yaml

from conftest import airflow_home, make_keys
from helpers import BASE, leak_pattern, personal_values
from tfp.feeds import SOURCES
from tfp_dev.generate import generate

pytestmark = pytest.mark.slow

R = date(2025, 3, 31)
LA = "E09000031"
TFP = str(Path(sys.executable).with_name("tfp"))
FLAGS = ("crime_asb", "school_attendance", "children_need_help", "worklessness", "domestic_abuse", "health",
         "problem_count", "eligible")


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def _h(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


def test_a_night_with_the_health_source_delivers_what_the_truth_implies(tmp_path):
    root, partners = tmp_path, tmp_path / "partners"
    generate(partners, families=150, seed=2024, on=R, health=True, progress_truth=True)
    truth = root / "truth"
    (partners / "truth").rename(truth)
    roster = {r["person_ref"]: r for r in _read(partners / "children_services" / f"families_{R:%Y%m%d}.csv")}
    assert sum(1 for p in roster.values() if p["nhs_number"]) > 100
    import pyrage

    identity, linkage = pyrage.x25519.Identity.generate(), pyrage.x25519.Identity.generate()
    (root / "age.key").write_text(str(identity) + "\n")
    (root / "linkage.key").write_text(str(linkage) + "\n")
    keys = make_keys()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    signing = Ed25519PrivateKey.from_private_bytes(base64.b64decode(keys["TFP_SIGNING_KEY"]))
    (root / "signing.pub").write_text(base64.b64encode(
        signing.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode())
    config = {**BASE, "warehouse_url": "sqlite:///work/warehouse.db", "work_dir": "work",
              "sources": {s: {"transport": "directory", "path": f"partners/{s}"} for s in (*SOURCES, "health")},
              "inbound": {"keep_local_files": True},
              "delivery": {"transport": "directory", "path": "delivered", "encryption": "age",
                           "recipient": str(identity.to_public()),
                           "identifiers": {"recipient": str(linkage.to_public())}}}
    (root / "tfp.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, **keys, "AIRFLOW_HOME": str(airflow_home(root / "airflow")),
           "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO"}
    env.pop("AIRFLOW__CORE__DAGS_FOLDER", None)
    run = subprocess.run([TFP, "run", "--config", str(root / "tfp.yaml"), "--date", R.isoformat()],
                         env=env, capture_output=True, text=True, cwd=root, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    delivered = root / "delivered"
    outputs = []
    for option, key_file, out in (("--age-identity", "age.key", "received"),
                                  ("--identifiers-identity", "linkage.key", "linkage")):
        done = subprocess.run([TFP, "verify-delivery", str(delivered), "--signing-public-key",
                               str(root / "signing.pub"), option, str(root / key_file), "--out", str(root / out)],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        outputs.append(done.stdout + done.stderr)

    # the health feeds were landed and validated: exactly the generator's bad NHS numbers quarantined, by rule
    bad = {(r["dataset"], r["record_id"]) for r in _read(truth / "records.csv") if r["broken_rule"] == "bad_nhs_number"}
    assert bad
    with sqlite3.connect(root / "work" / "warehouse.db") as db:
        quarantined = {(dataset, json.loads(row)["record_id"]) for dataset, row, rules in db.execute(
            "SELECT l.dataset, q.row_json, q.rules FROM quarantine q JOIN landing_log l ON l.id = q.landing_id "
            "WHERE l.source = 'health'") if rules == "nhs_number_check_digit"}
        methods = dict(db.execute("SELECT method, COUNT(*) FROM links WHERE dataset IN "
                                  "('treatment_episodes', 'mental_health_contacts') GROUP BY method").fetchall())
        got_all = {ref: dict(zip(FLAGS, values, strict=True)) for ref, *values in db.execute(
            f"SELECT family_ref, {', '.join(FLAGS)} FROM family_flags WHERE scope = 'all' AND reference_date = ?",
            (R.isoformat(),))}
    assert quarantined == bad
    assert methods.get("nhs_number", 0) > 20  # most health records link on the NHS number outright

    # scope all (every roster person counted) against the truth, for every family
    truth_all = {f["family_ref"]: {k: int(f[k]) for k in FLAGS} for f in _read(truth / "families.csv")}
    assert set(got_all) == set(truth_all)
    assert {ref: v for ref, v in got_all.items() if v != truth_all[ref]} == {}
    report = json.loads((root / "work" / "reports" / R.isoformat() / "run_report.json").read_text())
    assert set(report["linkage"]) >= {"treatment_episodes", "mental_health_contacts"}

    # the submission: its people and flags are the truth's (lawful basis consent), mk_nhs the roster's number
    pseudonym, link_key = bytes.fromhex(keys["TFP_PSEUDONYM_KEY"]), bytes.fromhex(keys["TFP_LINKAGE_KEY"])
    kept = {p["person_ref"] for p in _read(truth / "persons.csv") if p["consent_state"] == "given"}
    families = {f["family_ref"]: f for f in _read(truth / "families_consent.csv")}
    submitted = {ref for ref, f in families.items() if f["eligible"] == "1" or f["programme_status"] == "intervention"}
    expected = {(_h(pseudonym, "family:" + p["family_ref"]), _h(pseudonym, "person:" + ref)): p
                for ref, p in roster.items() if ref in kept and p["family_ref"] in submitted}
    submission = root / "received" / f"tfp_submission_{LA}_{R:%Y%m%d}.csv"
    header = submission.read_text(encoding="utf-8").splitlines()[0].split(",")
    assert header[header.index("mk_upn") + 1] == "mk_nhs"
    rows = {(r["family_token"], r["person_token"]): r for r in _read(submission)}
    assert set(rows) == set(expected)
    for token, person in expected.items():
        row = rows[token]
        assert row["mk_nhs"] == (_h(link_key, person["nhs_number"]) if person["nhs_number"] else "")
        family = families[person["family_ref"]]
        assert {f: row[f] for f in FLAGS} == {f: family[f] for f in FLAGS}, person["family_ref"]
    assert sum(1 for r in rows.values() if r["mk_nhs"]) > 20
    assert sum(1 for f in families.values() if f["health"] == "1") > 5

    # the progress file: its baseline and current health flags use the health feed too (truth: pandas)
    progress_truth = {_h(pseudonym, "family:" + t["family_ref"]): t for t in _read(truth / "progress_consent.csv")}
    progress = _read(root / "received" / f"tfp_progress_{LA}_{R:%Y%m%d}.csv")
    assert [r["family_token"] for r in progress] == sorted(progress_truth)
    for row in progress:
        want = {k: v for k, v in progress_truth[row["family_token"]].items() if k != "family_ref"}
        want["baseline_date"] = want["baseline_date"][:7]
        assert {k: v for k, v in row.items() if k != "family_token"} == want

    # the identifiers file for the trusted third party: nhs_number filled from the roster
    identifiers = _read(root / "linkage" / f"tfp_identifiers_{LA}_{R:%Y%m%d}.csv")
    by_token = {_h(pseudonym, "person:" + ref): p for ref, p in roster.items()}
    assert len(identifiers) == len(rows)
    assert all(r["nhs_number"] == by_token[r["person_token"]]["nhs_number"] for r in identifiers)
    assert sum(1 for r in identifiers if r["nhs_number"]) > 20

    # nothing personal (an NHS number included) in Airflow's home, the reports, the outbox or the delivery
    values = personal_values(partners, R)
    assert {p["nhs_number"] for p in roster.values() if p["nhs_number"]} <= values
    pattern = leak_pattern(values)
    found = []
    for place in (root / "airflow", root / "work" / "reports", root / "work" / "outbox", delivered):
        for path in place.rglob("*"):
            if path.is_file() and (hit := pattern.search(path.read_bytes())):
                found.append(f"{path.relative_to(root)}: {hit.group(0)[:3]!r}...")
    assert found == []
    numbers = leak_pattern({v for v in values if re.fullmatch(r"\d{10}", v)})
    assert not numbers.search((root / "received").joinpath(submission.name).read_bytes())
    assert not pattern.search((run.stdout + run.stderr + "".join(outputs)).encode())

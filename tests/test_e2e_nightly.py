"""The whole night, for real: partner drops over SFTP, `tfp run` (the real DAG through dag.test()),
age-encrypted delivery over SFTP to a recipient on loopback, `tfp verify-delivery` as the recipient,
and the submission checked against what the generator's truth folder implies, with tokens and match
keys recomputed here by an independent implementation of the recipes. The identifiers file for the
trusted third party is on (contract section 10): sealed to a key of its own, verified by the analysts
without it and opened by the linkage function. Then a search of everything the run left behind for any
personal value of the input."""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import unicodedata
from collections import Counter
from datetime import date
from pathlib import Path

import pytest
import yaml

from conftest import airflow_home, make_keys
from helpers import BASE, leak_pattern, personal_values
from tfp.feeds import SOURCES
from tfp_dev.generate import generate
from tfp_dev.sftpserver import SftpServer

pytestmark = pytest.mark.slow

R = date(2025, 3, 31)
LA = "E09000031"
TFP = str(Path(sys.executable).with_name("tfp"))


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


# -- an independent implementation of contract section 7's recipes -------------------------------

def _h(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


def _name(value: str) -> str:
    plain = "".join(c for c in unicodedata.normalize("NFKD", value) if unicodedata.category(c) != "Mn")
    return "".join(c for c in plain.upper() if "A" <= c <= "Z")


def _expected_keys(key: bytes, p: dict[str, str]) -> dict[str, str]:
    fn, sn = _name(p["forename"]), _name(p["surname"])
    dob = p["date_of_birth"].replace("-", "")
    pc = p["postcode"].replace(" ", "").upper()
    sex = p["sex"] or "U"

    def mk(*parts: str) -> str:
        return _h(key, "|".join(parts)) if all(parts) else ""

    return {
        "mk1": mk(fn, sn, dob, pc), "mk2": mk(fn[:1], sn, dob, pc), "mk3": mk(fn, sn, dob),
        "mk4": mk(fn[:3], sn[:3], dob, sex), "mk5": mk(sn, dob, pc),
        "mk_nino": _h(key, p["nino"].replace(" ", "").upper()) if p["nino"] else "",
        "mk_upn": _h(key, p["upn"].upper()) if p["upn"] else "",
    }


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    root = tmp_path_factory.mktemp("night")
    partners, recipient = root / "partners", root / "recipient"
    generate(partners, families=150, seed=2024, on=R, progress_truth=True)
    truth = root / "truth"
    (partners / "truth").rename(truth)
    (recipient / "inbound" / LA).mkdir(parents=True)
    import pyrage

    identity = pyrage.x25519.Identity.generate()
    (root / "age.key").write_text(str(identity) + "\n")
    linkage = pyrage.x25519.Identity.generate()  # the trusted third party's linkage function, not the analysts
    (root / "linkage.key").write_text(str(linkage) + "\n")
    keys = make_keys()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    signing = Ed25519PrivateKey.from_private_bytes(base64.b64decode(keys["TFP_SIGNING_KEY"]))
    (root / "signing.pub").write_text(base64.b64encode(
        signing.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode())
    with SftpServer(partners, password="p-secret") as partner_sftp, SftpServer(recipient, password="r-secret") as ons:
        def conn(server, password):
            return json.dumps({"conn_type": "sftp", "host": server.host, "port": server.port, "login": "tfp",
                               "password": password,
                               "extra": {"host_key": server.host_key, "no_host_key_check": False}})

        config = {
            **BASE,
            "warehouse_url": "sqlite:///work/warehouse.db", "work_dir": "work",
            "sources": {s: {"transport": "sftp", "conn_id": "sftp_partners", "path": f"/{s}"} for s in SOURCES},
            "delivery": {"transport": "sftp", "conn_id": "sftp_ons", "path": f"/inbound/{LA}", "encryption": "age",
                         "recipient": str(identity.to_public()),
                         "identifiers": {"recipient": str(linkage.to_public())}},
        }
        (root / "tfp.yaml").write_text(yaml.safe_dump(config))
        env = {**os.environ, **keys, "AIRFLOW_HOME": str(airflow_home(root / "airflow")), "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
               "AIRFLOW_CONN_SFTP_PARTNERS": conn(partner_sftp, "p-secret"),
               "AIRFLOW_CONN_SFTP_ONS": conn(ons, "r-secret")}
        env.pop("AIRFLOW__CORE__DAGS_FOLDER", None)
        first = subprocess.run([TFP, "run", "--config", str(root / "tfp.yaml"), "--date", R.isoformat()],
                               env=env, capture_output=True, text=True, cwd=root, timeout=900)
        delivered = recipient / "inbound" / LA
        stamps = {p.name: p.stat().st_mtime_ns for p in delivered.iterdir()}
        second = subprocess.run([TFP, "run", "--config", str(root / "tfp.yaml"), "--date", R.isoformat()],
                                env=env, capture_output=True, text=True, cwd=root, timeout=900)
    verify = subprocess.run([TFP, "verify-delivery", str(delivered), "--signing-public-key", str(root / "signing.pub"),
                             "--age-identity", str(root / "age.key"), "--out", str(root / "received")],
                            capture_output=True, text=True, timeout=300)
    verify_linkage = subprocess.run([TFP, "verify-delivery", str(delivered), "--signing-public-key",
                                     str(root / "signing.pub"), "--identifiers-identity", str(root / "linkage.key"),
                                     "--out", str(root / "linkage")], capture_output=True, text=True, timeout=300)
    return {"root": root, "truth": truth, "partners": partners, "keys": keys, "first": first, "second": second,
            "verify": verify, "verify_linkage": verify_linkage, "delivered": delivered, "stamps": stamps}


def test_the_run_succeeds_and_the_recipient_verifies_it(night):
    assert night["first"].returncode == 0, night["first"].stdout[-3000:] + night["first"].stderr[-3000:]
    assert "succeeded" in night["first"].stdout
    assert night["verify"].returncode == 0, night["verify"].stdout + night["verify"].stderr
    names = sorted(p.name for p in night["delivered"].iterdir())
    d = R.strftime("%Y%m%d")
    assert names == sorted([f"tfp_submission_{LA}_{d}.csv.age", f"tfp_summary_{LA}_{d}.csv.age",
                            f"tfp_withdrawals_{LA}_{d}.csv.age", f"tfp_progress_{LA}_{d}.csv.age",
                            f"tfp_identifiers_{LA}_{d}.csv.age",
                            f"tfp_manifest_{LA}_{d}.json", f"tfp_manifest_{LA}_{d}.json.sig"])
    # the analysts verify everything, the identifiers file by its signed checksum only (they cannot open it)
    assert f"OK tfp_identifiers_{LA}_{d}.csv.age (checksum; sealed for the trusted third party" in night["verify"].stdout
    assert not (night["root"] / "received" / f"tfp_identifiers_{LA}_{d}.csv").exists()


def test_the_linkage_function_opens_the_identifiers_of_every_submitted_person_and_nothing_else(night):
    """The identifiers file holds the roster's values of exactly the people in the submission, sorted by
    person_token; the linkage function's key opens it and none of the attribute files."""
    assert night["verify_linkage"].returncode == 0, night["verify_linkage"].stdout + night["verify_linkage"].stderr
    d = R.strftime("%Y%m%d")
    assert [p.name for p in (night["root"] / "linkage").iterdir()] == [f"tfp_identifiers_{LA}_{d}.csv"]
    assert night["verify_linkage"].stdout.count("(checksum; not decrypted") == 4  # the four attribute CSVs
    pseudonym = bytes.fromhex(night["keys"]["TFP_PSEUDONYM_KEY"])
    roster = {_h(pseudonym, "person:" + r["person_ref"]): r
              for r in _read(night["partners"] / "children_services" / f"families_{R:%Y%m%d}.csv")}
    rows = _read(night["root"] / "linkage" / f"tfp_identifiers_{LA}_{d}.csv")
    submitted = [r["person_token"] for r in _read(night["root"] / "received" / f"tfp_submission_{LA}_{d}.csv")]
    assert [r["person_token"] for r in rows] == sorted(submitted) and len(rows) > 50
    for row in rows:
        person = roster[row["person_token"]]
        assert {c: row[c] for c in ("forename", "surname", "date_of_birth", "sex", "postcode", "uprn", "nino", "upn")} \
            == {c: person[c] for c in ("forename", "surname", "date_of_birth", "sex", "postcode", "uprn", "nino", "upn")}
        assert row["nhs_number"] == person.get("nhs_number", "")


def test_a_rerun_uploads_nothing(night):
    assert night["second"].returncode == 0, night["second"].stdout[-3000:]
    assert {p.name: p.stat().st_mtime_ns for p in night["delivered"].iterdir()} == night["stamps"]


def test_submission_is_what_the_truth_implies(night):
    truth, keys = night["truth"], night["keys"]
    pseudonym, linkage = bytes.fromhex(keys["TFP_PSEUDONYM_KEY"]), bytes.fromhex(keys["TFP_LINKAGE_KEY"])
    roster = {r["person_ref"]: r for r in _read(night["partners"] / "children_services" / f"families_{R:%Y%m%d}.csv")}
    kept = {p["person_ref"] for p in _read(truth / "persons.csv") if p["consent_state"] == "given"}
    families = {f["family_ref"]: f for f in _read(truth / "families_consent.csv")}
    submitted = {ref for ref, f in families.items() if f["eligible"] == "1" or f["programme_status"] == "intervention"}
    expected = {(_h(pseudonym, "family:" + p["family_ref"]), _h(pseudonym, "person:" + ref)): p
                for ref, p in roster.items() if ref in kept and p["family_ref"] in submitted}
    rows = _read(night["root"] / "received" / f"tfp_submission_{LA}_{R:%Y%m%d}.csv")
    got = {(r["family_token"], r["person_token"]): r for r in rows}
    assert set(got) == set(expected)
    assert [(r["family_token"], r["person_token"]) for r in rows] == sorted(got)
    flags = ("crime_asb", "school_attendance", "children_need_help", "worklessness", "domestic_abuse", "health",
             "problem_count", "eligible")
    for token, person in expected.items():
        row = got[token]
        assert {k: row[k] for k in _expected_keys(linkage, person)} == _expected_keys(linkage, person)
        family = families[person["family_ref"]]
        assert {f: row[f] for f in flags} == {f: family[f] for f in flags}, person["family_ref"]
        assert row["role"] == person["role"] and row["programme_status"] == person["programme_status"]
        assert row["reference_date"] == R.isoformat() and row["la_code"] == LA
        year = person["date_of_birth"][:4]
        assert row["year_of_birth"] == "*" or row["year_of_birth"] == year or (
            "-" in row["year_of_birth"] and row["year_of_birth"][:4] <= year <= row["year_of_birth"][5:])
    combos = Counter((r["year_of_birth"], r["postcode_district"], r["sex"]) for r in rows)
    assert min(combos.values()) >= 5


def test_progress_file_is_what_the_truth_says_for_every_family(night):
    """The progress file (contract section 10) as received, against the generator's truth (pandas, true
    links) for every family: the baseline month, twelve flags, both counts and both outcome measures."""
    pseudonym = bytes.fromhex(night["keys"]["TFP_PSEUDONYM_KEY"])
    truth = {_h(pseudonym, "family:" + t["family_ref"]): t for t in _read(night["truth"] / "progress_consent.csv")}
    rows = _read(night["root"] / "received" / f"tfp_progress_{LA}_{R:%Y%m%d}.csv")
    assert [r["family_token"] for r in rows] == sorted(truth)
    for row in rows:
        expected = {k: v for k, v in truth[row["family_token"]].items() if k != "family_ref"}
        expected["baseline_date"] = expected["baseline_date"][:7]
        assert {k: v for k, v in row.items() if k != "family_token"} == expected
    # the generator's stories are there: sustained progress, and adults off out-of-work benefits
    assert sum(r["sustained_progress"] == "1" for r in rows) > 0
    assert sum(r["off_out_of_work_benefits"] == "1" for r in rows) > 0
    assert any(r["crime_asb_baseline"] == "1" and r["crime_asb_now"] == "0" for r in rows)


def test_nothing_personal_left_in_airflow_home_reports_or_delivery(night):
    values = personal_values(night["partners"], R)
    assert len(values) > 500
    # with the identifiers file on, the roster's UPRNs (12 digits) are searched for too
    values |= {r["uprn"] for r in _read(night["partners"] / "children_services" / f"families_{R:%Y%m%d}.csv")
               if len(r["uprn"]) >= 9}
    pattern = leak_pattern(values)
    root = night["root"]
    # Airflow's home (logs, the metadata DB with XCom), reports, the outbox (ciphertexts, manifest, state), what
    # was delivered, and what the analysts decrypted: only the warehouse, the encrypted landing copies and the
    # linkage function's own decrypted folder may hold identifiers
    # (the analysts' files hold dates by design, withdrawn_on: there only non-date values are searched for)
    undated = leak_pattern({v for v in values if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", v)})
    places = [(root / "airflow", pattern), (root / "work" / "reports", pattern), (root / "work" / "outbox", pattern),
              (night["delivered"], pattern), (root / "received", undated)]
    found = []
    for place, search in places:
        for path in place.rglob("*"):
            if path.is_file():
                hit = search.search(path.read_bytes())
                if hit:
                    found.append(f"{path.relative_to(root)}: {hit.group(0)[:3]!r}...")
    assert found == []
    output = "".join(night[k].stdout + night[k].stderr for k in ("first", "second", "verify", "verify_linkage"))
    assert not pattern.search(output.encode())


def test_every_family_has_its_true_flags(night):
    """Scope `all` (every roster person counted, Splink's links) against the truth for every family."""
    import sqlite3

    flags = ("crime_asb", "school_attendance", "children_need_help", "worklessness", "domestic_abuse", "health",
             "problem_count", "eligible")
    truth = {f["family_ref"]: {k: int(f[k]) for k in flags} for f in _read(night["truth"] / "families.csv")}
    with sqlite3.connect(night["root"] / "work" / "warehouse.db") as db:
        rows = db.execute(f"SELECT family_ref, {', '.join(flags)} FROM family_flags "
                          "WHERE scope = 'all' AND reference_date = ?", (R.isoformat(),)).fetchall()
    got = {ref: dict(zip(flags, values, strict=True)) for ref, *values in rows}
    assert set(got) == set(truth)
    assert {ref: v for ref, v in got.items() if v != truth[ref]} == {}


def test_run_report_shows_eligibility_as_the_summary_publishes_it(night):
    """The run report's eligibility counts follow the summary's disclosure rules: what an engineer reads
    in the report is what the recipient received, never a raw small count."""
    report_dir = night["root"] / "work" / "reports" / R.isoformat()
    report = json.loads((report_dir / "run_report.json").read_text())
    summary = _read(night["root"] / "received" / f"tfp_summary_{LA}_{R:%Y%m%d}.csv")
    published = {(r["measure"], r["programme_status"]): r["count"] for r in summary}
    assert {(m, s): c for m, by in report["eligibility"].items() for s, c in by.items()} == published
    assert report["families_assessed"] == published[("families_assessed", "all")]
    assert report["families_eligible"] == published[("families_eligible", "all")]
    for value in (report["families_assessed"], report["families_eligible"], report["families_assessed_all_persons"]):
        assert value in ("0", "[c]") or int(value) % 5 == 0
    page = (report_dir / "run_report.html").read_text()
    assert "Eligibility (as published)" in page
    for (measure, _status), count in published.items():
        assert f"<th>{measure}</th>" in page and f"<td>{count}</td>" in page


def test_run_report_counts_families_per_indicator_as_published(night):
    """Issue 19 item 4: the report lists every indicator under each flag with the families meeting it and
    the eligible of them, from the criteria task's XCom, disclosed like the summary's cells."""
    from tfp.criteria import INDICATORS

    report_dir = night["root"] / "work" / "reports" / R.isoformat()
    report = json.loads((report_dir / "run_report.json").read_text())
    rows = report["indicators"]
    assert [(r["flag"], r["indicator"]) for r in rows] == [(f, n) for f, names in INDICATORS.items() for n in names]
    for row in rows:
        for value in (row["families"], row["eligible"]):
            assert value in ("0", "[c]") or int(value) % 5 == 0
    assert any(r["families"] not in ("0", "[c]") for r in rows)  # a borough of 150 families meets some often
    assert "<h2 id=indicators>Indicators</h2>" in (report_dir / "run_report.html").read_text()


def test_great_expectations_data_docs_are_built_for_every_file_without_values(night):
    """GX's own Data Docs of the night, linked from the run report: a validation page per file that
    shows its expectations and counts. (The leak search above covers these pages too.)"""
    report_dir = night["root"] / "work" / "reports" / R.isoformat()
    report = json.loads((report_dir / "run_report.json").read_text())
    assert report["data_docs"] == "data_docs/index.html" and (report_dir / report["data_docs"]).is_file()
    page = (report_dir / "run_report.html").read_text()
    assert f'href="{report["data_docs"]}"' in page
    for f in report["files"]:
        docs = report_dir / f["data_docs"]
        assert docs.is_file() and f'href="{f["data_docs"]}"' in page, f["name"]
        text = docs.read_text(encoding="utf-8")
        assert f["name"].replace(".csv", "") in text and "Evaluated Expectations" in text
        assert f"Evaluated Expectations {len(f['expectations'])}" in " ".join(re.sub(r"<[^>]+>", " ", text).split())


def test_run_report_shows_the_linkage_rate_of_each_dataset(night):
    report_dir = night["root"] / "work" / "reports" / R.isoformat()
    report = json.loads((report_dir / "run_report.json").read_text())
    page = (report_dir / "run_report.html").read_text()
    assert "<h2>Linkage</h2>" in page
    for dataset, c in report["linkage"].items():
        rate = 100 * c["linked"] / (c["linked"] + c["unlinked"])
        assert f"<tr><td>{dataset}</td><td>{c['linked']}</td><td>{c['unlinked']}</td><td>{rate:.1f}%</td></tr>" in page
    assert sum(c["linked"] for c in report["linkage"].values()) == report["records_linked"] > 0

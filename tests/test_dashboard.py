"""The dashboard over nights (issue 14 item 5): its data assembled from run and retention reports, the
page it draws, and the run report of a failed night. Real config, real SQLite warehouse, the report
writers the DAG calls; the browser test is tests/test_ops_dashboard.py."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers import make_config
from tfp.dashboard import assemble, dashboard_html, load_nights
from tfp.datadocs import external_references
from tfp.errors import MissingInput, SourceUnavailable
from tfp.report import why_published_differs, write_failed_report, write_run_report
from tfp.warehouse import connect

R = date(2025, 3, 31)
SECRET = "Fairweather-Secret"


def _file(source, dataset, day, landed_by, read, quarantined):
    return {"name": f"{dataset}_{day.replace('-', '')}.csv", "source": source, "dataset": dataset,
            "status": "staged", "rows_read": read, "rows_staged": read - quarantined,
            "rows_quarantined": quarantined, "landed_by_run": landed_by, "quarantine_reasons": {}}


def _night(reports: Path, day: str, status: str = "succeeded", **extra) -> None:
    folder = reports / day
    folder.mkdir(parents=True, exist_ok=True)
    body = {
        "reference_date": day, "la_code": "E09000031", "status": status, "started_at": f"{day}T01:00:00+00:00",
        "duration_seconds": 125,
        "files": [_file("police", "incidents", day, day, 200, 10), _file("schools", "attendance", "2025-03-01",
                                                                          "2025-03-01", 80, 0)],
        "rows_read": 280, "rows_quarantined": 10, "records_linked": 150, "records_unlinked": 50,
        "linkage": {"incidents": {"linked": 150, "unlinked": 50}},
        "families_eligible": "25", "persons_submitted": 61,
        "freshness": {"datasets": {"incidents": {"newest": day, "max_age_days": 8},
                                   "attendance": {"newest": "2025-03-01", "max_age_days": 8}},
                      "overdue": [{"dataset": "attendance", "age_days": 29}], "volume": []},
        "delivery": {"uploaded": 5, "skipped": 0, "files": [
            {"name": f"tfp_manifest_E09000031_{day.replace('-', '')}.json", "bytes": 900, "rows": None,
             "sha256": "ab" * 32, "delivered_at": f"{day}T01:02:00+00:00"}], "checked": "checked"},
        "surname": SECRET,  # a key the dashboard does not know must never reach the page
        **extra,
    }
    (folder / "run_report.json").write_text(json.dumps(body))


def test_assembly_over_nights_per_source_delivery_and_retention(tmp_path):
    reports = tmp_path / "reports"
    _night(reports, "2025-03-29")
    _night(reports, "2025-03-30", status="failed", failure={"stage": "check_inputs", "message": "no file"},
           delivery={}, persons_submitted=None)
    _night(reports, "2025-03-31")
    (reports / "2025-03-31" / "retention_report.json").write_text(json.dumps({
        "run_date": "2025-03-31", "dry_run": False,
        "categories": {"quarantine": {"cutoff": "2025-02-28", "found": 7, "deleted": 7, "unit": "rows"}}}))
    (reports / "2025-03-28").mkdir()  # a folder without a report is no night
    data = assemble(load_nights(reports, 60))

    assert [n["date"] for n in data["nights"]] == ["2025-03-29", "2025-03-30", "2025-03-31"]
    assert [n["status"] for n in data["nights"]] == ["succeeded", "failed", "succeeded"]
    assert data["nights"][1]["failed_stage"] == "check_inputs"
    assert data["nights"][2]["linkage_rate"] == pytest.approx(0.75)
    police = data["sources"]["police"][-1]
    assert (police["files_landed"], police["rows"], police["rows_quarantined"]) == (1, 200, 10)
    assert police["quarantine_rate"] == pytest.approx(0.05) and police["linkage_rate"] == pytest.approx(0.75)
    assert police["newest_age_days"] == 0 and police["overdue"] == []
    schools = data["sources"]["schools"][-1]
    assert schools["files_landed"] == 0 and schools["quarantine_rate"] is None  # no file landed that night
    assert schools["newest_age_days"] == 30 and schools["overdue"] == ["attendance"]
    assert data["last_delivery"]["date"] == "2025-03-31" and data["last_delivery"]["verified"]
    assert data["retention"] == [{"date": "2025-03-31", "dry_run": False, "categories": {
        "quarantine": {"found": 7, "deleted": 7, "unit": "rows", "cutoff": "2025-02-28"}}}]
    assert len(load_nights(reports, 2)) == 2  # the window keeps the newest nights


def test_the_last_delivery_is_the_last_succeeded_night_that_delivered(tmp_path):
    reports = tmp_path / "reports"
    _night(reports, "2025-03-30")
    _night(reports, "2025-03-31", delivery={"uploaded": 0, "skipped": 5, "dry_run": 1})
    assert assemble(load_nights(reports))["last_delivery"]["date"] == "2025-03-30"


def test_page_has_charts_tables_and_nothing_external_or_personal(tmp_path):
    reports = tmp_path / "reports"
    _night(reports, "2025-03-30", status="failed", failure={"stage": "police.validate", "message": "x"})
    _night(reports, "2025-03-31")
    (reports / "2025-03-31" / "retention_report.json").write_text(json.dumps({
        "run_date": "2025-03-31", "dry_run": True,
        "categories": {"landing_copies": {"cutoff": "2025-02-28", "found": 3, "deleted": 0, "unit": "files"}}}))
    page = dashboard_html(reports, 30)
    for chart in ("chart-rows", "chart-quarantine", "chart-linkage", "chart-freshness", "chart-duration"):
        assert f'<svg id="{chart}"' in page, chart
    assert "class=failband" in page  # the failed night is marked on the charts
    assert "police.validate" in page and "would delete 3 files" in page
    assert "2025-03-31: <a href=\"2025-03-31/run_report.html\">run report</a>" in page
    assert "tfp dashboard (E09000031)" in page
    assert SECRET not in page
    assert external_references(page) == [] and "http" not in page and "<script" not in page


def test_a_linked_report_is_not_read(tmp_path):
    reports = tmp_path / "reports"
    _night(reports, "2025-03-31")
    (tmp_path / "elsewhere.json").write_text(json.dumps({"reference_date": "2025-03-30", "status": SECRET}))
    (reports / "2025-03-30").mkdir()
    (reports / "2025-03-30" / "run_report.json").symlink_to(tmp_path / "elsewhere.json")
    assert [n["date"] for n in load_nights(reports)] == ["2025-03-31"]
    assert SECRET not in dashboard_html(reports)


# -- the run report: header, comparison, published vs exact, a failed night -----------------------------

def _config(tmp_path):
    return make_config(tmp_path, f"sqlite:///{tmp_path / 'warehouse.db'}")


def test_failed_night_report_names_the_stage_and_only_a_safe_message(tmp_path):
    config = _config(tmp_path)
    run = {"run_id": "scheduled__2025-03-31", "started_at": "2025-04-01T00:00:00+00:00"}
    error = MissingInput(R, ["needs"])
    path = write_failed_report(config, R, "check_inputs", error, run)
    report = json.loads(path.read_text())
    page = (path.parent / "run_report.html").read_text()
    assert report["status"] == "failed" and report["started_at"] == run["started_at"]
    assert report["failure"] == {"stage": "check_inputs", "message": error.message, "hint": error.hint}
    assert isinstance(report["duration_seconds"], int) and "files" in report  # the counts known so far
    assert "Status: failed</strong> at <code>check_inputs</code>" in page and error.message in page
    assert page.index("night-status") < page.index("<h2>Totals")

    # another task of the same run fails too: both are listed; a library's error gives its class only
    write_failed_report(config, R, "police.validate", ValueError(f"bad value {SECRET}"), run)
    again = json.loads(path.read_text())
    assert [f["stage"] for f in again["failures"]] == ["check_inputs", "police.validate"]
    assert again["failures"][1]["message"] == "ValueError (details in the task log)"
    assert SECRET not in path.read_text() and SECRET not in (path.parent / "run_report.html").read_text()


def test_failed_night_with_an_unreadable_warehouse_still_writes_its_report(tmp_path):
    config = _config(tmp_path)
    (tmp_path / "warehouse.db").write_bytes(b"not a database at all" * 100)
    path = write_failed_report(config, R, "check_setup", SourceUnavailable("police", tmp_path / "x", "does not exist"))
    report = json.loads(path.read_text())
    assert report["status"] == "failed" and report["failure"]["stage"] == "check_setup"
    assert "counts_unavailable" in report
    assert "Status: failed" in (path.parent / "run_report.html").read_text()


def test_report_opens_with_status_duration_and_the_previous_night(tmp_path):
    config = _config(tmp_path)
    write_failed_report(config, date(2025, 3, 30), "check_inputs", MissingInput(date(2025, 3, 30), ["needs"]))
    started = datetime(2025, 4, 1, 0, 0, tzinfo=UTC).isoformat()
    path = write_run_report(connect(config.warehouse_url), config, R, {}, {"run_id": "r1", "started_at": started})
    report = json.loads(path.read_text())
    page = (path.parent / "run_report.html").read_text()
    assert report["status"] == "succeeded" and report["run_id"] == "r1" and report["duration_seconds"] >= 0
    assert report["previous"]["reference_date"] == "2025-03-30" and report["previous"]["status"] == "failed"
    assert report["previous"]["counts"]["rows_read"] == {"before": 0, "now": 0, "change": 0}
    assert "Compared with the previous night (2025-03-30, failed)" in page
    assert page.index("night-status") < page.index("previous-night") < page.index("<h2>Totals")
    assert "published-vs-exact" in page and report["families_exact"]["families_assessed"] == 0


@pytest.mark.parametrize(("exact", "published", "why"), [
    (0, "0", "the same"),
    (7, "[c]", "suppressed: 7 is from 1 to 9"),
    (23, "[c]", "secondary suppression"),
    (23, "25", "rounded to the nearest 5 (23 is published as 25)"),
])
def test_why_a_published_count_differs(exact, published, why):
    assert why in why_published_differs(exact, published, 10, 5)


def test_failure_callback_writes_the_report_from_an_airflow_context(tmp_path, monkeypatch):
    """The callback tfp_nightly's tasks run on failure, given the context Airflow hands it."""
    from tfp_airflow.callbacks import report_failure

    config = _config(tmp_path)
    monkeypatch.setenv("TFP_CONFIG", str(tmp_path / "tfp.yaml"))
    setup = {"check_setup": {"started_at": "2025-04-01T00:00:05+00:00"}}  # when check_setup began
    ti = SimpleNamespace(task_id="police.extract", xcom_pull=lambda task_ids: setup.get(task_ids))
    context = {"ti": ti, "params": {"reference_date": R.isoformat()},
               "run_id": "manual__1", "exception": SourceUnavailable("police", tmp_path / "gone", "does not exist"),
               "dag_run": SimpleNamespace(start_date=datetime(2025, 4, 1, tzinfo=UTC), run_id="manual__1")}
    report_failure(context)
    report = json.loads((config.reports_dir / R.isoformat() / "run_report.json").read_text())
    assert report["failure"]["stage"] == "police.extract" and "drop folder" in report["failure"]["message"]
    assert report["run_id"] == "manual__1" and report["started_at"] == "2025-04-01T00:00:05+00:00"
    assert report["persons_submitted"] is None and report["delivery"] == {}  # never reached

    setup.clear()  # check_setup itself failed: the run's start stands in
    report_failure(context)
    report = json.loads((config.reports_dir / R.isoformat() / "run_report.json").read_text())
    assert report["started_at"] == "2025-04-01T00:00:00+00:00"


def test_retention_lines_say_what_a_dry_run_would_delete():
    from tfp_airflow.runner import retention_lines

    lines = retention_lines({"dry_run": True, "categories": {
        "quarantine": {"cutoff": "2025-02-28", "found": 7, "deleted": 0, "unit": "rows"},
        "landing_copies": {"cutoff": "2025-03-01", "found": 2, "deleted": 0, "unit": "files"}}})
    assert lines == ["landing copies: would delete 2 files (cutoff 2025-03-01)",
                     "quarantine: would delete 7 rows (cutoff 2025-02-28)",
                     "would delete 9 in all (dry run: nothing was deleted)"]


# -- Data Docs: the contract's rule names, and what "Failed" means for a staged file ------------------

def test_data_docs_name_contract_rules_and_columns():
    from tfp.datadocs import _contract_names, contract_column, describe_rule

    assert describe_rule("date:date_of_birth") == "Rule date:date_of_birth: date_of_birth must be a date (YYYY-MM-DD)"
    assert describe_rule("record_id_unique") == "Rule record_id_unique: record_id must be unique in the file"
    assert contract_column("date_of_birth__is_date") == "date_of_birth" and contract_column("_values__fit") == "every column"
    result = {"expectation_config": {"type": "expect_column_values_to_be_in_set", "meta": {"rule": "date:dob"},
                                     "kwargs": {"column": "dob__is_date", "value_set": [True]}}}
    _contract_names(result)
    assert result["expectation_config"]["kwargs"]["column"] == "dob"
    assert result["expectation_config"]["description"].startswith("Rule date:dob")


def test_data_docs_say_what_failed_means_for_a_staged_file(tmp_path):
    from tfp.datadocs import _explain_failed

    page = tmp_path / "p.html"
    status = '<span class="h6" >Status:</span> <i class="fas fa-times text-danger" aria-hidden="true"></i> Failed'
    page.write_text(f"<html>{status}</html>")
    _explain_failed(page, {"status": "staged", "rows_staged": 95, "rows_quarantined": 5})
    text = page.read_text()
    assert "Failed<br><span id=tfp-failed-means" in text
    assert "Rows quarantined, file staged." in text and "5 of 100 rows" in text and "the other 95 rows were staged" in text
    page.write_text(f"<html>{status}</html>")
    _explain_failed(page, {"status": "rejected", "rows_staged": 0, "rows_quarantined": 0})
    assert "File rejected." in page.read_text()


def test_data_docs_index_says_what_failed_means(tmp_path):
    from tfp.datadocs import _explain_index

    index = tmp_path / "index.html"
    index.write_text('<body><div id="section-1" class="ge-section">table</div></body>')
    _explain_index(index, {"incidents_20250331.csv": {"status": "staged", "rows_quarantined": 3},
                           "cases_20250331.csv": {"status": "staged", "rows_quarantined": 0}})
    text = index.read_text()
    assert text.index("tfp-status-means") < text.index('id="section-1"')
    assert "1 file(s) staged with some rows quarantined" in text and "(incidents_20250331.csv)" in text
    clean = tmp_path / "clean.html"
    clean.write_text('<div id="section-1" class="x"></div>')
    _explain_index(clean, {"cases_20250331.csv": {"status": "staged", "rows_quarantined": 0}})
    assert "tfp-status-means" not in clean.read_text()  # nothing failed: nothing to explain

"""The run report's own files: the weak-disclosure warning (issue 13 item 8) and a page that loads nothing
from anywhere (issue 20 item 1). Real warehouse (SQLite), real config, write_run_report as the DAG calls it."""

from __future__ import annotations

import json
from datetime import date

from helpers import make_config
from tfp.context import PackageResult
from tfp.datadocs import external_references
from tfp.report import write_run_report
from tfp.warehouse import connect

R = date(2025, 3, 31)


def _report(tmp_path, **overrides) -> tuple[dict, str]:
    config = make_config(tmp_path, f"sqlite:///{tmp_path / 'warehouse.db'}", **overrides)
    path = write_run_report(connect(config.warehouse_url), config, R, {})
    return json.loads(path.read_text()), (path.parent / "run_report.html").read_text(encoding="utf-8")


def test_weak_disclosure_is_in_the_report_and_on_the_page(tmp_path):
    report, page = _report(tmp_path, anonymisation={"k": 1},
                           disclosure={"round_to": 1, "allow_weak_disclosure": True})
    assert report["weak_disclosure"] == ["anonymisation.k", "disclosure.round_to"]
    assert "Warning: weak disclosure control." in page
    banner = page[page.index('<div id=weak-disclosure'):]
    banner = banner[:banner.index("</div>")]
    assert "anonymisation.k, disclosure.round_to" in banner and "suppress_below" in banner  # the floor
    assert page.index("weak-disclosure") < page.index("<h2>Totals")  # at the top, before any count


def test_normal_disclosure_has_an_empty_list_and_no_banner(tmp_path):
    report, page = _report(tmp_path)
    assert report["weak_disclosure"] == []
    assert "weak-disclosure" not in page and "weak disclosure" not in page.lower()


def test_report_page_refers_to_nothing_outside_itself(tmp_path):
    _, page = _report(tmp_path, anonymisation={"k": 1}, disclosure={"round_to": 1, "allow_weak_disclosure": True})
    assert external_references(page) == []
    assert "<script" not in page.lower() and "http" not in page.lower()


def test_totals_are_the_summarys_published_cells_not_a_second_disclosure(tmp_path):
    """A cell that secondary suppression hid in the summary is not shown by the report beside it."""
    config = make_config(tmp_path, f"sqlite:///{tmp_path / 'warehouse.db'}")
    published = {"families_assessed": {"intervention": "[c]", "comparison": "[c]", "all": "[c]"},
                 "families_eligible": {"intervention": "0", "comparison": "0", "all": "0"}}
    packaged = PackageResult(stage="package", published_summary=published)
    path = write_run_report(connect(config.warehouse_url), config, R, {"package": packaged})
    report = json.loads(path.read_text())
    assert report["families_assessed"] == "[c]" and report["families_eligible"] == "0"
    assert report["eligibility"] == published


def test_indicator_counts_are_disclosed_and_listed_for_every_indicator(tmp_path):
    """Families per indicator among the kept families, and the eligible of them (issue 19 item 4),
    published as the summary publishes a count: [c] for 1..suppress_below-1, others rounded."""
    from criteria_helpers import CRITERIA, Warehouse
    from criteria_helpers import R as CR
    from tfp.context import CriteriaResult
    from tfp.criteria import INDICATORS, SCOPES, assess_families

    config = make_config(tmp_path, f"sqlite:///{tmp_path / 'warehouse.db'}")
    w = Warehouse(config.warehouse_url)
    for n in range(12):  # 12 eligible families with mental health and domestic abuse needs
        w.consent(w.adult(f"f{n}", f"a{n}"), True)
        w.consent(w.child(f"f{n}", f"c{n}"), True)
        w.need(f"a{n}", "mental_health", date(2024, 1, 1))
        w.need(f"a{n}", "domestic_abuse", date(2024, 1, 1))
    for n in range(3):  # 3 with a physical health need only: not eligible
        w.consent(w.adult(f"g{n}", f"p{n}"), True)
        w.need(f"p{n}", "physical_health", date(2024, 1, 1))
    w.need(w.adult("refused", "r"), "vulnerable_new_mother", date(2024, 1, 1))
    w.consent("r", False)  # not kept: counts for no indicator of what is delivered
    w.save()
    found = {scope: assess_families(w.engine, CR, CRITERIA, scope) for scope in SCOPES}
    result = CriteriaResult.of({s: a.counts for s, a in found.items()}, indicators=found["kept"].indicators)
    path = write_run_report(w.engine, config, CR, {"criteria": CriteriaResult.from_xcom("criteria", result.to_xcom())})
    report = json.loads(path.read_text())
    rows = {(i["flag"], i["indicator"]): (i["families"], i["eligible"]) for i in report["indicators"]}
    assert list(rows) == [(flag, name) for flag, names in INDICATORS.items() for name in names]
    assert rows[("health", "mental_health")] == ("10", "10")  # 12, rounded to the nearest 5
    assert rows[("domestic_abuse", "domestic_abuse_need")] == ("10", "10")
    assert rows[("health", "physical_health")] == ("[c]", "0")
    assert rows[("health", "vulnerable_new_mother")] == ("0", "0")
    page = (path.parent / "run_report.html").read_text(encoding="utf-8")
    section = page[page.index("<h2 id=indicators>"):]
    section = section[:section.index("</table>")]
    assert "<td>physical_health</td><td>[c]</td><td>0</td>" in section
    assert "12" not in section and ">3<" not in section


def test_a_report_without_the_criteria_result_has_no_indicator_counts(tmp_path):
    report, page = _report(tmp_path)
    assert report["indicators"] == []
    assert "No indicator counts" in page

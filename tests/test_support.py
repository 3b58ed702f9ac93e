"""The optional support_services source (issue 17 item 3, contract section 10): its file names beside the
schools' ``attendance``, the config and the night's source list without and with it, the no-silent-partial-night
check covering it, a generated support feed through land -> validate -> stage, the run report's attached_month
cross-check against the generator's truth, and retention (aged, withdrawn, programme end). On SQLite and
PostgreSQL where a warehouse is involved."""

from __future__ import annotations

import csv
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select

from criteria_helpers import load_generated
from helpers import make_config
from tfp import feeds
from tfp.errors import MissingInput
from tfp.extract import land_source
from tfp.feeds import ALL_SOURCES, SOURCES, file_name, parse_file_name
from tfp.inputs import check_inputs, required_datasets
from tfp.months import add_months
from tfp.pipeline import configured
from tfp.retention import run_category
from tfp.stage import stage_source
from tfp.support import MEASURES, crosscheck, crosscheck_counts, disclosed
from tfp.validate import validate_source
from tfp.warehouse import connect, landing_log, links, quarantine, staging

R = date(2025, 3, 31)
SUPPORT = {"support_services": {"transport": "directory", "path": "inbound/support_services"}}


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


# -- names and config ------------------------------------------------------------------------------------

def test_an_attendance_file_is_the_dataset_of_the_folder_it_arrives_in():
    name = "attendance_20250131.csv"
    assert parse_file_name(name, "schools") == ("attendance", date(2025, 1, 31))
    assert parse_file_name(name, "support_services") == ("support_attendance", date(2025, 1, 31))
    assert parse_file_name(name) == ("attendance", date(2025, 1, 31))  # no folder: the schools' as before
    assert parse_file_name("incidents_20250131.csv", "support_services") is None
    # the internal name is never a file name
    for source in (None, *ALL_SOURCES):
        assert parse_file_name("support_attendance_20250131.csv", source) is None
    assert file_name("support_attendance", date(2025, 1, 31)) == name
    assert feeds.datasets_of("support_services") == ("support_attendance",)
    d = feeds.DATASETS["support_attendance"]
    assert d.columns == ("record_id", *feeds.PERSON_COLUMNS, "provider", "service_type", "start_date", "end_date")


def test_a_config_without_support_services_runs_the_six_sources_as_before(tmp_path, sqlite_url):
    config = make_config(tmp_path, sqlite_url)
    assert config.source("support_services") is None
    assert config.configured_sources == SOURCES
    assert configured(config, None) == list(SOURCES)
    assert configured(config, ALL_SOURCES) == list(SOURCES)  # chosen in a manual run, but not configured
    with_support = make_config(tmp_path / "b", sqlite_url, sources=SUPPORT)
    assert with_support.configured_sources == (*SOURCES, "support_services")
    assert configured(with_support, ["police", "support_services"]) == ["police", "support_services"]
    assert configured(with_support, ["police"]) == ["police"]


def test_the_night_needs_a_support_file_only_when_support_services_is_in_the_run(tmp_path, warehouse_url):
    """Contract section 10: no delivery when a dataset of a source in the run has no file on or before R."""
    engine = connect(warehouse_url)
    with engine.begin() as conn:
        for name in required_datasets(SOURCES):
            conn.execute(insert(landing_log).values(
                source=feeds.DATASETS[name].source, dataset=name, file_name=file_name(name, R), file_date=R,
                sha256=name.ljust(64, "0"), bytes=1, landed_at=datetime.now(UTC), landed_by_run=R, status="staged"))
    assert check_inputs(engine, R, SOURCES) == {"datasets_checked": 8}
    assert "support_attendance" in required_datasets([*SOURCES, "support_services"])
    with pytest.raises(MissingInput) as missing:
        check_inputs(engine, R, [*SOURCES, "support_services"])
    assert missing.value.missing == ["support_attendance"]
    assert "support_attendance" in str(missing.value)

    def land(on: date, status: str) -> None:
        with engine.begin() as conn:
            conn.execute(insert(landing_log).values(
                source="support_services", dataset="support_attendance", file_name=file_name("support_attendance", on),
                file_date=on, sha256=(status + str(on)).ljust(64, "1"), bytes=1, landed_at=datetime.now(UTC),
                landed_by_run=R, status=status))

    land(R + timedelta(days=1), "staged")  # after R: not input for R
    land(R, "rejected")  # failed a file-level rule: not input
    with pytest.raises(MissingInput):
        check_inputs(engine, R, [*SOURCES, "support_services"])
    land(R - timedelta(days=40), "staged")  # an old file counts (the dataset adds up over its files)
    assert check_inputs(engine, R, [*SOURCES, "support_services"]) == {"datasets_checked": 9}


# -- a generated borough with the support feed -----------------------------------------------------------

@pytest.fixture(scope="module")
def borough(tmp_path_factory) -> Path:
    from tfp_dev.generate import generate

    out = tmp_path_factory.mktemp("support_borough")
    generate(out, families=400, seed=21, on=R, invalid_rate=0.03, support=True)
    return out


def test_the_generator_draws_support_only_when_asked_and_leaves_every_other_file_as_it_was(tmp_path, borough):
    from tfp_dev.generate import generate

    plain = tmp_path / "plain"
    generate(plain, families=400, seed=21, on=R, invalid_rate=0.03)
    assert not (plain / "support_services").exists()
    from tfp import cli

    by_cli = tmp_path / "cli"
    assert cli.main(["generate", "--out", str(by_cli), "--families", "20", "--seed", "3", "--date", R.isoformat(),
                     "--support-services"]) == 0
    assert (by_cli / "support_services" / "attendance_20250331.csv").exists()
    assert (by_cli / "truth" / "support_consent.csv").exists()
    differ = sorted(str(p.relative_to(plain)) for p in plain.rglob("*.csv")
                    if p.read_bytes() != (borough / p.relative_to(plain)).read_bytes())
    # only the roster (some supported intervention families lose their attached_date), the list of records
    # (the support rows are added to it) and what follows from the attached dates differ
    assert differ == ["children_services/families_20250331.csv", "truth/records.csv"]
    plain_roster = {r["person_ref"]: r for r in _read(plain / "children_services" / "families_20250331.csv")}
    support_roster = _read(borough / "children_services" / "families_20250331.csv")
    changed = [r for r in support_roster if r != plain_roster[r["person_ref"]]]
    assert changed and all(r["programme_status"] == "intervention" and r["attached_date"] == "" for r in changed)
    truth = {r["measure"]: int(r["count"]) for r in _read(borough / "truth" / "support_consent.csv")}
    assert list(truth) == list(MEASURES) and all(truth.values())  # every measure has something to find


def test_a_generated_support_feed_is_staged_or_quarantined_row_by_row(tmp_path, warehouse_url, borough):
    import shutil

    shutil.copytree(borough / "support_services", tmp_path / "inbound" / "support_services")
    config = make_config(tmp_path, warehouse_url, quality={"max_bad_row_fraction": 0.2}, sources=SUPPORT)
    engine = connect(warehouse_url)
    land_source(engine, config, "support_services", R)
    validate_source(engine, config, "support_services", R)
    stage_source(engine, config, "support_services", R)
    truth = [t for t in _read(borough / "truth" / "records.csv") if t["dataset"] == "support_attendance"]
    with engine.connect() as conn:
        log = conn.execute(select(landing_log)).one()
        rows = conn.execute(select(quarantine.c.row_json, quarantine.c.rules)).all()
        n_staged = conn.execute(select(func.count()).select_from(staging["support_attendance"])).scalar_one()
    assert (log.source, log.dataset, log.file_name) == ("support_services", "support_attendance",
                                                        "attendance_20250331.csv")
    assert log.rows_read == len(truth) == n_staged + len(rows) == log.rows_staged + log.rows_quarantined
    bad = {t["record_id"] for t in truth if t["valid"] == "N"}
    assert bad and {json.loads(j)["record_id"] for j, _ in rows} == bad
    # each generated fault is quarantined with the rule it broke
    by_fault = {"code_not_in_list": "code:service_type", "date_after_file_date": "not_after_file_date:start_date",
                "unparseable_date": "date:start_date", "missing_surname": "required:surname",
                "bad_postcode": "postcode_format", "dob_before_1900": "date_of_birth_from_1900",
                "duplicate_record_id": "record_id_unique"}
    rules = {}
    for row_json, rule in rows:
        rules.setdefault(json.loads(row_json)["record_id"], set()).update(rule.split("; "))
    for t in truth:
        if t["valid"] == "N":
            assert by_fault[t["broken_rule"]] in rules[t["record_id"]], (t["broken_rule"], rules[t["record_id"]])


def test_the_crosscheck_is_what_the_truth_says(tmp_path, warehouse_url, borough):
    """With every valid record linked to its true person (criteria_helpers.load_generated), the cross-check's
    counts are the truth's (tfp_dev.truth.truth_support, pandas), and the report shows them disclosed,
    only when the config names the source."""
    from tfp.report import build_run_report

    engine = connect(warehouse_url)
    load_generated(engine, borough, R)
    truth = {r["measure"]: int(r["count"]) for r in _read(borough / "truth" / "support_consent.csv")}
    assert crosscheck(engine, R, 12) == truth
    config = make_config(tmp_path, warehouse_url, sources=SUPPORT)
    report = build_run_report(engine, config, R, {})
    assert report["support_services"] == disclosed(truth, 10, 5)
    assert "support_services" not in build_run_report(engine, make_config(tmp_path / "b", warehouse_url), R, {})
    # counts only: no family or person reference, no provider
    text = json.dumps(report["support_services"])
    assert not any(ch.isalpha() for v in report["support_services"].values() for ch in v.replace("[c]", ""))
    assert "F0" not in text and "P0" not in text


def test_crosscheck_counts_by_status_and_attached_date():
    rows = [("intervention", None, date(2025, 1, 1)),  # no attached_month
            ("intervention", date(2024, 6, 15), date(2024, 5, 31)),  # began the month before
            ("intervention", date(2024, 6, 15), date(2024, 6, 1)),  # the attached month itself: not before
            ("comparison", None, date(2025, 1, 1)), ("comparison", None, None)]
    assert crosscheck_counts(rows) == {"intervention_attending": 3, "intervention_attending_without_attached_month": 1,
                                       "intervention_attending_before_attached_month": 1, "comparison_attending": 2}
    assert disclosed({m: n for m, n in zip(MEASURES, (0, 3, 12, 10), strict=True)}, 10, 5) == dict(
        zip(MEASURES, ("0", "[c]", "10", "10"), strict=True))


# -- retention ---------------------------------------------------------------------------------------------

D = date(2025, 6, 30)


def _landing(conn) -> int:
    return conn.execute(insert(landing_log).values(
        source="support_services", dataset="support_attendance", file_name="attendance_20250101.csv",
        file_date=date(2025, 1, 1), sha256="5" * 64, bytes=1, landed_at=datetime.now(UTC), landed_by_run=D,
        status="staged")).inserted_primary_key[0]


def _ids(engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(conn.execute(select(staging["support_attendance"].c.record_id)).scalars())


def test_support_attendance_is_aged_like_a_spell_and_an_open_one_never(tmp_path, warehouse_url):
    config = make_config(tmp_path, warehouse_url, sources=SUPPORT)
    engine = connect(warehouse_url)
    cutoff = add_months(D, -15)
    cases = {"ended_day_before": (date(2020, 1, 1), cutoff - timedelta(days=1)),
             "ends_on_cutoff": (date(2020, 1, 1), cutoff), "open_since_2019": (date(2019, 4, 1), None),
             "recent": (D - timedelta(days=10), None), "old_ended": (date(2020, 1, 1), date(2021, 1, 1))}
    with engine.begin() as conn:
        lid = _landing(conn)
        for i, (record_id, (start, end)) in enumerate(cases.items()):
            conn.execute(insert(staging["support_attendance"]).values(
                landing_id=lid, record_id=record_id, file_date=date(2025, 1, 1), row_number=i + 1, surname="X",
                date_of_birth=date(1980, 1, 1), provider="Mind", service_type="parenting", start_date=start,
                end_date=end))
    dry = run_category(engine, config, "staging", D, dry_run=True)
    assert dry.found == 2 and len(_ids(engine)) == 5
    assert run_category(engine, config, "staging", D, dry_run=False).deleted == 2
    assert _ids(engine) == ["ends_on_cutoff", "open_since_2019", "recent"]
    # the programme-end purge takes the rest
    run_category(engine, config, "programme_end", config.retention.delete_all_after, dry_run=False)
    assert _ids(engine) == []


def test_a_withdrawn_persons_support_attendance_is_purged(tmp_path, warehouse_url):
    config = make_config(tmp_path, warehouse_url, sources=SUPPORT)
    engine = connect(warehouse_url)
    with engine.begin() as conn:
        consent_lid = conn.execute(insert(landing_log).values(
            source="children_services", dataset="consent", file_name="consent_20250101.csv",
            file_date=date(2025, 1, 1), sha256="6" * 64, bytes=1, landed_at=datetime.now(UTC), landed_by_run=D,
            status="staged")).inserted_primary_key[0]
        for i, (person, status) in enumerate((("P1", "withdrawn"), ("P2", "given"))):
            conn.execute(insert(staging["consent"]).values(
                landing_id=consent_lid, record_id=f"c{i}", file_date=date(2025, 1, 1), row_number=i + 1,
                person_ref=person, purpose="tfp_evaluation", status=status,
                recorded_at=datetime(2025, 3, 1, 10)))
        lid = _landing(conn)
        for i, person in enumerate(("P1", "P2")):
            conn.execute(insert(staging["support_attendance"]).values(
                landing_id=lid, record_id=f"s{person}", file_date=date(2025, 1, 1), row_number=i + 1, surname="X",
                date_of_birth=date(1980, 1, 1), provider="Mind", service_type="mentoring",
                start_date=date(2025, 2, 1)))
            conn.execute(insert(links).values(reference_date=D, dataset="support_attendance",
                                              record_id=f"s{person}", person_ref=person, match_probability=0.99,
                                              method="probabilistic"))
    run_category(engine, config, "withdrawn", D, dry_run=False)
    assert _ids(engine) == ["sP2"]
    with engine.connect() as conn:
        assert conn.execute(select(links.c.person_ref)).scalars().all() == ["P2"]


# -- a whole night through `tfp run` (the real DAG) ---------------------------------------------------------

@pytest.mark.slow
def test_a_night_with_support_services_delivers_the_same_bytes_and_reports_the_crosscheck(tmp_path):
    """The same borough's feeds, one night with a config that names support_services and one without: the
    delivered files are byte-identical (the source feeds no criterion and no delivered column), the run report
    of the first holds the cross-check, disclosed, equal to the generator's truth, and nothing personal from
    the support feed reaches the report or the console."""
    import shutil

    from hardening_helpers import files_bytes, leak_pattern, night_root, run_env, tfp_run

    from conftest import make_keys
    from helpers import personal_values
    from tfp_dev.generate import generate

    generated = tmp_path / "generated"
    generate(generated, families=150, seed=2024, on=R, support=True)
    truth = {r["measure"]: int(r["count"]) for r in _read(generated / "truth" / "support_consent.csv")}
    shutil.rmtree(generated / "truth")
    keys = make_keys()
    nights = {}
    for name, overrides in (("with", {"sources": SUPPORT}), ("without", {})):
        root = tmp_path / name
        config = night_root(root, generated, **overrides)
        if name == "without":
            shutil.rmtree(root / "inbound" / "support_services")
        done = tfp_run(config, run_env(root, keys))
        assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
        report = json.loads((root / "work" / "reports" / R.isoformat() / "run_report.json").read_text())
        nights[name] = (root, done, report)
    with_root, with_run, with_report = nights["with"]
    without_root, _, without_report = nights["without"]
    delivered = files_bytes(with_root / "delivered")
    assert len(delivered) >= 6 and delivered == files_bytes(without_root / "delivered")
    assert "support_services" not in without_report
    assert with_report["support_services"] == disclosed(truth, 10, 5)
    assert any(v not in ("0", "[c]") for v in with_report["support_services"].values())  # something shown
    support_files = [f for f in with_report["files"] if f["source"] == "support_services"]
    assert [(f["name"], f["status"]) for f in support_files] == [("attendance_20250331.csv", "staged")]
    assert with_report["linkage"]["support_attendance"]["linked"] > 0
    assert "support_attendance" not in without_report["linkage"]
    # no personal value of any feed (the support feed's included) in the report or the console
    pattern = leak_pattern(personal_values(generated, R))
    for path in (with_root / "work" / "reports").rglob("run_report.*"):
        assert not pattern.search(path.read_bytes()), path.name
    assert not pattern.search((with_run.stdout + with_run.stderr).encode())

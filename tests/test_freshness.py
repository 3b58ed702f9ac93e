"""Feed freshness and volume (issue 14 item 4; contract section 10 ``freshness``).

The rules on a real warehouse (SQLite and PostgreSQL) whose landing log is written as extract, validate and
stage leave it; the check as ``check_inputs`` runs it (warn: logged and returned; fail: FeedOverdue naming
the dataset); the run report's "Feed freshness" section; the config's defaults and refusals; and, through
the real DAG (`tfp run`, dag.test), a stale feed failing a night before package with ``on_overdue: fail``
and the same night delivering with ``warn``, its report showing the feed overdue.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sqlite3
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import insert

from conftest import make_keys
from helpers import make_config, write_config
from tfp import pipeline
from tfp.config import ConfigError, Freshness, load_config
from tfp.errors import FeedOverdue, TfpError
from tfp.feeds import DATASETS, SOURCES, file_name
from tfp.freshness import MIN_HISTORY, assess, check_freshness
from tfp.report import write_run_report
from tfp.statuses import LandingStatus
from tfp.warehouse import connect, landing_log

R = date(2025, 3, 31)
ALL = sorted(DATASETS)
# the datasets of a config without the optional sources (what helpers.make_config writes)
CONFIGURED = sorted(d for d, spec in DATASETS.items() if spec.source in SOURCES)


def _land(engine, dataset: str, file_date: date, rows: int | None = 100, landed_by: date | None = None,
          status: LandingStatus = LandingStatus.STAGED) -> None:
    """A landing-log row as validate and stage leave one (rows_read is what validate recorded)."""
    name = file_name(dataset, file_date)
    with engine.begin() as conn:
        conn.execute(insert(landing_log).values(
            source=DATASETS[dataset].source, dataset=dataset, file_name=name, file_date=file_date,
            sha256=hashlib.sha256(f"{name}{rows}{status}".encode()).hexdigest(), bytes=1000,
            landed_at=datetime(2025, 1, 1, tzinfo=UTC), landed_by_run=landed_by or file_date, status=status,
            rows_read=rows, rows_staged=rows, rows_quarantined=0 if rows is not None else None))


def _all_fresh(engine, on: date = R) -> None:
    for dataset in ALL:
        _land(engine, dataset, on)


# -- the rules, on both databases ------------------------------------------------------------------

def test_defaults_follow_the_contract():
    cfg = Freshness()
    assert (cfg.on_overdue, cfg.volume_factor, cfg.volume_history) == ("warn", 3, 5)
    assert {d: cfg.max_age(d) for d in ALL} == {
        "attendance": 8, "benefits": 35, "cases": 35, "consent": 35, "families": 2, "incidents": 8,
        "needs": 35, "tenancy_events": 35, "treatment_episodes": 35, "mental_health_contacts": 35,
        "support_attendance": 35}
    assert Freshness(max_age_days={"support_attendance": 14}).max_age("support_attendance") == 14
    assert Freshness(max_age_days={"families": 5, "cases": 10}).max_age("families") == 5
    assert Freshness(max_age_days={"cases": 10}).max_age("families") == 2  # an entry replaces its default only


def test_overdue_is_older_than_r_minus_max_age(warehouse_url):
    engine = connect(warehouse_url)
    _land(engine, "families", R - timedelta(days=2))  # the roster's max age exactly: not overdue
    _land(engine, "incidents", R - timedelta(days=9))  # incidents' newest: 9 days old, max 8
    _land(engine, "incidents", R - timedelta(days=20))
    _land(engine, "incidents", R - timedelta(days=2), None, status=LandingStatus.REJECTED)  # no file of the feed
    _land(engine, "cases", R - timedelta(days=35))  # 35 days: on the limit, not overdue
    _land(engine, "benefits", R - timedelta(days=36))  # 36: overdue
    _land(engine, "attendance", R - timedelta(days=2))
    _land(engine, "attendance", R + timedelta(days=1))  # after R: not a file of this night
    report = assess(engine, Freshness(), R, ["families", "incidents", "cases", "benefits", "attendance"])
    assert [(o.dataset, o.newest, o.age_days, o.max_age_days) for o in report.overdue] == [
        ("benefits", R - timedelta(days=36), 36, 35), ("incidents", R - timedelta(days=9), 9, 8)]
    assert report.newest["attendance"] == R - timedelta(days=2)
    assert report.volume == []


def test_a_dataset_with_no_file_is_left_to_check_inputs(warehouse_url):
    engine = connect(warehouse_url)
    _land(engine, "families", R)
    report = assess(engine, Freshness(), R, ["families", "incidents"])
    assert report.newest == {"families": R, "incidents": None} and report.overdue == []
    assert report.to_json()["datasets"]["incidents"] == {"newest": None, "max_age_days": 8}


def test_a_rise_and_a_fall_past_the_factor_are_flagged(warehouse_url):
    engine = connect(warehouse_url)
    for weeks, rows in ((6, 5), (5, 100), (4, 90), (3, 110), (2, 100), (1, 95)):
        _land(engine, "incidents", R - timedelta(weeks=weeks), rows)
        _land(engine, "attendance", R - timedelta(weeks=weeks), rows)
        _land(engine, "cases", R - timedelta(weeks=weeks), rows)
    _land(engine, "incidents", R, 301)  # > 3 x median 100 of the last five (the 5 rows of week 6 is older)
    _land(engine, "attendance", R, 33)  # < 100 / 3
    _land(engine, "cases", R, 299)  # within the factor
    _land(engine, "cases", R - timedelta(days=1), 1000, landed_by=R - timedelta(days=1))  # an earlier night's file
    report = assess(engine, Freshness(), R, ALL)
    assert [(v.dataset, v.file_date, v.rows, v.median, v.earlier_files, v.change) for v in report.volume] == [
        ("attendance", R, 33, 100.0, 5, "fall"), ("incidents", R, 301, 100.0, 5, "rise")]
    # a wider factor lets both through
    assert assess(engine, Freshness(volume_factor=3.5), R, ALL).volume == []
    # and the flags say names, dates and counts only
    assert report.warnings()[-1] == ("feed volume: incidents file of 2025-03-31 has 301 rows, a rise against the "
                                     "median 100 of its last 5 files")


def test_no_volume_flag_without_enough_history(warehouse_url):
    engine = connect(warehouse_url)
    for days in range(1, MIN_HISTORY):  # two earlier files only
        _land(engine, "families", R - timedelta(days=days), 100)
    _land(engine, "families", R - timedelta(days=3), None, status=LandingStatus.REJECTED)  # no count
    _land(engine, "families", R, 1)
    assert assess(engine, Freshness(), R, ["families"]).volume == []
    _land(engine, "families", R - timedelta(days=4), 100)  # the third
    assert [v.rows for v in assess(engine, Freshness(), R, ["families"]).volume] == [1]


def test_check_warns_or_fails_as_configured(warehouse_url, caplog):
    engine = connect(warehouse_url)
    _all_fresh(engine)
    with engine.begin() as conn:  # the roster's file of R never came: its newest is R-3
        conn.execute(landing_log.delete().where(landing_log.c.dataset == "families"))
    _land(engine, "families", R - timedelta(days=3))
    with caplog.at_level(logging.WARNING, logger="tfp.freshness"):
        report = check_freshness(engine, Freshness(), R, ["police"])
    assert [o.dataset for o in report.overdue] == ["families"]
    assert "feed overdue: families newest file 2025-03-28 is 3 days old (max age 2 days)" in caplog.text
    assert sorted(report.newest) == ["families", "incidents"]  # the roster and the run's sources only
    with pytest.raises(FeedOverdue) as info:
        check_freshness(engine, Freshness(on_overdue="fail"), R, ["police"])
    assert isinstance(info.value, TfpError) and info.value.overdue == ["families"]
    assert str(info.value) == ("feeds overdue on 2025-03-31: families (newest file 2025-03-28, max age 2 days); "
                               "nothing is packaged or delivered for this night")
    assert "freshness.max_age_days" in info.value.hint
    # a generous max age: nothing to say
    assert check_freshness(engine, Freshness(on_overdue="fail", max_age_days={"families": 3}), R, ["police"]).overdue == []


# -- check_inputs and the run report -----------------------------------------------------------------

def test_check_inputs_returns_the_flags_and_the_report_shows_them(tmp_path, warehouse_url):
    config = make_config(tmp_path, warehouse_url)
    engine = connect(warehouse_url)
    _all_fresh(engine)
    with engine.begin() as conn:
        conn.execute(landing_log.delete().where(landing_log.c.dataset == "incidents"))
    _land(engine, "incidents", R - timedelta(days=10))
    out = pipeline.check_inputs(str(tmp_path / "tfp.yaml"), R, ["police", "dwp"])
    assert out["datasets_checked"] == 3 and out["datasets_overdue"] == 1 and out["files_volume_flagged"] == 0
    assert out["freshness"]["overdue"] == [{"dataset": "incidents", "newest": "2025-03-21", "max_age_days": 8,
                                            "age_days": 10}]
    json.dumps(out)  # an XCom: plain JSON

    path = write_run_report(engine, config, R, {})
    report = json.loads(path.read_text())
    fresh = report["freshness"]
    assert fresh["on_overdue"] == "warn" and [o["dataset"] for o in fresh["overdue"]] == ["incidents"]
    assert sorted(fresh["datasets"]) == CONFIGURED  # every dataset of the config's sources, as the night uses them
    page = (path.parent / "run_report.html").read_text(encoding="utf-8")
    section = page[page.index("<h2 id=feed-freshness>Feed freshness</h2>"):page.index("<h2>Files</h2>")]
    assert "1 feed(s) overdue, 0 file(s) with unusual row counts" in section
    assert "<td>incidents</td><td>2025-03-21</td><td>8</td><td><strong>OVERDUE</strong> (10 days old)" in section


def test_check_inputs_fails_an_overdue_night_with_on_overdue_fail(tmp_path, warehouse_url):
    write_config(tmp_path, warehouse_url, freshness={"on_overdue": "fail", "max_age_days": {"benefits": 7}})
    engine = connect(warehouse_url)
    _all_fresh(engine, R - timedelta(days=1))
    _land(engine, "families", R)
    with engine.begin() as conn:
        conn.execute(landing_log.delete().where(landing_log.c.dataset == "benefits"))
    _land(engine, "benefits", R - timedelta(days=8))
    with pytest.raises(FeedOverdue, match=r"feeds overdue on 2025-03-31: benefits \(newest file 2025-03-23"):
        pipeline.check_inputs(str(tmp_path / "tfp.yaml"), R, ["dwp", "police"])
    # a run leaving dwp out does not check it
    assert pipeline.check_inputs(str(tmp_path / "tfp.yaml"), R, ["police"])["datasets_overdue"] == 0


def test_a_fresh_night_reports_nothing(tmp_path, sqlite_url):
    config = make_config(tmp_path, sqlite_url)
    engine = connect(sqlite_url)
    _all_fresh(engine)
    out = pipeline.check_inputs(str(tmp_path / "tfp.yaml"), R, ["police"])
    assert (out["datasets_overdue"], out["files_volume_flagged"]) == (0, 0)
    path = write_run_report(engine, config, R, {})
    page = (path.parent / "run_report.html").read_text(encoding="utf-8")
    assert "Every feed is within its max age" in page and "freshness-flags" not in page


# -- config ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("freshness", "message"), [
    ({"max_age_days": {"crimes": 7}}, "freshness.max_age_days: unknown dataset(s) crimes; the datasets are "),
    ({"max_age_days": {"cases": 0}}, "freshness.max_age_days.cases"),
    ({"on_overdue": "stop"}, "freshness.on_overdue"),
    ({"volume_factor": 1}, "freshness.volume_factor"),
    ({"volume_history": 2}, "freshness.volume_history"),
    ({"cadence": "weekly"}, "freshness.cadence: unknown key"),
])
def test_a_bad_freshness_section_is_refused_naming_the_key(tmp_path, freshness, message):
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, "sqlite:///w.db", freshness=freshness))
    assert message in str(info.value)


def test_the_contracts_section_loads_and_is_optional(tmp_path):
    config = load_config(write_config(tmp_path, "sqlite:///w.db", freshness={
        "on_overdue": "warn", "max_age_days": {"families": 2, "incidents": 8, "attendance": 8}, "volume_factor": 3}))
    assert config.freshness.max_age("tenancy_events") == 35
    assert load_config(write_config(tmp_path, "sqlite:///w.db")).freshness == Freshness()


# -- through the real DAG ------------------------------------------------------------------------------

def _states(home: Path) -> dict[str, str]:
    with sqlite3.connect(f"file:{home / 'airflow.db'}?mode=ro", uri=True) as conn:
        return dict(conn.execute("SELECT task_id, state FROM task_instance WHERE run_id = "
                                 "(SELECT run_id FROM dag_run ORDER BY id DESC LIMIT 1)"))


@pytest.mark.slow
def test_a_stale_feed_fails_the_night_with_fail_and_is_reported_with_warn(tmp_path_factory, tmp_path):
    from hardening_helpers import files_bytes, make_borough, night_root, run_env, tfp_run

    borough = make_borough(tmp_path_factory.mktemp("borough"))
    root = tmp_path / "night"
    config = night_root(root, borough, freshness={"on_overdue": "fail"})
    stale = R - timedelta(days=11)  # police's incidents stopped 11 days ago (max age 8)
    police = root / "inbound" / "police"
    shutil.move(police / f"incidents_{R:%Y%m%d}.csv", police / f"incidents_{stale:%Y%m%d}.csv")
    env = run_env(root, make_keys())

    failed = tfp_run(config, env)
    out = failed.stdout + failed.stderr
    assert failed.returncode == 1, out[-4000:]
    states = _states(root / "airflow")
    assert states["check_inputs"] == "failed" and states["package"] == "upstream_failed", states
    assert not (root / "delivered").exists() or files_bytes(root / "delivered") == {}
    assert "feeds overdue on 2025-03-31: incidents (newest file 2025-03-20, max age 8 days)" in out, out[-4000:]

    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    raw["freshness"]["on_overdue"] = "warn"
    config.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    warned = tfp_run(config, env)
    out = warned.stdout + warned.stderr
    assert warned.returncode == 0, out[-4000:]
    assert _states(root / "airflow")["deliver"] == "success"
    assert len(files_bytes(root / "delivered")) == 6  # four CSVs, the manifest, its signature
    assert "feed overdue: incidents newest file 2025-03-20 is 11 days old (max age 8 days)" in out, out[-4000:]
    report = json.loads((root / "work" / "reports" / R.isoformat() / "run_report.json").read_text())
    assert [o["dataset"] for o in report["freshness"]["overdue"]] == ["incidents"]
    page = (root / "work" / "reports" / R.isoformat() / "run_report.html").read_text(encoding="utf-8")
    assert "1 feed(s) overdue" in page

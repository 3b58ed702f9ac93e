"""The one stage shape (issue 16 item 2): a frozen RunContext built by open_context, run(ctx) in every
stage module, and StageResults whose XComs are plain JSON and read back as the same typed results.
Real config, real SQLite warehouse, real stages."""

from __future__ import annotations

import dataclasses
import importlib
import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from helpers import write_config, write_feed
from tfp import pipeline
from tfp.config import ConfigError
from tfp.context import (
    CriteriaResult,
    DeliverResult,
    LinkResult,
    PackageResult,
    RetentionResult,
    StageResult,
    open_context,
    result_from_xcom,
)
from tfp.warehouse import landing_log

R = date(2025, 1, 31)
FIXED = datetime(2025, 2, 1, 1, 2, 3, tzinfo=UTC)
HEADER = ["record_id", "person_ref", "need", "start_date", "end_date"]
STAGES = ("extract", "validate", "stage", "link", "consent", "criteria", "package", "deliver", "report", "retention")


def test_every_stage_module_is_named_as_its_task_and_has_run():
    for name in STAGES:
        assert callable(importlib.import_module(f"tfp.{name}").run), name


def test_the_context_is_frozen_and_reads_keys_only_when_asked(tmp_path, sqlite_url, monkeypatch):
    for name in ("TFP_PSEUDONYM_KEY", "TFP_LINKAGE_KEY", "TFP_SIGNING_KEY"):
        monkeypatch.delenv(name, raising=False)
    ctx = open_context(write_config(tmp_path, sqlite_url), R, "children_services")
    assert (ctx.reference_date, ctx.source, ctx.config.local_authority.code) == (R, "children_services", "E09000031")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.reference_date = date(2025, 2, 1)  # type: ignore[misc]
    with pytest.raises(ConfigError, match="TFP_PSEUDONYM_KEY"):  # extract and validate never need them
        ctx.keys  # noqa: B018


def test_extract_runs_on_the_context_with_its_clock(tmp_path, sqlite_url):
    config = write_config(tmp_path, sqlite_url)
    write_feed(tmp_path, "children_services", "needs_20250101.csv", HEADER, [["r1", "P1", "early_help", "2024-12-01", ""]])
    ctx = open_context(config, R, "children_services", clock=lambda: FIXED)
    result = importlib.import_module("tfp.extract").run(ctx)
    assert (result.stage, result.source, result.count("landed")) == ("extract", "children_services", 1)
    xcom = result.to_xcom()
    assert json.loads(json.dumps(xcom)) == xcom and all(type(v) is int for v in xcom.values())
    with ctx.warehouse.connect() as conn:
        landed_at = conn.execute(select(landing_log.c.landed_at)).scalar_one()
    assert landed_at.replace(tzinfo=UTC) == FIXED
    # the task function is the same stage through pipeline: a second run finds the file landed
    assert pipeline.extract(str(config), R, "children_services")["landed"] == 0


def test_a_per_source_stage_refuses_a_context_without_a_source(tmp_path, sqlite_url):
    ctx = open_context(write_config(tmp_path, sqlite_url), R)
    for name in ("extract", "validate", "stage"):
        with pytest.raises(ValueError, match="source"):
            importlib.import_module(f"tfp.{name}").run(ctx)


def test_results_go_through_xcom_and_come_back_typed():
    results = [
        LinkResult.of({"needs": {"linked": 3, "unlinked": 1}}),
        CriteriaResult.of({"all": {"families_assessed": 4, "families_eligible": 1},
                           "kept": {"families_assessed": 3, "families_eligible": 1}}),
        PackageResult(stage="package", outbox=Path("/w/outbox/2025-01-31"), files=("a.csv", "m.json"),
                      counts={"persons_submitted": 7, "withdrawals": 1},
                      published_summary={"families_eligible": {"all": "[c]"}}),
        DeliverResult(stage="deliver", counts={"uploaded": 0, "skipped": 5}, dry_run=True),
        DeliverResult(stage="deliver", counts={"uploaded": 2, "skipped": 3}, delivered=("a.csv", "m.json")),
        RetentionResult(stage="retention", counts={"found": 2, "deleted": 2}, category="quarantine",
                        cutoff="2024-11-01", unit="rows"),
    ]
    for result in results:
        xcom = result.to_xcom()
        assert json.loads(json.dumps(xcom)) == xcom
        back = result_from_xcom(result.stage, xcom)
        assert type(back) is type(result) and back.to_xcom() == xcom
    assert results[0].to_xcom() == {"records_linked": 3, "records_unlinked": 1}
    assert results[0].link_rate("needs") == 0.75
    assert results[1].to_xcom()["kept"]["families_assessed"] == 3 and results[1].count("families_assessed") == 3
    assert results[2].to_xcom()["files"] == 2 and results[3].to_xcom()["dry_run"] == 1
    assert results[4].to_xcom()["delivered"] == ["a.csv", "m.json"]
    assert result_from_xcom("consent", {"persons": 4, "kept": 3, "excluded": 1}) == \
        StageResult(stage="consent", counts={"persons": 4, "kept": 3, "excluded": 1})
    assert result_from_xcom("deliver", None).count("uploaded") == 0  # a task that left no XCom counts nothing


def test_retention_runs_a_category_and_its_finish_reads_the_results(tmp_path, sqlite_url):
    """The retention DAG's two task functions: a category's XCom is what its finish writes to the report."""
    config = str(write_config(tmp_path, sqlite_url))
    day = date(2025, 6, 30)
    outcome = pipeline.retention(config, day, "quarantine", True)
    assert set(outcome) == {"cutoff", "found", "deleted", "unit"} and outcome["found"] == 0
    finished = pipeline.retention_finish(config, day, True, {"quarantine": outcome})
    report = json.loads(Path(finished["report"]).read_text())
    assert report == {"run_date": "2025-06-30", "dry_run": True, "categories": {"quarantine": outcome}}
    with pytest.raises(ValueError, match="category"):
        importlib.import_module("tfp.retention").run(open_context(config, day))

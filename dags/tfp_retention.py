"""tfp_retention: destroy personal data when its time is up or consent is withdrawn. Wiring only."""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import DAG, CronDataIntervalTimetable, Param, TaskGroup, get_current_context, task

from tfp.notify import notify_failure

CATEGORIES = {
    "landing_copies": "Encrypted landing copies older than `retention.landing_days`; each copy's key is "
                      "destroyed with it.",
    "quarantine": "Quarantined rows older than `retention.quarantine_days`.",
    "staging": "Staged partner records whose dates are all older than `retention.staging_months`.",
    "withdrawn": "Partner records, links and needs of everyone whose consent is withdrawn.",
    "programme_end": "On or after `retention.delete_all_after`: every personal record, landing copy and "
                     "outbox file.",
}

DOC = """
### tfp_retention

Daily, for the run's **reference date** (its logical date, Europe/London). Each task group deletes one category of personal data, then counts it again and **fails if
anything past its cutoff remains**. The deletion log (warehouse table `deletion_log`) and
`work_dir/reports/<date>/retention_report.json` record counts only.

Trigger with `dry_run: true` to see what would be deleted without deleting anything.
A failed group means deletion was incomplete: read its log, fix the cause, clear the task.
It refuses to run when the config's retention periods are shorter than the criteria need.
"""


def _run() -> tuple[str, object, bool]:
    from tfp.pipeline import reference_date_of

    context = get_current_context()
    config = context["params"]["config"]
    if not config:
        raise ValueError("no config: set the TFP_CONFIG environment variable or the run's `config` param")
    return config, reference_date_of(context["logical_date"]), bool(context["params"]["dry_run"])


with DAG(
    dag_id="tfp_retention",
    description="Destroy personal data on time and on withdrawal; a deletion log with counts only",
    schedule=CronDataIntervalTimetable("0 5 * * *", timezone="Europe/London"),
    start_date=pendulum.datetime(2025, 1, 1, tz="Europe/London"),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "tfp-data-team", "retries": 0, "execution_timeout": timedelta(hours=1),
                  "on_failure_callback": notify_failure},
    tags=["tfp", "retention"],
    doc_md=DOC,
    params={
        "config": Param(os.environ.get("TFP_CONFIG", ""), type="string",
                        description="Path of the tfp config file (defaults to $TFP_CONFIG)"),
        "dry_run": Param(False, type="boolean", description="Report what would be deleted; delete nothing"),
    },
) as dag:
    outcomes = {}
    previous = None
    for category, doc in CATEGORIES.items():
        with TaskGroup(group_id=category, tooltip=doc) as group:
            group.doc_md = doc

            @task(task_id="delete")
            def delete(category: str = category) -> dict:
                from tfp import pipeline

                return pipeline.retention(*_run()[:2], category, _run()[2])

            outcomes[category] = delete()
        if previous is not None:
            previous >> group  # one category at a time: deletions never race each other
        previous = group

    @task
    def finish(outcomes: dict) -> dict:
        from tfp import pipeline

        config, run_date, dry_run = _run()
        return pipeline.retention_finish(config, run_date, dry_run, outcomes)

    previous >> finish(outcomes)

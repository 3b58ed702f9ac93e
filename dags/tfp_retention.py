"""tfp_retention: destroy personal data when its time is up or consent is withdrawn. Wiring only."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, CronDataIntervalTimetable, Param, TaskGroup, get_current_context, task

from tfp.deployment import boroughs
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

**The config** is the deployment's, never the trigger form's: `TFP_CONFIG` (environment variable, or
the Airflow Variable only Op and Admin can set) for `tfp_retention`; the file of `TFP_BOROUGHS_DIR`
a `tfp_retention__<la_code>` DAG was made from. A run whose conf names a config is refused.
"""


def build(dag_id: str, bound_config: str | None = None, la_code: str | None = None) -> DAG:
    """The retention DAG for the deployment's config (``TFP_CONFIG``, read when a task runs) or for one
    borough's file (``bound_config``, fixed when the DAG file is parsed). Never a trigger's choice."""

    def _run() -> tuple[str, object, bool]:
        from tfp import deployment
        from tfp.pipeline import reference_date_of

        context = get_current_context()
        deployment.refuse_chosen_config(context["dag_run"].conf, context["params"])
        config = bound_config or deployment.config_path()
        return config, reference_date_of(context["logical_date"]), bool(context["params"]["dry_run"])

    def alert(context) -> None:
        notify_failure(context, bound_config)

    with DAG(
        dag_id=dag_id,
        description="Destroy personal data on time and on withdrawal; a deletion log with counts only"
                    + (f" ({la_code})" if la_code else ""),
        schedule=CronDataIntervalTimetable("0 5 * * *", timezone="Europe/London"),
        start_date=pendulum.datetime(2025, 1, 1, tz="Europe/London"),
        catchup=False,
        max_active_runs=1,
        default_args={"owner": "tfp-data-team", "retries": 0, "execution_timeout": timedelta(hours=1),
                      "on_failure_callback": alert},
        tags=["tfp", "retention", *([la_code] if la_code else [])],
        doc_md=DOC,
        params={
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

                    config, run_date, dry_run = _run()
                    return pipeline.retention(config, run_date, category, dry_run)

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
    return dag


dag = build("tfp_retention")
for _code, _path in boroughs().items():
    globals()[f"dag_{_code}"] = build(f"tfp_retention__{_code}", _path, _code)

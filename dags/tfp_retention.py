"""tfp_retention: destroy personal data when its time is up or consent is withdrawn. Wiring only."""

from __future__ import annotations

from datetime import date, timedelta

from airflow.sdk import DAG, chain, task, task_group

from tfp_airflow import install
from tfp_airflow.dag_common import borough_dags, dry_run_param, header, param, run_inputs

# a task reads its keys, TFP_CONFIG and its SFTP Connections through Airflow (tfp.lookups)
install()

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

    def _run() -> tuple[str, date, bool]:
        config, reference_date = run_inputs(bound_config)
        return config, reference_date, bool(param("dry_run"))

    with DAG(dag_id, **header(
        kind="retention",
        cron="0 5 * * *",
        description="Destroy personal data on time and on withdrawal; a deletion log with counts only",
        doc_md=DOC,
        execution_timeout=timedelta(hours=1),
        bound_config=bound_config,
        la_code=la_code,
        params={"dry_run": dry_run_param("Report what would be deleted; delete nothing")},
    )) as dag:
        @task
        def delete(category: str) -> dict:
            from tfp import pipeline

            config, reference_date, dry_run = _run()
            return pipeline.retention(config, reference_date, category, dry_run)

        @task_group
        def deletion(category: str):
            """Delete one category of personal data, then count it again: fail if anything is left."""
            return delete(category)

        @task
        def finish(outcomes: dict) -> dict:
            from tfp import pipeline

            config, reference_date, dry_run = _run()
            return pipeline.retention_finish(config, reference_date, dry_run, outcomes)

        outcomes = {category: deletion.override(group_id=category, tooltip=doc, doc_md=doc)(category)
                    for category, doc in CATEGORIES.items()}
        # one category at a time: deletions never race each other
        chain(*outcomes.values(), finish(outcomes))
    return dag


dag = build("tfp_retention")
globals().update(borough_dags(build, "tfp_retention"))

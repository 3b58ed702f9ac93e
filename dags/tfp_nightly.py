"""tfp_nightly: partner feeds in, a signed and encrypted submission out. Wiring only; the work is in `tfp`."""

from __future__ import annotations

from datetime import date, timedelta

from airflow.sdk import DAG, Param, TaskGroup, TriggerRule, task, task_group

from tfp.feeds import ALL_SOURCES
from tfp_airflow import install, lineage
from tfp_airflow.dag_common import (
    borough_dags,
    dry_run_param,
    header,
    param,
    parse_time_config,
    partner_layout,
    run_inputs,
    warn_flags,
)

# a task reads its keys, TFP_CONFIG and its SFTP Connections through Airflow (tfp.lookups)
install()
# each stage's files and tables become its task's OpenLineage inputs and outputs, when the provider is configured
lineage.install()

DOC = """
### tfp_nightly

Runs for one **reference date**: the run's logical date (Europe/London). A scheduled run starts
after that day has ended; backfills and manual runs follow the same rule, and a backfill of an old
date reproduces what that night produced.

1. **per source** (`police`, `probation`, ...): `extract` lands each new feed file once (encrypted),
   `validate` runs the Great Expectations suite and quarantines bad rows, `stage` loads the good rows.
2. `check_inputs` fails the night, naming the datasets, when the roster or a dataset of a source in
   the run has no file dated on or before the reference date (landed tonight or before): nothing is
   packaged or delivered from a night without input. It then checks each feed's freshness (its newest
   file against `freshness.max_age_days`) and the rows of tonight's files against their recent median:
   flags are task warnings in its log, in its XCom and in the run report's *Feed freshness* section,
   and a night that goes on with flags sends a warning alert (dataset names and counts only);
   with `freshness.on_overdue: fail` an overdue feed fails the night here, naming it.
   `link` partner records to roster persons, `consent` keeps only people whose data may be used,
   `criteria` marks the six headline problems per family.
3. `package` writes the de-identified CSVs, encrypted and signed; `deliver` sends them; `report`
   writes `work_dir/reports/<date>/run_report.json` and `.html` (counts only) and the night's
   Great Expectations Data Docs (no values); open them from Browse → tfp reports.

**When a `validate` task fails** a file broke a file-level rule: the log names the file and the rule.
Ask the partner to re-send it, then clear the run. Nothing is delivered from a failed run.

**Manual runs** take params: `reference_date` picks the night (a date that already has a run can be
run again this way); `dry_run` does everything but deliver; `sources` limits which partners' feeds
are pulled and validated (a partner re-sent a file: pick that partner). `choose_sources` skips the
other sources' groups, which show as *skipped*, and the night uses what they staged before.

**Partners.** A source with several partners (`partners:` in the config) has one group per partner inside
its source's group (`housing.clarion.extract`, ...); `sources` then also takes a partner id, to pull that
partner alone. A source in the short form is one partner named after the source, with the groups above.
When a partner has an `outbound` path, `feedback` (after `link`) sends it `tfp_feedback_<partner>_<date>.csv`
and `.txt`: its files' fate, its quarantined record_ids by rule, its link rate; once per landed file, never
in a dry run.

**The config** is the deployment's, never the trigger form's: `TFP_CONFIG` (environment variable, or
the Airflow Variable only Op and Admin can set) for `tfp_nightly`; the file of `TFP_BOROUGHS_DIR`
a `tfp_nightly__<la_code>` DAG was made from. A run whose conf names a config is refused.
"""

# Network tasks retry; they run in Airflow's default pool, which always exists: a task in a pool that
# does not exist stays "scheduled" for ever, and a task cannot look pools up (Airflow 3's Task SDK has no
# pool API), so check_setup could not say why. One run has at most six SFTP sessions (max_active_runs=1).
NETWORK_RETRIES = {"retries": 3, "retry_delay": timedelta(minutes=2), "retry_exponential_backoff": True,
                   "max_retry_delay": timedelta(minutes=30)}

GROUP_DOC = ("Feeds from **{source}**. A failed `validate` names the file and the rule it broke; a failed "
             "`extract` is the transport: a missing or unreadable folder fails at once (fix the config or the "
             "folder's rights), an SFTP error retries.")
PARTNER_DOC = "Feeds from **{partner}**, a partner of {source}. " + GROUP_DOC.split(". ", 1)[1]


def _fail_fast(step, *args):
    """Run a tfp step; a local set-up error (a drop folder missing or unreadable) fails the task at once,
    without the retries meant for the network."""
    from airflow.sdk.exceptions import AirflowFailException

    from tfp.extract import SourceUnavailable

    try:
        return step(*args)
    except SourceUnavailable as e:
        raise AirflowFailException(str(e)) from e  # the alert quotes the cause, a tfp error


def _quiet_gx() -> None:
    """Great Expectations' own INFO chatter stays out of the task log; tfp logs the counts."""
    import logging
    import sys

    from tfp_airflow.heap import long_lived

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    if "great_expectations.data_context.types.base" not in sys.modules:
        with long_lived():  # GX, pandas, numpy and scipy: imported once per process, kept until it ends
            import great_expectations.data_context.types.base  # noqa: F401 - it sets its own logger to INFO

    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)


def build(dag_id: str, bound_config: str | None = None, la_code: str | None = None) -> DAG:
    """The nightly DAG for the deployment's config (``TFP_CONFIG``, read when a task runs) or for one
    borough's file (``bound_config``, fixed when the DAG file is parsed). Never a trigger's choice."""

    def _run() -> tuple[str, date]:
        return run_inputs(bound_config)

    parsed = parse_time_config(bound_config)  # the borough's file or TFP_CONFIG from the environment, if any
    layout = partner_layout(parsed)  # {source: its partner ids}; [source] in the short form
    # feedback to partners (contract section 10): a task only when some partner has an outbound path
    feedback_wanted = parsed is not None and any(p.outbound for p in parsed.all_partners())
    partner_ids = [p for source in ALL_SOURCES for p in layout[source] if p != source]

    with DAG(dag_id, **header(
        kind="nightly",
        cron="0 1 * * *",
        description="Troubled Families Programme evaluation: ingest, link, assess, de-identify, deliver",
        doc_md=DOC,
        execution_timeout=timedelta(hours=2),
        bound_config=bound_config,
        la_code=la_code,
        params={
            "reference_date": Param(None, type=["null", "string"], format="date",
                                    description="For a manual run: the night to run (YYYY-MM-DD). Empty: the "
                                                "run's logical date in Europe/London, as scheduled runs and "
                                                "backfills do"),
            "dry_run": dry_run_param("Run everything but deliver nothing"),
            "sources": Param(list(ALL_SOURCES), type="array",
                             items={"type": "string", "enum": [*ALL_SOURCES, *partner_ids]},
                             description="Partners whose feeds this run pulls and validates (a source: all its "
                                         "partners; or a partner id); the others are skipped and their earlier "
                                         "staged rows are used (an optional source the config leaves out, such "
                                         "as health, is always skipped)"),
        },
    )) as dag:
        @task
        def check_setup() -> dict:
            from tfp import pipeline

            return _fail_fast(pipeline.check_setup, *_run(), param("sources"))

        @task.branch
        def choose_sources() -> list[str]:
            """The source groups this run pulls (a manual run's ``sources``); every task of the others is
            skipped here, so their groups show as skipped and the night goes on with what they staged before."""
            from tfp import pipeline

            config_path, _ = _run()
            chosen = param("sources")
            runs = set(pipeline.chosen_sources(config_path, chosen))  # of the config's sources
            groups = []
            for source in ALL_SOURCES:
                if source not in runs:
                    continue
                if layout[source] == [source]:
                    groups.append(source)
                else:
                    groups += [f"{source}.{p}" for p in layout[source] if source in chosen or p in chosen]
            return groups

        @task(**NETWORK_RETRIES)
        def extract(source: str, partner: str | None = None) -> dict:
            from tfp import pipeline

            return _fail_fast(pipeline.extract, *_run(), source, partner)

        @task
        def validate(source: str, partner: str | None = None) -> dict:
            from tfp import pipeline

            _quiet_gx()
            return pipeline.validate(*_run(), source, partner)

        @task
        def stage(source: str, partner: str | None = None) -> dict:
            from tfp import pipeline

            return pipeline.stage(*_run(), source, partner)

        @task_group
        def feeds(source: str, partner: str | None = None) -> None:
            """One partner's feeds: land each new file, validate it, stage its good rows."""
            extract(source, partner) >> validate(source, partner) >> stage(source, partner)

        def source_group(source: str):
            """The source's chain (short form), or a group of one chain per partner."""
            tooltip = f"Land, validate and stage the {source} feeds"
            if layout[source] == [source]:
                return feeds.override(group_id=source, tooltip=tooltip, doc_md=GROUP_DOC.format(source=source))(source)
            with TaskGroup(group_id=source, tooltip=tooltip) as group:
                for partner in layout[source]:
                    feeds.override(group_id=partner, tooltip=f"Land, validate and stage {partner}'s {source} feeds",
                                   doc_md=PARTNER_DOC.format(source=source, partner=partner))(source, partner)
            return group

        @task(trigger_rule=TriggerRule.NONE_FAILED)  # a source left out of a manual run is skipped, not failed
        def check_inputs() -> dict:
            """No silent partial night: the roster and every dataset of the run's sources have a file. Feeds
            flagged overdue or out of line are task warnings and, when the night goes on, a warning alert."""
            from tfp import pipeline

            result = pipeline.check_inputs(*_run(), param("sources"))
            warn_flags(result, bound_config, la_code)
            return result

        @task
        def link() -> dict:
            from tfp import pipeline

            return pipeline.link(*_run())

        @task(**NETWORK_RETRIES)
        def feedback() -> dict:
            """Each partner with an outbound path: its files' fate, its quarantined record_ids and its link
            rate, once per landed file; nothing in a dry run."""
            from tfp import pipeline

            return pipeline.feedback(*_run(), dry_run=bool(param("dry_run")))

        @task
        def consent() -> dict:
            from tfp import pipeline

            return pipeline.consent(*_run())

        @task
        def criteria() -> dict:
            from tfp import pipeline

            return pipeline.criteria(*_run())

        @task
        def package() -> dict:
            from tfp import pipeline

            return pipeline.package(*_run())

        @task(execution_timeout=timedelta(minutes=30), **NETWORK_RETRIES)
        def deliver() -> dict:
            from tfp import pipeline

            return pipeline.deliver(*_run(), dry_run=bool(param("dry_run")))

        @task
        def report(linked: dict, consented: dict, assessed: dict, packaged: dict, delivered: dict) -> dict:
            from airflow.sdk import get_current_context

            from tfp import pipeline
            from tfp_airflow.callbacks import run_of

            counts = {"link": linked, "consent": consented, "criteria": assessed, "package": packaged,
                      "deliver": delivered}
            return pipeline.report(*_run(), counts, run_of(get_current_context()))

        groups = [source_group(source) for source in ALL_SOURCES]
        linked = link()
        check_setup() >> choose_sources() >> groups >> check_inputs() >> linked
        consented = consent()
        linked >> consented
        if feedback_wanted:  # beside the night's main line: a partner's server down does not hold the delivery
            linked >> feedback()
        assessed = criteria()
        consented >> assessed
        packaged = package()
        assessed >> packaged
        delivered = deliver()
        packaged >> delivered
        report(linked, consented, assessed, packaged, delivered)
    return dag


dag = build("tfp_nightly")
globals().update(borough_dags(build, "tfp_nightly"))

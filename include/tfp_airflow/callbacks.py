"""What a failed task does last (the failed night's run report, then the alert), and the alerts over SMTP:
the failure alert (an Airflow ``on_failure_callback``) and the warning alert of a night that delivers
with feeds flagged; tfp.notify writes both, this module finds the Connection and sends.

Each borough has its own alerts: a ``tfp_nightly__<la_code>`` DAG sends through the Connection
``tfp_alerts__<la_code>`` when it is defined, else through the deployment's ``tfp_alerts``
(the base id can be changed with ``TFP_ALERT_CONN_ID``).
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def unwrap(error: BaseException | None) -> BaseException | None:
    """The error an alert describes: for an ``AirflowFailException`` raised to stop retries, its cause
    (a tfp error, whose message the alert quotes), else the error itself."""
    from airflow.sdk.exceptions import AirflowFailException

    if isinstance(error, AirflowFailException) and error.__cause__ is not None:
        return error.__cause__
    return error


def alert_conn_ids(la_code: str | None) -> list[str]:
    """The Connections an alert may go through, first found wins: the borough's own, then the deployment's."""
    base = os.environ.get("TFP_ALERT_CONN_ID", "tfp_alerts")
    return [f"{base}__{la_code}", base] if la_code else [base]


def _alert_connection(la_code: str | None, what: str):
    """(conn id, recipients, sender) of the first alert Connection defined with a ``to``; None: alerts off."""
    from airflow.sdk import Connection

    for conn_id in alert_conn_ids(la_code):
        try:
            conn = Connection.get(conn_id)
        except Exception:
            continue
        extra = conn.extra_dejson or {}
        if not extra.get("to"):
            log.warning("alert connection %s has no `to` in its extra: %s not sent", conn_id, what)
            return None
        return conn_id, extra["to"], extra.get("from_email")
    log.warning("no alert connection %s: %s not sent", " or ".join(alert_conn_ids(la_code)), what)
    return None


def notify_failure(context, config_path: str | None = None, la_code: str | None = None) -> None:
    """Airflow on_failure_callback: e-mail an alert through the borough's or the deployment's alert Connection.

    ``config_path`` and ``la_code`` are a borough DAG's own; without them, the deployment's (``TFP_CONFIG``,
    ``tfp_alerts``). The Connection holds ``from_email`` and ``to`` in its extra. Without it alerts are off
    and the failure shows in the UI only.
    """
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    from tfp.notify import failure_summary, run_reference_date, weak_disclosure_of

    found = _alert_connection(la_code, "failure alert")
    if found is None:
        return
    conn_id, to, sender = found
    ti = context["ti"]
    subject, body = failure_summary(ti.dag_id, ti.task_id, run_reference_date(context),
                                    unwrap(context.get("exception")), weak_disclosure=weak_disclosure_of(config_path))
    SmtpNotifier(to=to, from_email=sender, subject=subject, html_content=body, smtp_conn_id=conn_id).notify(context)


def run_of(context) -> dict[str, str]:
    """The run's id and start time (ISO 8601), for the run report's header. The start is when this run's
    check_setup began (its XCom): a run made by ``dag.test()`` (``tfp run``) carries its logical date as
    its start date. Without that XCom (check_setup itself failed), the failing task's start stands in."""
    dag_run = context.get("dag_run")
    ti = context.get("ti")
    started = None
    try:
        setup = ti.xcom_pull(task_ids="check_setup") if hasattr(ti, "xcom_pull") else None
    except Exception:  # noqa: BLE001 - the start time is a convenience; never fail the task or its callback
        setup = None
    if isinstance(setup, dict) and setup.get("started_at"):
        started = str(setup["started_at"])
    else:
        when = getattr(ti, "start_date", None) or getattr(dag_run, "start_date", None)
        started = when.isoformat() if when else None
    return {"run_id": str(context.get("run_id") or getattr(dag_run, "run_id", "") or ""),
            **({"started_at": started} if started else {})}


def report_failure(context, config_path: str | None = None) -> None:
    """Airflow on_failure_callback of tfp_nightly's tasks: the night's run report, status failed, naming
    the task and quoting only a tfp error's safe message (tfp.pipeline.report_failure). Never raises: a
    report that cannot be written is logged (its error's class only) and the alert still goes."""
    from tfp import deployment, pipeline
    from tfp.notify import run_reference_date

    reference_date = run_reference_date(context)
    run_after = getattr(context.get("dag_run"), "run_after", None)
    if reference_date is None and run_after is not None:  # a run triggered without a logical date
        from tfp.pipeline import reference_date_of

        reference_date = reference_date_of(run_after)
    if reference_date is None:
        log.warning("failed night's run report not written: the run's reference date is not known")
        return
    try:
        path = pipeline.report_failure(config_path or deployment.config_path(), reference_date,
                                       context["ti"].task_id, unwrap(context.get("exception")), run_of(context))
    except Exception as e:  # noqa: BLE001 - a callback must not hide the failure it reports
        log.warning("failed night's run report not written: %s", type(e).__name__)
        return
    log.info("failed night's run report: %s", path)


def notify_warning(context, freshness: dict, config_path: str | None = None, la_code: str | None = None) -> bool:
    """The warning alert of a night that goes on with feeds flagged (``freshness`` as check_inputs returns it).

    Never fails the task: the night delivers whatever the mail server does. Returns whether a message went.
    """
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    from tfp.notify import run_reference_date, warning_summary, weak_disclosure_of

    summary = warning_summary(context["dag"].dag_id if context.get("dag") else context["ti"].dag_id,
                              run_reference_date(context), freshness, weak_disclosure_of(config_path))
    if summary is None:
        return False
    found = _alert_connection(la_code, "warning alert")
    if found is None:
        return False
    conn_id, to, sender = found
    subject, body = summary
    try:
        SmtpNotifier(to=to, from_email=sender, subject=subject, html_content=body,
                     smtp_conn_id=conn_id).notify(context)
    except Exception as e:  # the mail server's trouble is not the night's
        log.warning("warning alert not sent through %s: %s", conn_id, type(e).__name__)
        return False
    return True

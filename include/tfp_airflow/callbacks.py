"""The failure alert: an Airflow ``on_failure_callback`` that e-mails tfp.notify's summary over SMTP."""

from __future__ import annotations

import logging
import os


def unwrap(error: BaseException | None) -> BaseException | None:
    """The error an alert describes: for an ``AirflowFailException`` raised to stop retries, its cause
    (a tfp error, whose message the alert quotes), else the error itself."""
    from airflow.sdk.exceptions import AirflowFailException

    if isinstance(error, AirflowFailException) and error.__cause__ is not None:
        return error.__cause__
    return error


def notify_failure(context, config_path: str | None = None) -> None:
    """Airflow on_failure_callback: e-mail an alert through the SMTP Connection ``tfp_alerts``.

    ``config_path`` is a borough DAG's own config; without it, the deployment's (``TFP_CONFIG``).

    The Connection (override its id with TFP_ALERT_CONN_ID) holds ``from_email`` and ``to`` in its
    extra. Without it alerts are off and the failure shows in the UI only.
    """
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier
    from airflow.sdk import Connection

    from tfp.notify import failure_summary, run_reference_date, weak_disclosure_of

    log = logging.getLogger(__name__)
    conn_id = os.environ.get("TFP_ALERT_CONN_ID", "tfp_alerts")
    try:
        conn = Connection.get(conn_id)
    except Exception:
        log.warning("no alert connection %s: failure alert not sent", conn_id)
        return
    extra = conn.extra_dejson or {}
    if not extra.get("to"):
        log.warning("alert connection %s has no `to` in its extra: failure alert not sent", conn_id)
        return
    ti = context["ti"]
    subject, body = failure_summary(ti.dag_id, ti.task_id, run_reference_date(context),
                                    unwrap(context.get("exception")), weak_disclosure=weak_disclosure_of(config_path))
    SmtpNotifier(to=extra["to"], from_email=extra.get("from_email"), subject=subject, html_content=body,
                 smtp_conn_id=conn_id).notify(context)

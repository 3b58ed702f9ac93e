"""What a failure alert says: which DAG, task, date, file and rule — never a value from the data.

Only tfp's own exceptions, whose messages are written to name files and rules and nothing else,
are quoted. Any other exception is named by its type alone, because a library's message may echo
a value it was given.
"""

from __future__ import annotations

import html
from datetime import date

SAFE_EXCEPTIONS = {"FilesRejected", "FileRejected", "LandingTampered", "ConfigError", "RetentionIncomplete",
                   "SftpError", "HostKeyRefused", "OutboxTampered", "MissingInput", "SourceUnavailable"}
# raised to stop retries; what went wrong is its cause, quoted when that is one of tfp's own
WRAPPERS = {"AirflowFailException"}


def failure_summary(dag_id: str, task_id: str, reference_date: date | None, error: BaseException | None,
                    log_url: str | None = None, weak_disclosure: list[str] | tuple[str, ...] = ()
                    ) -> tuple[str, str]:
    """(subject, HTML body) of the alert for a failed task; ``weak_disclosure`` names the disclosure
    settings below the floor that the config allows (names only)."""
    if error is not None and type(error).__name__ in WRAPPERS and error.__cause__ is not None:
        error = error.__cause__
    kind = type(error).__name__ if error is not None else "unknown error"
    if error is not None and kind in SAFE_EXCEPTIONS:
        detail = str(error)
    else:
        detail = f"{kind} (details in the task log)"
    when = reference_date.isoformat() if reference_date else "unknown date"
    subject = f"[tfp] {dag_id} {when}: task {task_id} failed"
    lines = [
        f"<p><b>{html.escape(dag_id)}</b> for reference date <b>{when}</b>: task "
        f"<code>{html.escape(task_id)}</code> failed.</p>",
        f"<p>{html.escape(detail)}</p>",
        *([f"<p><b>weak disclosure allowed: {html.escape(', '.join(weak_disclosure))}</b></p>"]
          if weak_disclosure else []),
        "<p>Nothing is delivered from a failed run. See the DAG's documentation in the Airflow UI for what to do.</p>",
    ]
    if log_url:
        lines.append(f'<p><a href="{html.escape(log_url)}">Task log</a></p>')
    return subject, "\n".join(lines)


def run_reference_date(context) -> date | None:
    """The night a run was for: its ``reference_date`` param (a manual run), else its logical date's."""
    from tfp.pipeline import reference_date_of

    chosen = (context.get("params") or {}).get("reference_date")
    if chosen:
        try:
            return date.fromisoformat(str(chosen))
        except ValueError:
            return None
    logical = context.get("logical_date")
    return reference_date_of(logical) if logical else None


def weak_disclosure_of(config_path: str | None) -> list[str]:
    """The config's disclosure settings below the floor; empty when the config cannot be read."""
    from tfp.config import ConfigError, load_config

    try:
        if config_path is None:
            from tfp.deployment import config_path as deployment_config

            config_path = deployment_config()
        return list(load_config(config_path).weak_disclosure)
    except ConfigError:
        return []


def notify_failure(context, config_path: str | None = None) -> None:
    """Airflow on_failure_callback: e-mail an alert through the SMTP Connection ``tfp_alerts``.

    ``config_path`` is a borough DAG's own config; without it, the deployment's (``TFP_CONFIG``).

    The Connection (override its id with TFP_ALERT_CONN_ID) holds ``from_email`` and ``to`` in its
    extra. Without it alerts are off and the failure shows in the UI only. Airflow is imported here,
    when Airflow calls this, so the package itself stays free of Airflow.
    """
    import logging
    import os

    from airflow.providers.smtp.notifications.smtp import SmtpNotifier
    from airflow.sdk import Connection

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
    subject, body = failure_summary(ti.dag_id, ti.task_id, run_reference_date(context), context.get("exception"),
                                    weak_disclosure=weak_disclosure_of(config_path))
    SmtpNotifier(to=extra["to"], from_email=extra.get("from_email"), subject=subject, html_content=body,
                 smtp_conn_id=conn_id).notify(context)

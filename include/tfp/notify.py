"""What a failure alert says: which DAG, task, date, file and rule — never a value from the data.

Only a :class:`tfp.errors.TfpError` is quoted (its message and its operator hint): those messages are
written to name files and rules and nothing else. Any other exception is named by its class alone,
because a library's message may echo a value it was given. Sending the alert is Airflow's part
(``tfp_airflow.callbacks``); this module only writes it.
"""

from __future__ import annotations

import html
from datetime import date

from tfp.errors import TfpError


def failure_summary(dag_id: str, task_id: str, reference_date: date | None, error: BaseException | None,
                    log_url: str | None = None, weak_disclosure: list[str] | tuple[str, ...] = ()
                    ) -> tuple[str, str]:
    """(subject, HTML body) of the alert for a failed task; ``weak_disclosure`` names the disclosure
    settings below the floor that the config allows (names only)."""
    if isinstance(error, TfpError):
        detail = error.message
        hint = error.hint
    else:
        detail = f"{type(error).__name__ if error is not None else 'unknown error'} (details in the task log)"
        hint = ""
    when = reference_date.isoformat() if reference_date else "unknown date"
    subject = f"[tfp] {dag_id} {when}: task {task_id} failed"
    lines = [
        f"<p><b>{html.escape(dag_id)}</b> for reference date <b>{when}</b>: task "
        f"<code>{html.escape(task_id)}</code> failed.</p>",
        f"<p>{html.escape(detail)}</p>",
        *([f"<p>What to do: {html.escape(hint)}</p>"] if hint else []),
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

"""What an alert says: which DAG, task, date, file and rule — never a value from the data.

A failure alert (:func:`failure_summary`) for a failed task; a warning alert (:func:`warning_summary`) for a
night that delivers with feeds flagged by :mod:`tfp.freshness` (``on_overdue: warn``), dataset names and
counts only.

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


def warning_summary(dag_id: str, reference_date: date | None, freshness: dict,
                    weak_disclosure: list[str] | tuple[str, ...] = ()) -> tuple[str, str] | None:
    """(subject, HTML body) of the warning alert for a night whose feeds are flagged (``freshness`` is
    :meth:`tfp.freshness.FreshnessReport.to_json`), or None when nothing is flagged. Dataset names and
    counts (days, rows) only: no file name, no date of a file, nothing from inside a file."""
    overdue, volume = freshness.get("overdue") or [], freshness.get("volume") or []
    if not overdue and not volume:
        return None
    when = reference_date.isoformat() if reference_date else "unknown date"
    subject = (f"[tfp] {dag_id} {when}: warning, {len(overdue)} feed(s) overdue, "
               f"{len(volume)} file(s) with unusual row counts")
    items = [f"<li>overdue: {html.escape(str(o['dataset']))}, newest file {int(o['age_days'])} days old "
             f"(max age {int(o['max_age_days'])} days)</li>" for o in overdue]
    items += [f"<li>volume: {html.escape(str(v['dataset']))}, {int(v['rows'])} rows, a "
              f"{html.escape(str(v['change']))} against the median {float(v['median']):g} of its last "
              f"{int(v['earlier_files'])} files</li>" for v in volume]
    lines = [
        f"<p><b>{html.escape(dag_id)}</b> for reference date <b>{when}</b>: feeds flagged by "
        "<code>check_inputs</code>. The night goes on (<code>freshness.on_overdue: warn</code>).</p>",
        f"<ul>{''.join(items)}</ul>",
        "<p>What to do: ask the named partners whether a file is missing or changed; the run report's Feed "
        "freshness section has the details. If a feed's cadence is slower, raise freshness.max_age_days for it.</p>",
        *([f"<p><b>weak disclosure allowed: {html.escape(', '.join(weak_disclosure))}</b></p>"]
          if weak_disclosure else []),
    ]
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

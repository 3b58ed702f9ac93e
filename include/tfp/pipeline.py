"""Each nightly and retention task as one plain function of (config path, reference date): what the DAGs call.

This is the one place that builds a :class:`~tfp.context.RunContext` (:func:`tfp.context.open_context`)
and calls a stage: every stage module (``tfp.extract``, ``tfp.validate``, ... ``tfp.retention``, named as
the DAGs' tasks are) exposes ``run(ctx) -> StageResult``. A task returns the result's ``to_xcom()``:
counts, ids and paths only, because it becomes an XCom.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime
from typing import TypeVar
from zoneinfo import ZoneInfo

from tfp.config import Config, load_config, warehouse_url
from tfp.context import RunContext, StageResult, open_context, result_from_xcom

log = logging.getLogger(__name__)
LONDON = ZoneInfo("Europe/London")
T = TypeVar("T")


def reference_date_of(logical_date: datetime) -> date:
    """A run's reference date: its logical date's calendar date in Europe/London.

    A plain ``datetime.date``: Airflow hands over pendulum objects, which database drivers do not bind.
    """
    local = logical_date.astimezone(LONDON)
    return date(local.year, local.month, local.day)


def check_setup(config_path: str, reference_date: date, sources: list[str] | tuple[str, ...] | None = None) -> dict:
    """Fail before any work when the config or a key is unusable, or when a drop folder or an SFTP
    Connection of a source in the run (or the delivery's Connection) is missing, or the warehouse
    schema is not this tfp's revision (an embedded SQLite warehouse is migrated here; see README), or when
    a borough's config shares a key variable, its warehouse or its work_dir with another borough's."""
    from tfp.deployment import check_isolation
    from tfp.warehouse import upgrade_embedded

    started = datetime.now(UTC).isoformat(timespec="seconds")  # the night's start, for its run report
    check_isolation(config_path)  # a borough shares no key, warehouse or work_dir with another
    for line in upgrade_embedded(warehouse_url(load_config(config_path))):
        log.info("%s", line)
    ctx = open_context(config_path, reference_date)  # refuses a PostgreSQL schema `tfp db upgrade` has not migrated
    config = ctx.config
    ctx.keys  # noqa: B018 -- read and check the three keys now, naming a missing variable
    _check_transports(config, sources)
    for folder in (config.work_dir, config.reports_dir, config.landing_dir, config.outbox_dir):
        folder.mkdir(parents=True, exist_ok=True)
    if config.weak_disclosure:
        log.warning("weak disclosure allowed: %s", ", ".join(config.weak_disclosure))
    return {"reference_date": reference_date.isoformat(), "la_code": config.local_authority.code,
            "started_at": started}


def configured(config: Config, sources: Iterable[str] | None) -> list[str]:
    """The sources of a run: those chosen (all when None), by name or by the id of one of their partners,
    that the config names. An optional source the config leaves out (health, support_services) is never in
    the run, so a config without it runs as before."""
    if sources is None:
        return list(config.configured_sources)
    of = {p.id: p.source for p in config.all_partners()}
    names = {of.get(name, name) for name in sources}
    return [s for s in config.configured_sources if s in names]


def chosen_sources(config_path: str, chosen: Iterable[str] | None) -> list[str]:
    """:func:`configured` for the DAG's ``choose_sources``, from the config file."""
    return configured(load_config(config_path), chosen)


def _check_transports(config, sources) -> None:
    """Every folder and Connection the night reads or writes exists: a typo fails here, in seconds."""
    from tfp.config import DirectorySource
    from tfp.extract import check_folder
    from tfp.sftp import SftpError, endpoint_from_connection

    conn_ids = []
    for partner in config.all_partners():
        if sources is not None and partner.source not in sources and partner.id not in sources:
            continue
        cfg = partner.transport
        if isinstance(cfg, DirectorySource):
            check_folder(partner.source if partner.short_form else f"{partner.source} ({partner.id})", cfg.path)
        else:
            conn_ids.append(cfg.conn_id)
    if config.delivery.transport == "sftp":
        conn_ids.append(config.delivery.conn_id)
    for conn_id in conn_ids:
        try:
            endpoint_from_connection(conn_id)
        except SftpError as e:
            raise SftpError(f"{e}: create it with `airflow connections add {conn_id} --conn-type sftp ...` "
                            "(see the README's Connections section)") from None


_observers: list[Callable[[StageResult], None]] = []


def observe(observer: Callable[[StageResult], None]) -> None:
    """Hand every stage result of this process to ``observer`` as well (once per observer): how an
    orchestrator learns a stage's lineage (``result.lineage``), which the XCom does not carry."""
    if observer not in _observers:
        _observers.append(observer)


def guarded(stage: str, call: Callable[[], T]) -> T:
    """``call()``, with any error that is not tfp's own replaced by a :class:`~tfp.errors.StageCrashed`.

    A library's message may quote a value (a database's "Key (record_id)=(...) already exists"); Airflow
    would print it in the task log and the OpenLineage FAIL event, and an alert might quote it. The
    value-free traceback (classes and frames) is logged instead, and the new error is raised outside the
    ``except`` block, so it carries no context that a log formatter could print.
    """
    from tfp.errors import StageCrashed, TfpError, value_free_traceback

    try:
        return call()
    except TfpError:
        raise
    except Exception as e:  # noqa: BLE001 -- re-raised below as a StageCrashed, without its message
        log.error("stage %s failed; traceback without messages:\n%s", stage, value_free_traceback(e))
        crashed = StageCrashed(stage, e)
    raise crashed


def run_stage(name: str, ctx: RunContext) -> StageResult:
    """Call stage ``name``'s ``run`` with ``ctx`` (``tfp.<name>``; retention's finish is ``retention_finish``),
    and show its result to the observers."""
    import importlib

    def call() -> StageResult:
        if name == "retention_finish":
            from tfp.retention import finish

            return finish(ctx)
        return importlib.import_module(f"tfp.{name}").run(ctx)

    result = guarded(name, call)
    for observer in _observers:
        observer(result)
    return result


def check_inputs(config_path: str, reference_date: date, sources: list[str] | tuple[str, ...]) -> dict:
    """No silent partial night: every dataset the night needs has a file on or before R (tfp.inputs);
    then its freshness and volume (tfp.freshness): flags are logged as warnings and returned (names, dates
    and counts), and with ``freshness.on_overdue: fail`` an overdue feed fails the night here."""
    from tfp.freshness import check_freshness
    from tfp.inputs import check_inputs as check

    ctx = open_context(config_path, reference_date)
    sources = configured(ctx.config, sources)  # an optional source the config leaves out needs no file
    counts = guarded("check_inputs", lambda: check(ctx.warehouse, ctx.reference_date, sources))
    fresh = guarded("check_inputs", lambda: check_freshness(ctx.warehouse, ctx.config.freshness, ctx.reference_date,
                                                            sources))
    return {**counts, "datasets_overdue": len(fresh.overdue), "files_volume_flagged": len(fresh.volume),
            "freshness": fresh.to_json()}


def per_partner(stage: str, config_path: str, reference_date: date, source: str,
                partner: str | None = None) -> dict[str, int]:
    """A per-partner stage for one partner of a source. Without a partner: the short form's, or, for a
    source with several partners (a DAG parsed without the config at hand), each partner in config order,
    their counts added up (any failure stops it, as a task would)."""
    if partner is None:
        partners = load_config(config_path).partners(source)
        if len(partners) > 1:
            total: dict[str, int] = {}
            for p in partners:
                for key, value in per_partner(stage, config_path, reference_date, source, p.id).items():
                    if isinstance(value, int):
                        total[key] = total.get(key, 0) + value
            return total
    return run_stage(stage, open_context(config_path, reference_date, source, partner=partner)).to_xcom()


def extract(config_path: str, reference_date: date, source: str, partner: str | None = None) -> dict[str, int]:
    return per_partner("extract", config_path, reference_date, source, partner)


def validate(config_path: str, reference_date: date, source: str, partner: str | None = None) -> dict[str, int]:
    return per_partner("validate", config_path, reference_date, source, partner)


def stage(config_path: str, reference_date: date, source: str, partner: str | None = None) -> dict[str, int]:
    return per_partner("stage", config_path, reference_date, source, partner)


def link(config_path: str, reference_date: date) -> dict:
    return run_stage("link", open_context(config_path, reference_date)).to_xcom()


def feedback(config_path: str, reference_date: date, dry_run: bool = False) -> dict[str, int]:
    """Each partner with an ``outbound`` path gets its feedback for R (tfp.feedback); none in a dry run."""
    return run_stage("feedback", open_context(config_path, reference_date, dry_run=dry_run)).to_xcom()


def consent(config_path: str, reference_date: date) -> dict[str, int]:
    return run_stage("consent", open_context(config_path, reference_date)).to_xcom()


def criteria(config_path: str, reference_date: date) -> dict[str, dict[str, int]]:
    """Flags counting every roster person (for the evaluation's own checks) and counting kept people only
    (what is delivered), by scope."""
    return run_stage("criteria", open_context(config_path, reference_date)).to_xcom()


def package(config_path: str, reference_date: date) -> dict:
    return run_stage("package", open_context(config_path, reference_date)).to_xcom()


def deliver(config_path: str, reference_date: date, dry_run: bool = False) -> dict[str, int]:
    return run_stage("deliver", open_context(config_path, reference_date, dry_run=dry_run)).to_xcom()


def report(config_path: str, reference_date: date, stage_counts: dict, run: dict | None = None) -> dict:
    """The run report, from the other stages' XComs (by stage name) read back as their results; ``run``
    (run_id, started_at) is the orchestrator's run, for the report's header."""
    upstream = {name: result_from_xcom(name, value) for name, value in stage_counts.items()}
    return run_stage("report", open_context(config_path, reference_date, upstream=upstream, run=run)).to_xcom()


def report_failure(config_path: str, reference_date: date, stage: str, error: BaseException | None,
                   run: dict | None = None) -> str:
    """A failed night still writes its run report: status failed, the failing stage and the error's safe
    message (tfp.report.write_failed_report), with the counts known so far. Returns the report's path."""
    from tfp.report import write_failed_report

    return str(write_failed_report(load_config(config_path), reference_date, stage, error, run))


def retention(config_path: str, reference_date: date, category: str, dry_run: bool) -> dict:
    """One retention category: count, delete, re-count, log. Returns counts only."""
    ctx = open_context(config_path, reference_date, category=category, dry_run=dry_run)
    return run_stage("retention", ctx).to_xcom()


def retention_finish(config_path: str, reference_date: date, dry_run: bool, outcomes: dict[str, dict]) -> dict:
    """Make the deletions stick (vacuum) and write retention_report.json."""
    upstream = {category: result_from_xcom("retention", value) for category, value in outcomes.items()}
    ctx = open_context(config_path, reference_date, dry_run=dry_run, upstream=upstream)
    return run_stage("retention_finish", ctx).to_xcom()

"""Each nightly task as one plain function of (config path, reference date): what the DAG calls.

Every function loads the config, opens the warehouse, does one stage through its module and
returns counts only, because its return value becomes an XCom.
"""

from __future__ import annotations

import logging
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from tfp.config import load_config, load_keys, warehouse_url

log = logging.getLogger(__name__)
LONDON = ZoneInfo("Europe/London")


def reference_date_of(logical_date: datetime) -> date:
    """A run's reference date: its logical date's calendar date in Europe/London.

    A plain ``datetime.date``: Airflow hands over pendulum objects, which database drivers do not bind.
    """
    local = logical_date.astimezone(LONDON)
    return date(local.year, local.month, local.day)


def _open(config_path: str | Path):
    from tfp.warehouse import connect

    config = load_config(config_path)
    return config, connect(warehouse_url(config))


def check_setup(config_path: str, reference_date: date, sources: list[str] | tuple[str, ...] | None = None) -> dict:
    """Fail before any work when the config or a key is unusable, or when a drop folder or an SFTP
    Connection of a source in the run (or the delivery's Connection) is missing, or the warehouse
    schema is not this tfp's revision (an embedded SQLite warehouse is migrated here; see README)."""
    from tfp.warehouse import upgrade_embedded

    for line in upgrade_embedded(warehouse_url(load_config(config_path))):
        log.info("%s", line)
    config, _engine = _open(config_path)  # refuses a PostgreSQL schema that `tfp db upgrade` has not migrated
    load_keys(config)
    _check_transports(config, sources)
    for folder in (config.work_dir, config.reports_dir, config.landing_dir, config.outbox_dir):
        folder.mkdir(parents=True, exist_ok=True)
    if config.weak_disclosure:
        log.warning("weak disclosure allowed: %s", ", ".join(config.weak_disclosure))
    return {"reference_date": reference_date.isoformat(), "la_code": config.local_authority.code}


def _check_transports(config, sources) -> None:
    """Every folder and Connection the night reads or writes exists: a typo fails here, in seconds."""
    from tfp.config import DirectorySource
    from tfp.extract import check_folder
    from tfp.feeds import SOURCES
    from tfp.sftp import SftpError, endpoint_from_connection

    conn_ids = []
    for source in (SOURCES if sources is None else sources):
        cfg = config.source(source)
        if isinstance(cfg, DirectorySource):
            check_folder(source, cfg.path)
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


def check_inputs(config_path: str, reference_date: date, sources: list[str] | tuple[str, ...]) -> dict[str, int]:
    """No silent partial night: every dataset the night needs has a file on or before R (tfp.inputs)."""
    from tfp.inputs import check_inputs as check

    _config, engine = _open(config_path)
    return check(engine, reference_date, sources)


def extract(config_path: str, reference_date: date, source: str) -> dict[str, int]:
    from tfp.extract import land_source

    config, engine = _open(config_path)
    return land_source(engine, config, source, reference_date)


def validate(config_path: str, reference_date: date, source: str) -> dict[str, int]:
    from tfp.stage import validate_source

    config, engine = _open(config_path)
    counts = validate_source(engine, config, source, reference_date)
    log.info("source %s validated: %s", source, counts)
    return counts


def stage(config_path: str, reference_date: date, source: str) -> dict[str, int]:
    from tfp.stage import stage_source

    config, engine = _open(config_path)
    return stage_source(engine, config, source, reference_date)


def link(config_path: str, reference_date: date) -> dict:
    from tfp.link import run_linking

    config, engine = _open(config_path)
    per_dataset = run_linking(engine, reference_date, config.linkage.match_probability_threshold)
    return {"records_linked": sum(c["linked"] for c in per_dataset.values()),
            "records_unlinked": sum(c["unlinked"] for c in per_dataset.values())}


def consent(config_path: str, reference_date: date) -> dict[str, int]:
    from tfp.consent import compute_consent

    config, engine = _open(config_path)
    return compute_consent(engine, reference_date, config.consent.lawful_basis)


def criteria(config_path: str, reference_date: date) -> dict[str, dict[str, int]]:
    """Flags counting every roster person (for the evaluation's own checks) and counting kept people only
    (what is delivered)."""
    from tfp.criteria import compute_family_flags

    config, engine = _open(config_path)
    return {scope: compute_family_flags(engine, reference_date, config.criteria, scope=scope)
            for scope in ("all", "kept")}


def package(config_path: str, reference_date: date) -> dict:
    from tfp import __version__
    from tfp.anonymise import build_outputs, record_release
    from tfp.package import write_package

    config, engine = _open(config_path)
    keys = load_keys(config)
    outputs = build_outputs(engine, reference_date, config, keys)
    files = write_package(outputs, config.outbox_dir, config.local_authority.code, reference_date,
                          config.delivery.encryption, config.delivery.recipient, keys.signing, __version__)
    record_release(engine, reference_date, outputs.released)  # only what was packaged binds later nights
    return {"outbox": str(files[0].path.parent), "files": len(files),
            "persons_submitted": outputs.submission_rows, "withdrawals": outputs.withdrawal_rows,
            "published_summary": outputs.published}


def deliver(config_path: str, reference_date: date, dry_run: bool = False) -> dict[str, int]:
    from tfp.deliver import deliver as send
    from tfp.package import packaged_files

    config, engine = _open(config_path)
    files = packaged_files(config.outbox_dir, config.local_authority.code, reference_date,
                           load_keys(config).signing)
    if dry_run:
        return {"uploaded": 0, "skipped": len(files), "dry_run": 1}
    d = config.delivery
    return send(files, transport=d.transport, path=d.path, conn_id=d.conn_id, engine=engine,
                reference_date=reference_date)


def report(config_path: str, reference_date: date, stage_counts: dict) -> dict:
    from tfp.report import write_run_report

    config, engine = _open(config_path)
    path = write_run_report(engine, config, reference_date, stage_counts)
    return {"report": str(path)}




def retention(config_path: str, run_date: date, category: str, dry_run: bool) -> dict:
    """One retention category: count, delete, re-count, log. Returns counts only."""
    from tfp.retention import run_category

    config, engine = _open(config_path)
    return run_category(engine, config, category, run_date, dry_run).as_dict()


def retention_finish(config_path: str, run_date: date, dry_run: bool, outcomes: dict[str, dict]) -> dict:
    """Make the deletions stick (vacuum) and write retention_report.json."""
    from tfp.retention import compact, write_retention_report

    config, engine = _open(config_path)
    if not dry_run:
        compact(engine)
    return {"report": write_retention_report(config, run_date, dry_run, outcomes)}

"""What a stage read and wrote, as dataset names: file paths and table names, never a value.

Each stage's :class:`~tfp.context.StageResult` carries a :class:`Lineage`; the orchestrator may hand it
to a lineage system (``tfp_airflow.lineage`` gives it to Airflow's OpenLineage provider). A night's chain:
a partner's file -> its landed (encrypted) copy -> the copy of its rows that passed validation -> the
``stg_<dataset>`` staging table -> ``links`` / ``person_consent`` / ``family_flags`` -> the outbox files ->
the delivered files.

Names follow OpenLineage's naming conventions so another tool can join them: a local file is
``("file", "/abs/path")``, a file on an SFTP server ``("sftp://host:port", "/path")``, a table of a
PostgreSQL warehouse ``("postgres://host:port", "database.schema.table")`` and of a SQLite warehouse
``("sqlite://<abs path of the database file>", "table")``. No user name or password is ever part of a name.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from tfp.config import Config
    from tfp.landing import LandingStore


@dataclass(frozen=True, order=True)
class DatasetName:
    """One dataset as OpenLineage names it: a namespace (where) and a name (which file or table)."""

    namespace: str
    name: str


@dataclass(frozen=True)
class Lineage:
    """A stage's inputs and outputs (sorted, without repeats)."""

    inputs: tuple[DatasetName, ...] = ()
    outputs: tuple[DatasetName, ...] = ()

    @classmethod
    def of(cls, inputs: Iterable[DatasetName] = (), outputs: Iterable[DatasetName] = ()) -> Lineage:
        return cls(inputs=tuple(sorted(set(inputs))), outputs=tuple(sorted(set(outputs))))

    def __bool__(self) -> bool:
        return bool(self.inputs or self.outputs)


NONE = Lineage()


# -- names -----------------------------------------------------------------------------------------

def local_file(path: str | Path) -> DatasetName:
    """A file on this machine (or a mounted folder), by its absolute path."""
    return DatasetName("file", str(Path(path).absolute()))


def sftp_file(host: str, port: int, folder: str, file_name: str) -> DatasetName:
    """A file on an SFTP server: the server's address (never the login) and the file's path there."""
    path = posixpath.join(folder if folder.startswith("/") else "/" + folder, file_name)
    return DatasetName(f"sftp://{host}:{port}", path)


def table(engine: Engine, name: str) -> DatasetName:
    """A warehouse table. Built from the URL's driver, host, port and database only: no credentials."""
    url = engine.url
    backend = url.get_backend_name()
    if backend == "sqlite":
        where = str(Path(url.database).absolute()) if url.database and url.database != ":memory:" else ":memory:"
        return DatasetName(f"sqlite://{where}", name)
    if backend == "postgresql":
        schema = engine.dialect.default_schema_name or "public"
        return DatasetName(f"postgres://{url.host or 'localhost'}:{url.port or 5432}", f"{url.database}.{schema}.{name}")
    return DatasetName(f"{backend}://{url.host or ''}", f"{url.database}.{name}")


def staging_tables(engine: Engine, datasets: Iterable[str]) -> list[DatasetName]:
    return [table(engine, f"stg_{d}") for d in datasets]


def drop(config: Config, source: str, file_name: str, partner: str | None = None) -> DatasetName:
    """Where a partner's file was picked up: its drop folder, or its folder on the partner's SFTP server."""
    from tfp.config import DirectorySource
    from tfp.sftp import endpoint_from_connection

    cfg = config.partner(source, partner).transport
    if isinstance(cfg, DirectorySource):
        return local_file(Path(cfg.path) / file_name)
    endpoint = endpoint_from_connection(cfg.conn_id)
    return sftp_file(endpoint.host, endpoint.port, cfg.path, file_name)


# -- the stages' lineage ---------------------------------------------------------------------------

def landed(engine: Engine, config: Config, store: LandingStore, source: str, reference_date: date,
           partner: str | None = None) -> Lineage:
    """extract: each partner file this night landed -> its encrypted landed copy (the landing log says which)."""
    from sqlalchemy import select

    from tfp.statuses import LandingStatus
    from tfp.warehouse import landing_log

    with engine.connect() as conn:
        rows = conn.execute(
            select(landing_log.c.id, landing_log.c.file_name)
            .where(landing_log.c.source == source, landing_log.c.partner == config.partner(source, partner).id,
                   landing_log.c.landed_by_run == reference_date, landing_log.c.landing_path.is_not(None),
                   landing_log.c.status.not_in([LandingStatus.REJECTED, LandingStatus.DUPLICATE]))
        ).all()
    if not rows:
        return NONE
    return Lineage.of(inputs=[drop(config, source, r.file_name, partner) for r in rows],
                      outputs=[local_file(store.path(source, r.id)) for r in rows])


def validated(engine: Engine, store: LandingStore, source: str, landing_ids: Iterable[int],
              quarantined: int) -> Lineage:
    """validate: each landed copy it read -> the copy of its rows that passed (and ``quarantine``)."""
    from tfp.landing import VALIDATED

    ids = list(landing_ids)
    if not ids:
        return NONE
    outputs = [local_file(store.path(source, i, VALIDATED)) for i in ids if store.path(source, i, VALIDATED).exists()]
    return Lineage.of(inputs=[local_file(store.path(source, i)) for i in ids],
                      outputs=outputs + ([table(engine, "quarantine")] if quarantined else []))


def staged(engine: Engine, store: LandingStore, source: str, landings: Iterable) -> Lineage:
    """stage: each validated copy it read -> the staging table of that copy's dataset."""
    from tfp.landing import VALIDATED

    rows = list(landings)
    if not rows:
        return NONE
    return Lineage.of(inputs=[local_file(store.path(source, r.id, VALIDATED)) for r in rows],
                      outputs=staging_tables(engine, {r.dataset for r in rows}))


def tables(engine: Engine, reads: Iterable[str], writes: Iterable[str]) -> Lineage:
    """A warehouse-only stage (link, consent, criteria): the tables it reads -> the tables it writes."""
    return Lineage.of(inputs=[table(engine, t) for t in reads], outputs=[table(engine, t) for t in writes])


def delivered(config: Config, outbox_files: Iterable[Path], names: Iterable[str]) -> Lineage:
    """deliver: each outbox file -> the same file at the recipient (a folder, or an SFTP server's folder)."""
    from tfp.sftp import endpoint_from_connection

    d = config.delivery
    names = list(names)
    if d.transport == "directory":
        outputs = [local_file(Path(d.path) / n) for n in names]
    else:
        endpoint = endpoint_from_connection(d.conn_id)
        outputs = [sftp_file(endpoint.host, endpoint.port, d.path, n) for n in names]
    return Lineage.of(inputs=[local_file(p) for p in outbox_files], outputs=outputs)

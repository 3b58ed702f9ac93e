"""Stage 1, extract: land each new partner file once.

A run for reference date R looks at every feed file of a source dated on or before R. A file
whose bytes were landed before is recognised by its SHA-256 and not landed again (under another
name it is logged as a duplicate, never counted twice). A new file is copied, encrypted with its
own key, into ``work_dir/landing`` and recorded in the landing log.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Protocol

from sqlalchemy import Connection, Engine, insert, select, text

from tfp import landing
from tfp.config import Config, DirectorySource
from tfp.feeds import DATASETS, parse_file_name
from tfp.warehouse import landing_key, landing_log

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeedFile:
    source: str
    dataset: str
    name: str
    file_date: date


class SourceReader(Protocol):
    def list_names(self) -> list[str]: ...
    def read(self, name: str) -> bytes: ...


class _DirectoryReader:
    def __init__(self, folder: Path):
        self.folder = folder

    def list_names(self) -> list[str]:
        if not self.folder.is_dir():
            raise FileNotFoundError(f"source folder does not exist: {self.folder}")
        return sorted(p.name for p in self.folder.iterdir() if p.is_file())

    def read(self, name: str) -> bytes:
        return (self.folder / name).read_bytes()


class _SftpReader:
    def __init__(self, client, folder: str):
        self.client, self.folder = client, folder.rstrip("/") or "/"

    def list_names(self) -> list[str]:
        return [name for name, _size in self.client.list_files(self.folder)]

    def read(self, name: str) -> bytes:
        return self.client.read_bytes(f"{self.folder}/{name}")


@contextmanager
def open_source(config: Config, source: str) -> Iterator[SourceReader]:
    """A reader for one source's drop, over its configured transport."""
    cfg = config.source(source)
    if isinstance(cfg, DirectorySource):
        yield _DirectoryReader(cfg.path)
        return
    from tfp.sftp import SftpClient, endpoint_from_connection

    with SftpClient(endpoint_from_connection(cfg.conn_id)) as client:
        yield _SftpReader(client, cfg.path)


def select_files(source: str, names: list[str], reference_date: date) -> list[FeedFile]:
    """The feed files of ``source`` dated on or before R; anything else in the folder is ignored."""
    chosen = []
    for name in names:
        parsed = parse_file_name(name)
        if parsed is None:
            continue
        dataset, file_date = parsed
        if DATASETS[dataset].source == source and file_date <= reference_date:
            chosen.append(FeedFile(source, dataset, name, file_date))
    return sorted(chosen, key=lambda f: (f.file_date, f.name))


def land_source(engine: Engine, config: Config, source: str, reference_date: date) -> dict[str, int]:
    """Land the new files of one source for R; returns counts only."""
    counts = {"files_seen": 0, "landed": 0, "already_landed": 0, "duplicates": 0, "ignored": 0,
              "orphans_removed": remove_orphans(engine, config, source)}
    with open_source(config, source) as reader:
        names = reader.list_names()
        files = select_files(source, names, reference_date)
        counts["ignored"] = len(names) - len(files)
        counts["files_seen"] = len(files)
        for feed in files:
            data = reader.read(feed.name)
            outcome = land_file(engine, config, feed, data, reference_date)
            counts[outcome] += 1
    log.info("source %s: %s", source, counts)
    return counts


def source_lock(conn: Connection, source: str) -> None:
    """Serialise the landing-log changes of one source across concurrent runs (a backfill of several
    dates at once): held until the transaction ends. PostgreSQL only; SQLite writers queue anyway."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(7423002, hashtext(:source))"), {"source": source})


def remove_orphans(engine: Engine, config: Config, source: str) -> int:
    """Sweep the source's landing folder of what an interrupted (killed) run left behind."""
    with engine.begin() as conn:
        source_lock(conn, source)
        live = conn.execute(select(landing_key.c.landing_id).join(landing_log, landing_log.c.id == landing_key.c.landing_id)
                            .where(landing_log.c.source == source)).scalars().all()
        removed = landing.sweep_orphans(config.work_dir / "landing" / source, live)
    if removed:
        log.warning("source %s: removed %d landing file(s) left by an interrupted run", source, removed)
    return removed


def land_file(engine: Engine, config: Config, feed: FeedFile, data: bytes, reference_date: date) -> str:
    """Land one file's bytes; returns "landed", "already_landed" or "duplicates".

    The check for earlier landings and the new landing row share one transaction under the
    source's lock, so two runs landing the same file at the same time land it once.
    """
    digest = hashlib.sha256(data).hexdigest()
    with engine.begin() as conn:
        source_lock(conn, feed.source)
        earlier = conn.execute(
            select(landing_log.c.id, landing_log.c.source, landing_log.c.file_name, landing_log.c.status)
            .where(landing_log.c.sha256 == digest).order_by(landing_log.c.id)
        ).all()
        if any(row.source == feed.source and row.file_name == feed.name for row in earlier):
            return "already_landed"
        record = {
            "source": feed.source, "dataset": feed.dataset, "file_name": feed.name, "file_date": feed.file_date,
            "sha256": digest, "bytes": len(data), "landed_at": datetime.now(UTC), "landed_by_run": reference_date,
        }
        if earlier:
            original = next((r for r in earlier if r.status != "duplicate"), earlier[0])
            conn.execute(insert(landing_log).values(**record, status="duplicate", duplicate_of=original.id))
            log.warning("file %s of %s repeats the bytes of landing %s: not counted again",
                        feed.name, feed.source, original.id)
            return "duplicates"
        key = landing.new_key()
        landing_id = conn.execute(insert(landing_log).values(**record, status="landing")).inserted_primary_key[0]
        relative = Path("landing") / feed.source / f"{landing_id}.raw.bin"
        try:
            landing.encrypt_to(config.work_dir / relative, data, key, landing_id)
            conn.execute(insert(landing_key).values(landing_id=landing_id, key=key))
            conn.execute(landing_log.update().where(landing_log.c.id == landing_id)
                         .values(status="landed", landing_path=str(relative)))
        except BaseException:
            # the landing row is rolled back: its copy must not outlive it under a final name
            (config.work_dir / relative).unlink(missing_ok=True)
            raise
    return "landed"


def read_landing(engine: Engine, config: Config, landing_id: int, purpose: bytes = b"raw") -> bytes:
    """Decrypt a landing copy (raw: the file as received; validated: the rows that passed validation)."""
    with engine.connect() as conn:
        key = conn.execute(select(landing_key.c.key).where(landing_key.c.landing_id == landing_id)).scalar_one()
    return landing.decrypt_from(landing_copy_path(config, landing_id, purpose, engine), key, landing_id, purpose)


def landing_copy_path(config: Config, landing_id: int, purpose: bytes, engine: Engine) -> Path:
    with engine.connect() as conn:
        source = conn.execute(select(landing_log.c.source).where(landing_log.c.id == landing_id)).scalar_one()
    return config.work_dir / "landing" / source / f"{landing_id}.{purpose.decode()}.bin"

"""Stage 1, extract: land each new partner file once.

A run for reference date R looks at every feed file of a source dated on or before R. A file
whose bytes were landed before is recognised by its SHA-256 and not landed again (under another
name it is logged as a duplicate, never counted twice). A new file is copied, encrypted with its
own key, into ``work_dir/landing`` and recorded in the landing log.

A drop is partner input, so it is not trusted: nothing in a local drop folder is followed (a link
named like a feed file is refused unread), a file over ``quality.max_file_bytes`` is rejected before
it is read, and once a landing is committed the partner's plaintext is removed from the drop (local
folders unless ``inbound.keep_local_files``; SFTP with ``remove_after_pickup``).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import Engine, insert, select

from tfp.config import Config, DirectorySource
from tfp.context import utc_now
from tfp.errors import FileTooLarge, NotARegularFile, SourceUnavailable
from tfp.feeds import parse_file_name
from tfp.fsmodes import private_dir
from tfp.landing import LandingStore
from tfp.statuses import LandingStatus
from tfp.warehouse import landing_log

if TYPE_CHECKING:
    from tfp.context import RunContext, StageResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeedFile:
    source: str
    dataset: str
    name: str
    file_date: date
    partner: str = ""  # the partner it came from; empty: the short form's (the source's own name)

    @property
    def partner_id(self) -> str:
        return self.partner or self.source


def check_folder(source: str, folder: Path) -> None:
    """Raise SourceUnavailable unless ``folder`` is a folder this process can list."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except (FileNotFoundError, NotADirectoryError):
        raise SourceUnavailable(source, folder, "does not exist or is not a folder") from None
    except PermissionError:
        raise SourceUnavailable(source, folder, "cannot be read (permission denied)") from None
    try:
        os.listdir(fd)
    except PermissionError:
        raise SourceUnavailable(source, folder, "cannot be read (permission denied)") from None
    finally:
        os.close(fd)


class SourceReader(Protocol):
    removes: bool  # whether a file is removed from the drop once its landing is committed

    def list_names(self) -> list[str]: ...
    def read(self, name: str, max_bytes: int) -> bytes: ...
    def remove(self, name: str) -> bool: ...


_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a named pipe"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"))


def _kind(mode: int) -> str:
    return next((kind for test, kind in _KINDS if test(mode)), "not a regular file")


class _DirectoryReader:
    """A local drop folder, opened once: every name is looked up in that folder, never through a link
    (a partner's link to a file elsewhere on this machine is refused, not landed)."""

    def __init__(self, folder: Path, removes: bool, source: str = ""):
        self.folder, self.removes, self.source = folder, removes, source
        self._read: dict[str, tuple[int, int, int, int]] = {}
        try:
            self._fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        except (FileNotFoundError, NotADirectoryError):
            raise SourceUnavailable(source, folder, "does not exist or is not a folder") from None
        except PermissionError:
            raise SourceUnavailable(source, folder, "cannot be read (permission denied)") from None

    def close(self) -> None:
        os.close(self._fd)

    def list_names(self) -> list[str]:
        try:
            return sorted(os.listdir(self._fd))
        except PermissionError:
            raise SourceUnavailable(self.source, self.folder, "cannot be read (permission denied)") from None

    def read(self, name: str, max_bytes: int) -> bytes:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY, dir_fd=self._fd)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.EMLINK):  # O_NOFOLLOW met a link
                raise NotARegularFile("a symbolic link") from None
            raise
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise NotARegularFile(_kind(st.st_mode))
            if st.st_size > max_bytes:
                raise FileTooLarge(st.st_size)
            data = bytearray(f.read(st.st_size))
            while chunk := f.read(min(1 << 20, max_bytes + 1 - len(data))):  # it grew meanwhile
                data += chunk
                if len(data) > max_bytes:
                    raise FileTooLarge(len(data))
        self._read[name] = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        return bytes(data)

    def remove(self, name: str) -> bool:
        """Remove the file read as ``name``, unless it changed since (its new bytes are landed next run)."""
        seen = self._read.pop(name, None)
        try:
            st = os.stat(name, dir_fd=self._fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if seen != (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns):
            log.warning("source file %s changed while it was landed: left in %s for the next run", name, self.folder)
            return False
        try:
            os.unlink(name, dir_fd=self._fd)
        except FileNotFoundError:  # a concurrent run (a backfill) removed it first
            return False
        return True


class _SftpReader:
    def __init__(self, client, folder: str, removes: bool):
        self.client, self.folder, self.removes = client, folder.rstrip("/") or "/", removes
        self._read: dict[str, tuple[int | None, int | None]] = {}

    def list_names(self) -> list[str]:
        return [name for name, _size in self.client.list_files(self.folder)]

    def read(self, name: str, max_bytes: int) -> bytes:
        from tfp.sftp import RemoteFileTooLarge

        path = f"{self.folder}/{name}"
        attrs = self.client.stat(path)
        try:
            data = self.client.read_bytes(path, max_bytes)
        except RemoteFileTooLarge as e:
            raise FileTooLarge(e.size) from None
        self._read[name] = (attrs.st_size, attrs.st_mtime)
        return data

    def remove(self, name: str) -> bool:
        """Pick-up-and-delete: remove the remote file read as ``name`` unless it changed since."""
        path = f"{self.folder}/{name}"
        seen = self._read.pop(name, None)
        try:
            attrs = self.client.stat(path)
        except FileNotFoundError:
            return False
        if seen != (attrs.st_size, attrs.st_mtime):
            log.warning("remote file %s changed while it was landed: left for the next run", name)
            return False
        self.client.remove(path)
        return True


@contextmanager
def open_source(config: Config, source: str, partner: str | None = None) -> Iterator[SourceReader]:
    """A reader for one partner's drop (the short form's: the source's), over its configured transport."""
    cfg = config.partner(source, partner).transport
    if isinstance(cfg, DirectorySource):
        reader = _DirectoryReader(cfg.path, removes=not config.inbound.keep_local_files, source=source)
        try:
            yield reader
        finally:
            reader.close()
        return
    from tfp.sftp import SftpClient, endpoint_from_connection

    with SftpClient(endpoint_from_connection(cfg.conn_id)) as client:
        yield _SftpReader(client, cfg.path, removes=cfg.remove_after_pickup)


def select_files(source: str, names: list[str], reference_date: date, partner: str = "") -> list[FeedFile]:
    """The feed files of ``source`` dated on or before R; anything else in the folder is ignored."""
    chosen = []
    for name in names:
        parsed = parse_file_name(name, source)
        if parsed is None:
            continue
        dataset, file_date = parsed
        if file_date <= reference_date:
            chosen.append(FeedFile(source, dataset, name, file_date, partner))
    return sorted(chosen, key=lambda f: (f.file_date, f.name))


def land_source(engine: Engine, config: Config, source: str, reference_date: date,
                clock: Callable[[], datetime] = utc_now, store: LandingStore | None = None,
                partner: str | None = None) -> dict[str, int]:
    """Land the new files of one partner of a source (the short form's by default) for R into ``store``
    (the config's by default); returns counts only.

    A file's plaintext is removed from the drop once its landing is committed (local folders unless
    ``inbound.keep_local_files``; SFTP with ``remove_after_pickup``): a run killed in between leaves it,
    and the next run finds it already landed and removes it then.
    """
    store = store or LandingStore.of(engine, config)
    counts = {"files_seen": 0, "landed": 0, "already_landed": 0, "duplicates": 0, "ignored": 0, "refused": 0,
              "rejected": 0, "vanished": 0, "removed_from_drop": 0, "orphans_removed": remove_orphans(store, source)}
    private_dir(store.root)
    limit = config.quality.max_file_bytes
    partner_id = config.partner(source, partner).id
    with open_source(config, source, partner) as reader:
        names = reader.list_names()
        files = select_files(source, names, reference_date, partner_id)
        counts["ignored"] = len(names) - len(files)
        counts["files_seen"] = len(files)
        for feed in files:
            try:
                data = reader.read(feed.name, limit)
            except FileNotFoundError:  # picked up meanwhile by a concurrent run (a backfill) into this warehouse
                log.info("source %s: %s went from the drop before it was read", source, feed.name)
                counts["vanished"] += 1
                continue
            except NotARegularFile as e:
                log.warning("source %s: %s is %s, not a regular file: refused, not read (nothing in a drop "
                            "folder is followed)", source, feed.name, e.kind)
                counts["refused"] += 1
                continue
            except FileTooLarge as e:
                reject_too_large(engine, feed, e.size, limit, reference_date, clock)
                counts["rejected"] += 1
                continue
            counts[land_file(store, feed, data, reference_date, clock)] += 1
            del data
            if reader.removes:
                try:
                    counts["removed_from_drop"] += reader.remove(feed.name)
                except OSError as e:  # the next run finds it already landed and tries again
                    log.warning("source %s: %s is landed but could not be removed from the drop (%s)",
                                source, feed.name, e.strerror or type(e).__name__)
    log.info("source %s, partner %s: %s", source, partner_id, counts)
    return counts


def run(ctx: RunContext) -> StageResult:
    """The extract task: land the new files of the context's source for R."""
    from tfp.context import StageResult
    from tfp.lineage import landed

    source = ctx.need_source()
    counts = land_source(ctx.warehouse, ctx.config, source, ctx.reference_date, clock=ctx.clock,
                         store=ctx.landing, partner=ctx.partner)
    return StageResult(stage="extract", counts=counts, source=source,
                       lineage=landed(ctx.warehouse, ctx.config, ctx.landing, source, ctx.reference_date,
                                      ctx.partner))


def reject_too_large(engine: Engine, feed: FeedFile, size: int, limit: int, reference_date: date,
                     clock: Callable[[], datetime] = utc_now) -> None:
    """Record a file over ``max_file_bytes`` as rejected, unread (no checksum, no copy), once per name and
    size: ``validate`` then fails naming it, as for any rejected file, until the partner re-sends it."""
    rule = f"larger than max_file_bytes ({size} bytes; the limit is {limit})"
    log.warning("source %s: file %s rejected unread: %s", feed.source, feed.name, rule)
    with engine.begin() as conn:
        LandingStore.lock(conn, feed.source)
        latest = conn.execute(
            select(landing_log.c.status, landing_log.c.rejection)
            .where(landing_log.c.source == feed.source, landing_log.c.partner == feed.partner_id,
                   landing_log.c.file_name == feed.name)
            .order_by(landing_log.c.id.desc()).limit(1)).first()
        if latest is not None and latest.status == LandingStatus.REJECTED and latest.rejection == rule:
            return
        conn.execute(insert(landing_log).values(
            source=feed.source, partner=feed.partner_id, dataset=feed.dataset, file_name=feed.name, file_date=feed.file_date,
            sha256="", bytes=size, landed_at=clock(), landed_by_run=reference_date,
            status=LandingStatus.REJECTED, rejection=rule))


def remove_local_feed_files(config: Config, dry_run: bool = False) -> int:
    """The programme-end purge of local drop folders: remove every feed file of each directory source
    (names of that source's datasets, any date), whatever ``keep_local_files`` says. Only regular
    files directly in the configured folder; links are neither followed nor removed. Returns how many."""
    found = 0
    for partner in config.all_partners():
        source, cfg = partner.source, partner.transport
        if not isinstance(cfg, DirectorySource) or not cfg.path.is_dir():
            continue
        fd = os.open(cfg.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for name in os.listdir(fd):
                if parse_file_name(name, source) is None:
                    continue
                if not stat.S_ISREG(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                    continue
                found += 1
                if not dry_run:
                    os.unlink(name, dir_fd=fd)
        finally:
            os.close(fd)
    return found


def remove_orphans(store: LandingStore, source: str) -> int:
    """Sweep the source's landing folder of what an interrupted (killed) run left behind."""
    removed = store.sweep(source)
    if removed:
        log.warning("source %s: removed %d landing file(s) left by an interrupted run", source, removed)
    return removed


def land_file(store: LandingStore, feed: FeedFile, data: bytes, reference_date: date,
              clock: Callable[[], datetime] = utc_now) -> str:
    """Land one file's bytes; returns "landed", "already_landed" or "duplicates".

    The check for earlier landings and the new landing row share one transaction under the
    source's lock, so two runs landing the same file at the same time land it once. Earlier bytes count
    only from the same partner: two partners' identical files (two header-only files) are two landings.
    """
    digest = hashlib.sha256(data).hexdigest()
    with store.engine.begin() as conn:
        store.lock(conn, feed.source)
        earlier = conn.execute(
            select(landing_log.c.id, landing_log.c.source, landing_log.c.file_name, landing_log.c.status)
            .where(landing_log.c.sha256 == digest, landing_log.c.partner == feed.partner_id)
            .order_by(landing_log.c.id)
        ).all()
        if any(row.source == feed.source and row.file_name == feed.name for row in earlier):
            return "already_landed"
        record = {
            "source": feed.source, "partner": feed.partner_id, "dataset": feed.dataset, "file_name": feed.name, "file_date": feed.file_date,
            "sha256": digest, "bytes": len(data), "landed_at": clock(), "landed_by_run": reference_date,
        }
        if earlier:
            original = next((r for r in earlier if r.status != LandingStatus.DUPLICATE), earlier[0])
            conn.execute(insert(landing_log).values(**record, status=LandingStatus.DUPLICATE, duplicate_of=original.id))
            log.warning("file %s of %s repeats the bytes of landing %s: not counted again",
                        feed.name, feed.source, original.id)
            return "duplicates"
        landing_id = conn.execute(insert(landing_log).values(**record, status=LandingStatus.LANDING)).inserted_primary_key[0]
        try:
            recorded = store.write(conn, feed.source, landing_id, data)
            conn.execute(landing_log.update().where(landing_log.c.id == landing_id)
                         .values(status=LandingStatus.LANDED, landing_path=recorded))
        except BaseException:
            # the landing row is rolled back: its copy must not outlive it under a final name
            store.discard(feed.source, landing_id)
            raise
    return "landed"

"""Landing copies, encrypted at rest with a key per file (contract section 9), and the LandingStore
that owns them.

A copy is AES-256-GCM in 16 MiB segments (AES-GCM refuses inputs over 2^31-1 bytes), each
segment's nonce and associated data binding it to its landing id, its position and whether it
is the last, so a reordered, truncated or altered copy fails authentication. The key lives in
the warehouse's ``landing_key`` table; deleting that row makes the copy unreadable for good.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Connection, Engine, delete, insert, select, text, update

from tfp.errors import LandingTampered
from tfp.fsmodes import atomic_writer, private_dir
from tfp.statuses import LandingStatus
from tfp.warehouse import landing_key, landing_log

if TYPE_CHECKING:
    from tfp.config import Config

MAGIC = b"TFPLAND1"
SEGMENT = 16 * 1024 * 1024
COPY = re.compile(r"^(?P<id>\d+)\.(?:raw|validated)\.bin$")
# A temporary copy names its writer, so that a sweep can tell a dead writer's leftovers from a live one's.
PART = re.compile(r"^\.\d+\.(?:raw|validated)\.bin\.part-(?P<host>.+)-(?P<pid>\d+)-[0-9a-f]{8}$")
FOREIGN_PART_AGE = 6 * 3600  # seconds: a temporary copy from another host is left alone until then
RAW, VALIDATED = b"raw", b"validated"  # a landing's two copies: the file as received, the rows that passed
PURPOSES = (RAW, VALIDATED)


def _aad(landing_id: int, purpose: bytes, index: int, last: bool) -> bytes:
    return b"tfp-landing|%d|%s|%d|%d" % (landing_id, purpose, index, int(last))


def new_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def encrypt_to(path: Path, data: bytes, key: bytes, landing_id: int, purpose: bytes = b"raw") -> None:
    """Write ``data`` encrypted to ``path`` atomically (temp file, fsync, rename), mode 0600 in a 0700 folder."""
    aes = AESGCM(key)
    prefix = secrets.token_bytes(8)
    segments = [data[i:i + SEGMENT] for i in range(0, len(data), SEGMENT)] or [b""]
    private_dir(path.parent)
    temp_name = f".{path.name}.part-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
    with atomic_writer(path, temp_name) as out:
        out.write(MAGIC + prefix + struct.pack(">I", len(segments)))
        for index, segment in enumerate(segments):
            last = index == len(segments) - 1
            sealed = aes.encrypt(prefix + struct.pack(">I", index), segment,
                                 _aad(landing_id, purpose, index, last))
            out.write(struct.pack(">Q", len(sealed)) + sealed)


def decrypt_from(path: Path, key: bytes, landing_id: int, purpose: bytes = b"raw") -> bytes:
    """Read and authenticate a landing copy; raises LandingTampered naming only the landing id."""
    aes = AESGCM(key)
    blob = path.read_bytes()
    problem = f"landing copy {landing_id} ({purpose.decode()}) failed authentication"
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + 12:
        raise LandingTampered(problem)
    prefix = blob[len(MAGIC):len(MAGIC) + 8]
    (count,) = struct.unpack(">I", blob[len(MAGIC) + 8:len(MAGIC) + 12])
    offset, parts = len(MAGIC) + 12, []
    try:
        for index in range(count):
            (size,) = struct.unpack(">Q", blob[offset:offset + 8])
            sealed = blob[offset + 8:offset + 8 + size]
            offset += 8 + size
            parts.append(aes.decrypt(prefix + struct.pack(">I", index), sealed,
                                     _aad(landing_id, purpose, index, index == count - 1)))
    except (InvalidTag, struct.error, ValueError):
        raise LandingTampered(problem) from None
    if offset != len(blob):
        raise LandingTampered(problem)
    return b"".join(parts)


@contextmanager
def encrypting_to(path: Path, key: bytes, landing_id: int, purpose: bytes = b"raw") -> Iterator[Callable[[bytes], None]]:
    """``encrypt_to`` for data that comes in pieces (so that it is never held whole): yields a
    ``write(piece)``; the copy, segment for segment what ``encrypt_to`` writes, appears when the block
    ends without an exception, and not at all otherwise."""
    aes = AESGCM(key)
    prefix = secrets.token_bytes(8)
    private_dir(path.parent)
    temp_name = f".{path.name}.part-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
    with atomic_writer(path, temp_name) as out:
        out.write(MAGIC + prefix + struct.pack(">I", 0))  # the segment count, written at the end
        pending, count = bytearray(), 0

        def seal(segment: bytes, last: bool) -> None:
            nonlocal count
            sealed = aes.encrypt(prefix + struct.pack(">I", count), segment, _aad(landing_id, purpose, count, last))
            out.write(struct.pack(">Q", len(sealed)) + sealed)
            count += 1

        def write(piece: bytes) -> None:
            pending.extend(piece)
            while len(pending) > SEGMENT:  # more follows: this segment is not the last
                seal(bytes(pending[:SEGMENT]), False)
                del pending[:SEGMENT]

        yield write
        seal(bytes(pending), True)
        out.seek(len(MAGIC) + 8)
        out.write(struct.pack(">I", count))


def decrypt_segments(path: Path, key: bytes, landing_id: int, purpose: bytes = b"raw") -> Iterator[bytes]:
    """``decrypt_from`` a segment at a time, for a reader that must not hold the whole file.

    Each segment is yielded once it is authenticated; a copy altered, reordered or cut short raises
    LandingTampered where that shows, possibly after earlier segments were yielded: commit nothing
    read this way before the iteration has ended.
    """
    aes = AESGCM(key)
    problem = f"landing copy {landing_id} ({purpose.decode()}) failed authentication"
    with open(path, "rb") as blob:
        head = blob.read(len(MAGIC) + 12)
        if len(head) < len(MAGIC) + 12 or not head.startswith(MAGIC):
            raise LandingTampered(problem)
        prefix = head[len(MAGIC):len(MAGIC) + 8]
        (count,) = struct.unpack(">I", head[len(MAGIC) + 8:])
        for index in range(count):
            size = blob.read(8)
            if len(size) != 8 or struct.unpack(">Q", size)[0] > SEGMENT + 16:  # 16: the GCM tag
                raise LandingTampered(problem)
            try:
                plain = aes.decrypt(prefix + struct.pack(">I", index), blob.read(struct.unpack(">Q", size)[0]),
                                    _aad(landing_id, purpose, index, index == count - 1))
            except (InvalidTag, ValueError):
                raise LandingTampered(problem) from None
            yield plain
        if blob.read(1):
            raise LandingTampered(problem)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_orphans(folder: Path, live_ids: Iterable[int]) -> int:
    """Remove what a killed run left in one source's landing folder; returns how many files went.

    An orphan is a copy whose landing has no key (its landing row was rolled back, or retention
    destroyed the key and died before the file: unreadable either way), or a temporary copy whose
    writer is dead (same host) or that is hours old (another host). The caller holds the source's
    lock, so no landing of this source is being written meanwhile.
    """
    if not folder.is_dir():
        return 0
    live, removed, host = set(live_ids), 0, socket.gethostname()
    for path in folder.iterdir():
        copy, part = COPY.match(path.name), PART.match(path.name)
        if copy:
            orphan = int(copy["id"]) not in live
        elif part:
            orphan = (not _alive(int(part["pid"])) if part["host"] == host
                      else time.time() - path.stat().st_mtime > FOREIGN_PART_AGE)
        else:
            continue
        if orphan:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


class LandingStore:
    """The landing copies of one warehouse, the one place that knows where they are, how they are keyed
    and locked: every landing path, key, lock, write, read, destroy and sweep goes through here.

    A copy is ``<root>/<source>/<landing id>.<raw|validated>.bin`` (``root`` is ``work_dir/landing``),
    encrypted under the landing's own key in the ``landing_key`` table. Changes to one source's landing
    log are serialised by :meth:`lock` (PostgreSQL; SQLite writers queue anyway).
    """

    def __init__(self, engine: Engine, root: Path):
        self.engine, self.root = engine, Path(root)

    @classmethod
    def of(cls, engine: Engine, config: Config) -> LandingStore:
        """The store of a config's warehouse and work_dir."""
        return cls(engine, config.landing_dir)

    # -- paths and keys ------------------------------------------------------------------------

    def folder(self, source: str) -> Path:
        return self.root / source

    def path(self, source: str, landing_id: int, purpose: bytes = RAW) -> Path:
        """Where a copy is (raw: the file as received; validated: the rows that passed validation)."""
        return self.folder(source) / f"{landing_id}.{purpose.decode()}.bin"

    def recorded_path(self, source: str, landing_id: int) -> str:
        """The raw copy's path as the landing log records it: relative to work_dir."""
        return str(self.path(source, landing_id).relative_to(self.root.parent))

    def key(self, conn: Connection, landing_id: int) -> bytes:
        """The landing's key; NoResultFound once retention destroyed it."""
        return conn.execute(select(landing_key.c.key).where(landing_key.c.landing_id == landing_id)).scalar_one()

    @staticmethod
    def lock(conn: Connection, source: str) -> None:
        """Serialise the landing-log changes of one source across concurrent runs (a backfill of several
        dates at once): held until the transaction ends. PostgreSQL only; SQLite writers queue anyway."""
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(7423002, hashtext(:source))"), {"source": source})

    def still(self, conn: Connection, source: str, landing_id: int, status: LandingStatus) -> bool:
        """Take the source's lock and check that the landing is still in ``status`` (a concurrent run, a
        backfill, may have moved it on meanwhile)."""
        self.lock(conn, source)
        return conn.execute(select(landing_log.c.status).where(landing_log.c.id == landing_id)).scalar_one() == status

    def landings(self, source: str, status: LandingStatus, reference_date: date, partner: str | None = None) -> list:
        """The landings of a source (of one of its partners, when given) in ``status`` dated on or before R,
        oldest first."""
        where = [landing_log.c.source == source, landing_log.c.status == status,
                 landing_log.c.file_date <= reference_date]
        if partner is not None:
            where.append(landing_log.c.partner == partner)
        with self.engine.connect() as conn:
            return conn.execute(
                select(landing_log.c.id, landing_log.c.dataset, landing_log.c.file_name, landing_log.c.file_date,
                       landing_log.c.partner)
                .where(*where).order_by(landing_log.c.file_date, landing_log.c.id)
            ).all()

    # -- write and read ------------------------------------------------------------------------

    def write(self, conn: Connection, source: str, landing_id: int, data: bytes) -> str:
        """Encrypt a new landing's raw copy under a new key, inside the caller's transaction (which holds
        the source's lock and inserted the landing row); returns the path to record. If the transaction
        does not commit, the caller must call :meth:`discard`: the copy must not outlive its row."""
        key = new_key()
        encrypt_to(self.path(source, landing_id), data, key, landing_id)
        conn.execute(insert(landing_key).values(landing_id=landing_id, key=key))
        return self.recorded_path(source, landing_id)

    def discard(self, source: str, landing_id: int) -> None:
        """Remove a copy whose landing row was rolled back."""
        self.path(source, landing_id).unlink(missing_ok=True)

    def _source_and_key(self, landing_id: int) -> tuple[str, bytes]:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(landing_log.c.source, landing_key.c.key)
                .join(landing_key, landing_key.c.landing_id == landing_log.c.id)
                .where(landing_log.c.id == landing_id)).one()
        return row.source, row.key

    def read(self, landing_id: int, purpose: bytes = RAW) -> bytes:
        """Decrypt a landing copy whole."""
        source, key = self._source_and_key(landing_id)
        return decrypt_from(self.path(source, landing_id, purpose), key, landing_id, purpose)

    def reader(self, landing_id: int, purpose: bytes = RAW) -> Callable[[], Iterator[bytes]]:
        """A function that decrypts a landing copy a segment at a time (see :func:`decrypt_segments`)."""
        source, key = self._source_and_key(landing_id)
        path = self.path(source, landing_id, purpose)
        return lambda: decrypt_segments(path, key, landing_id, purpose)

    @contextmanager
    def writing(self, landing_id: int, purpose: bytes = VALIDATED) -> Iterator[Callable[[bytes], None]]:
        """Write a further copy of a landing (the validated rows) in pieces, under the landing's key; it
        appears only when the block ends without an exception (see :func:`encrypting_to`)."""
        source, key = self._source_and_key(landing_id)
        with encrypting_to(self.path(source, landing_id, purpose), key, landing_id, purpose) as write:
            yield write

    # -- destroy and sweep ---------------------------------------------------------------------

    def destroy(self, landing_id: int, source: str) -> None:
        """Make a landing's copies unreadable for good: its key row goes first (committed), then its files;
        the landing log keeps the row, with no path and the time it was destroyed."""
        with self.engine.begin() as conn:
            conn.execute(delete(landing_key).where(landing_key.c.landing_id == landing_id))
            conn.execute(update(landing_log).where(landing_log.c.id == landing_id)
                         .values(landing_path=None, destroyed_at=datetime.now(UTC)))
        for purpose in PURPOSES:
            self.path(source, landing_id, purpose).unlink(missing_ok=True)

    def files(self) -> list[Path]:
        """Every file under the landing folder (programme end removes them all)."""
        return [p for p in self.root.rglob("*") if p.is_file()] if self.root.exists() else []

    def sweep(self, source: str) -> int:
        """Sweep one source's landing folder of what an interrupted (killed) run left behind: see
        :func:`sweep_orphans`. Takes the source's lock for its own transaction; returns how many went."""
        with self.engine.begin() as conn:
            self.lock(conn, source)
            live = conn.execute(select(landing_key.c.landing_id)
                                .join(landing_log, landing_log.c.id == landing_key.c.landing_id)
                                .where(landing_log.c.source == source)).scalars().all()
            return sweep_orphans(self.folder(source), live)

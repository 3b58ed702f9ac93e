"""Landing copies, encrypted at rest with a key per file (contract section 9).

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
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tfp.errors import LandingTampered
from tfp.fsmodes import atomic_writer, private_dir

MAGIC = b"TFPLAND1"
SEGMENT = 16 * 1024 * 1024
COPY = re.compile(r"^(?P<id>\d+)\.(?:raw|validated)\.bin$")
# A temporary copy names its writer, so that a sweep can tell a dead writer's leftovers from a live one's.
PART = re.compile(r"^\.\d+\.(?:raw|validated)\.bin\.part-(?P<host>.+)-(?P<pid>\d+)-[0-9a-f]{8}$")
FOREIGN_PART_AGE = 6 * 3600  # seconds: a temporary copy from another host is left alone until then


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


# -- landing copies in the warehouse: where a copy is, its key, the source's lock ---------------------
# (what extract, validate, stage and retention share; the LandingStore of issue 16 item 3 owns these)

def copy_path(landing_dir: Path, source: str, landing_id: int, purpose: bytes = b"raw") -> Path:
    """Where a landing's copy is: ``<landing_dir>/<source>/<id>.<raw|validated>.bin``."""
    return Path(landing_dir) / source / f"{landing_id}.{purpose.decode()}.bin"


def source_lock(conn, source: str) -> None:
    """Serialise the landing-log changes of one source across concurrent runs (a backfill of several
    dates at once): held until the transaction ends. PostgreSQL only; SQLite writers queue anyway."""
    from sqlalchemy import text

    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(7423002, hashtext(:source))"), {"source": source})


def landing_key_of(engine, landing_id: int) -> bytes:
    """A landing copy's key, from the warehouse (deleting it shreds the copy)."""
    from sqlalchemy import select

    from tfp.warehouse import landing_key

    with engine.connect() as conn:
        return conn.execute(select(landing_key.c.key).where(landing_key.c.landing_id == landing_id)).scalar_one()


def landing_copy_path(config, landing_id: int, purpose: bytes, engine) -> Path:
    """Where the copy of a landing is, from its source in the landing log."""
    from sqlalchemy import select

    from tfp.warehouse import landing_log

    with engine.connect() as conn:
        source = conn.execute(select(landing_log.c.source).where(landing_log.c.id == landing_id)).scalar_one()
    return copy_path(config.landing_dir, source, landing_id, purpose)


def read_landing(engine, config, landing_id: int, purpose: bytes = b"raw") -> bytes:
    """Decrypt a landing copy (raw: the file as received; validated: the rows that passed validation)."""
    return decrypt_from(landing_copy_path(config, landing_id, purpose, engine), landing_key_of(engine, landing_id),
                        landing_id, purpose)


def landings(engine, source: str, status: str, reference_date) -> list:
    """The landings of a source in ``status`` dated on or before R, oldest first."""
    from sqlalchemy import select

    from tfp.warehouse import landing_log

    with engine.connect() as conn:
        return conn.execute(
            select(landing_log.c.id, landing_log.c.dataset, landing_log.c.file_name, landing_log.c.file_date)
            .where(landing_log.c.source == source, landing_log.c.status == status,
                   landing_log.c.file_date <= reference_date)
            .order_by(landing_log.c.file_date, landing_log.c.id)
        ).all()


def still(conn, source: str, landing_id: int, status: str) -> bool:
    """Take the source's lock and check that the landing is still in ``status``."""
    from sqlalchemy import select

    from tfp.warehouse import landing_log

    source_lock(conn, source)
    return conn.execute(select(landing_log.c.status).where(landing_log.c.id == landing_id)).scalar_one() == status

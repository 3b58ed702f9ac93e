"""Stage 9: deliver the packaged files, atomically and idempotently (contract section 7, "Delivery rules").

Each file lands under a temporary name in the destination folder and is renamed onto its final
name only when complete. The delivery log remembers the plaintext checksum of what was sent, so a
re-run whose outputs are unchanged uploads nothing, even when age encryption makes the ciphertext
differ on every run; a changed output replaces the old one and is logged again.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import posixpath
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from sqlalchemy import Engine, insert, select

from tfp.sftp import SftpClient, SftpEndpoint, endpoint_from_connection
from tfp.warehouse import delivery_log

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeliveryFile:
    """One file to deliver: its delivered name, where it is locally, and what it says."""

    name: str
    local_path: Path
    plaintext_sha256: str  # of the content before encryption: the identity of the output
    rows: int | None = None  # data rows, excluding the header; None for the manifest and signature


class _Directory:
    """A local (or mounted) folder as a destination."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.destination = str(folder.resolve())

    def sizes(self) -> dict[str, int]:
        return {p.name: p.stat().st_size for p in self.folder.iterdir() if p.is_file()}

    def remove(self, name: str) -> None:
        (self.folder / name).unlink(missing_ok=True)

    def upload(self, data: bytes, name: str) -> None:
        fd, temp = tempfile.mkstemp(prefix=f".{name}.part-", dir=self.folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, self.folder / name)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        dir_fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)


class _Sftp:
    """A folder on an SFTP server as a destination."""

    def __init__(self, client: SftpClient, path: str):
        self.client = client
        self.path = path
        ep = client.endpoint
        self.destination = f"sftp://{ep.host}:{ep.port}{path if path.startswith('/') else '/' + path}"

    def sizes(self) -> dict[str, int]:
        return dict(self.client.list_files(self.path))

    def remove(self, name: str) -> None:
        self.client.remove(posixpath.join(self.path, name))

    def upload(self, data: bytes, name: str) -> None:
        self.client.upload_atomic(data, self.path, name)


@contextlib.contextmanager
def _destination(transport: str, path: str, conn_id: str | None,
                 endpoint: SftpEndpoint | None) -> Iterator[_Directory | _Sftp]:
    if transport == "directory":
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        yield _Directory(folder)
    elif transport == "sftp":
        if endpoint is None:
            if not conn_id:
                raise ValueError("SFTP delivery needs a conn_id or an endpoint")
            endpoint = endpoint_from_connection(conn_id)
        with SftpClient(endpoint) as client:
            yield _Sftp(client, path)
    else:
        raise ValueError(f"unknown delivery transport {transport!r}")


def _last_delivered(engine: Engine, reference_date: date, name: str, destination: str):
    with engine.connect() as conn:
        return conn.execute(
            select(delivery_log.c.plaintext_sha256, delivery_log.c.bytes)
            .where(delivery_log.c.reference_date == reference_date, delivery_log.c.file_name == name,
                   delivery_log.c.destination == destination)
            .order_by(delivery_log.c.id.desc()).limit(1)
        ).first()


def deliver(files: list[DeliveryFile], *, transport: str, path: str, conn_id: str | None,
            engine: Engine, reference_date: date, endpoint: SftpEndpoint | None = None) -> dict[str, int]:
    """Send ``files`` in the order given (the caller puts the manifest and its .sig last).

    A file is skipped when the last delivery of that name for this reference date to this
    destination had the same plaintext checksum and a file of the delivered size is still there;
    otherwise it is uploaded atomically and a delivery_log row is appended. Returns counts only.
    """
    uploaded = skipped = 0
    with _destination(transport, path, conn_id, endpoint) as dest:
        present = dest.sizes()
        # An upload killed before its rename leaves `.<name>.part-*`; only this date's names are ours to sweep.
        for stale in [n for n in present if any(n.startswith(f".{f.name}.part-") for f in files)]:
            dest.remove(stale)
            del present[stale]
        for f in files:
            last = _last_delivered(engine, reference_date, f.name, dest.destination)
            if last is not None and last.plaintext_sha256 == f.plaintext_sha256 and present.get(f.name) == last.bytes:
                skipped += 1
                log.info("delivery: %s unchanged, already at the destination; not uploaded", f.name)
                continue
            data = Path(f.local_path).read_bytes()
            dest.upload(data, f.name)
            with engine.begin() as conn:
                conn.execute(insert(delivery_log).values(
                    reference_date=reference_date, file_name=f.name, destination=dest.destination,
                    sha256=hashlib.sha256(data).hexdigest(), plaintext_sha256=f.plaintext_sha256,
                    bytes=len(data), rows=f.rows, delivered_at=datetime.now(UTC),
                ))
            uploaded += 1
            log.info("delivery: %s uploaded (%d bytes)", f.name, len(data))
    log.info("delivery to %s for %s: %d uploaded, %d skipped", dest.destination, reference_date, uploaded, skipped)
    return {"uploaded": uploaded, "skipped": skipped}

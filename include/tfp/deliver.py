"""Stage 9: deliver the packaged files, atomically and idempotently (contract section 7, "Delivery rules").

Each file lands under a temporary name in the destination folder and is renamed onto its final
name only when complete. The delivery log remembers the plaintext checksum and the SHA-256 of what was
sent. A file is not sent again when the log's last delivery of it had the same plaintext and the same
bytes and the destination still holds exactly those bytes (read back and hashed): package reuses an
unchanged output's ciphertext, so a re-run whose outputs are unchanged uploads nothing. Anything else
is uploaded again: a changed output; a fresh ciphertext of the same plaintext (the signed manifest now
lists that one, so the old one would fail the recipient's check); a destination file that is missing or
not what the log says.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import posixpath
import re
import secrets
import stat
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, insert, select

from tfp.fsmodes import atomic_write, private_dir
from tfp.sftp import SftpClient, SftpEndpoint, endpoint_from_connection
from tfp.warehouse import delivery_log

if TYPE_CHECKING:  # tfp.package imports pandas; deliver needs only the class's fields
    from tfp.context import DeliverResult, RunContext
    from tfp.package import PackagedFile

log = logging.getLogger(__name__)


class _Directory:
    """A local (or mounted) folder as a destination."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.destination = str(folder.resolve())

    def sizes(self) -> dict[str, int]:
        return {p.name: p.stat().st_size for p in self.folder.iterdir() if p.is_file()}

    def sha256(self, name: str) -> str | None:
        """Of the regular file ``name`` (never through a link), None when there is none."""
        try:
            fd = os.open(self.folder / name, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return None
            return hashlib.file_digest(f, "sha256").hexdigest()

    def remove(self, name: str) -> None:
        (self.folder / name).unlink(missing_ok=True)

    def upload(self, data: bytes, name: str) -> None:
        """0600, through a `.<name>.part-*` temporary file renamed into place (a link there is replaced)."""
        atomic_write(self.folder / name, data, temp_name=f".{name}.part-{secrets.token_hex(6)}")


class _Sftp:
    """A folder on an SFTP server as a destination."""

    def __init__(self, client: SftpClient, path: str):
        self.client = client
        self.path = path
        ep = client.endpoint
        self.destination = f"sftp://{ep.host}:{ep.port}{path if path.startswith('/') else '/' + path}"

    def sizes(self) -> dict[str, int]:
        return dict(self.client.list_files(self.path))

    def sha256(self, name: str) -> str | None:
        """Of the file ``name`` as read back from the server, None when it cannot be read."""
        try:
            return hashlib.sha256(self.client.read_bytes(posixpath.join(self.path, name))).hexdigest()
        except OSError:  # no such file, or not readable (a lost connection raises SftpError)
            return None

    def remove(self, name: str) -> None:
        self.client.remove(posixpath.join(self.path, name))

    def upload(self, data: bytes, name: str) -> None:
        self.client.upload_atomic(data, self.path, name)


@contextlib.contextmanager
def _destination(transport: str, path: str, conn_id: str | None,
                 endpoint: SftpEndpoint | None) -> Iterator[_Directory | _Sftp]:
    if transport == "directory":
        folder = Path(path)
        if not folder.is_dir():
            private_dir(folder)  # a folder tfp makes is 0700; an existing one is the recipient's, left as it is
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
            select(delivery_log.c.plaintext_sha256, delivery_log.c.sha256, delivery_log.c.bytes)
            .where(delivery_log.c.reference_date == reference_date, delivery_log.c.file_name == name,
                   delivery_log.c.destination == destination)
            .order_by(delivery_log.c.id.desc()).limit(1)
        ).first()


def _is_base_name(name: str) -> bool:
    return (bool(name) and "/" not in name and "\\" not in name and "\0" not in name and name not in (".", "..")
            and posixpath.basename(name) == name)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def deliver(files: list[PackagedFile], *, transport: str, path: str, conn_id: str | None,
            engine: Engine, reference_date: date, endpoint: SftpEndpoint | None = None,
            clock: Callable[[], datetime] = _utc_now) -> dict[str, int]:
    """Send ``files`` in the order given (the caller puts the manifest and its .sig last).

    A file is skipped when the last delivery of that name for this reference date to this destination
    had the same plaintext checksum and the same SHA-256 as the file now, and the destination holds a
    file of that size and SHA-256; otherwise it is uploaded atomically and a delivery_log row is
    appended. Every name must be a plain file name (nothing is sent otherwise), and a file whose bytes
    differ from the ``sha256`` it was checked with is refused. Returns counts only.
    """
    from tfp.package import OutboxTampered

    if bad := [f.name for f in files if not _is_base_name(f.name)]:
        raise OutboxTampered(f"{len(bad)} file(s) to deliver, such as {ascii(bad[0])[:120]}, are named by a path "
                             "rather than a file name; nothing was delivered")
    uploaded = skipped = 0
    with _destination(transport, path, conn_id, endpoint) as dest:
        present = dest.sizes()
        # An upload killed before its rename leaves `.<name>.part-*`; only this date's names are ours to sweep.
        for stale in [n for n in present if any(n.startswith(f".{f.name}.part-") for f in files)]:
            dest.remove(stale)
            del present[stale]
        for f in files:
            data = Path(f.path).read_bytes()
            sha = hashlib.sha256(data).hexdigest()
            if f.sha256 is not None and sha != f.sha256:
                raise OutboxTampered(f"{f.name} in the outbox changed after it was checked against its manifest; "
                                     "run package again")
            last = _last_delivered(engine, reference_date, f.name, dest.destination)
            if (last is not None and last.plaintext_sha256 == f.plaintext_sha256 and last.sha256 == sha
                    and present.get(f.name) == last.bytes and dest.sha256(f.name) == sha):
                skipped += 1
                log.info("delivery: %s unchanged, already at the destination; not uploaded", f.name)
                continue
            dest.upload(data, f.name)
            with engine.begin() as conn:
                conn.execute(insert(delivery_log).values(
                    reference_date=reference_date, file_name=f.name, destination=dest.destination,
                    sha256=sha, plaintext_sha256=f.plaintext_sha256,
                    bytes=len(data), rows=f.rows, delivered_at=clock(),
                ))
            uploaded += 1
            log.info("delivery: %s uploaded (%d bytes)", f.name, len(data))
        removed = _remove_withdrawn(dest, present, files)
    log.info("delivery to %s for %s: %d uploaded, %d skipped", dest.destination, reference_date, uploaded, skipped)
    return {"uploaded": uploaded, "skipped": skipped, **({"removed": removed} if removed else {})}


def _remove_withdrawn(dest, present: dict[str, int], files: list[PackagedFile]) -> int:
    """Remove, once the new manifest is in place, the files this LA and date had at the destination that its
    package no longer has (an identifiers file after ``delivery.identifiers`` was turned off; the other
    encryption's copy): listed by no manifest, they would fail the recipient's verify and, for the sealed
    identifiers file, stay in the analysts' folder. Only ``tfp_<kind>_<la>_<date>`` names of this package's
    own manifest are touched. Returns how many."""
    manifest = next((m for f in files if (m := _MANIFEST.fullmatch(f.name))), None)
    if manifest is None:
        return 0
    ours = re.compile(rf"tfp_[a-z]+_{manifest['la']}_{manifest['stamp']}\.(csv|csv\.age|json|json\.sig)")
    names = {f.name for f in files}
    withdrawn = sorted(n for n in present if ours.fullmatch(n) and n not in names)
    for name in withdrawn:
        dest.remove(name)
        log.info("delivery: %s removed from the destination: no longer in this date's package", name)
    return len(withdrawn)


_MANIFEST = re.compile(r"tfp_manifest_(?P<la>[A-Z][0-9]{8})_(?P<stamp>[0-9]{8})\.json")


def run(ctx: RunContext) -> DeliverResult:
    """The deliver task: send R's package, checked against its signed manifest, to the configured
    destination (a dry run checks the package and sends nothing)."""
    from tfp.context import DeliverResult
    from tfp.package import packaged_files

    files = packaged_files(ctx.config.outbox_dir, ctx.config.local_authority.code, ctx.reference_date,
                           ctx.keys.signing)
    names = tuple(f.name for f in files)
    if ctx.dry_run:
        return DeliverResult(stage="deliver", counts={"uploaded": 0, "skipped": len(files)}, delivered=(),
                             dry_run=True)
    from tfp.lineage import delivered

    d = ctx.config.delivery
    counts = deliver(files, transport=d.transport, path=d.path, conn_id=d.conn_id, engine=ctx.warehouse,
                     reference_date=ctx.reference_date, clock=ctx.clock)
    return DeliverResult(stage="deliver", counts=counts, delivered=names,
                         lineage=delivered(ctx.config, [f.path for f in files], names))

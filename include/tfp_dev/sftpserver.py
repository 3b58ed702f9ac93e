"""A real SSH/SFTP server in-process (asyncssh), for the tests and the demo.

It runs its own asyncio loop in a background thread so that synchronous code (paramiko, the
pipeline) can talk to it over loopback exactly as it would to the recipient's server. Clients are
chrooted to ``root`` and log in with a password. ``faults`` injects the failures delivery must
survive: a connection dropped midway through a transfer, a refused rename, a server that hangs,
a server without the posix-rename extension.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

import asyncssh

log = logging.getLogger(__name__)


@dataclass
class Faults:
    """Failures to inject; change them between (or during) transfers. All off by default."""

    fail_after_bytes: int | None = None  # drop the connection once this many bytes were read+written (one-shot)
    refuse_rename: bool = False  # rename and posix-rename answer "permission denied"
    hang_seconds: float = 0.0  # every open() stalls this long before answering
    no_posix_rename: bool = False  # behave like a server without the posix-rename@openssh.com extension
    drop_on_rename: bool = False  # drop the connection when a rename arrives (upload complete, not renamed); one-shot
    bytes_seen: int = 0  # counter behind fail_after_bytes


class _Sftp(asyncssh.SFTPServer):
    """asyncssh's local-filesystem SFTP server, chrooted, with the fault hooks."""

    def __init__(self, chan: asyncssh.SSHServerChannel, root: Path, faults: Faults):
        super().__init__(chan, chroot=os.fsencode(root))
        self._faults = faults

    def _count(self, n: int) -> None:
        faults = self._faults
        faults.bytes_seen += n
        if faults.fail_after_bytes is not None and faults.bytes_seen > faults.fail_after_bytes:
            faults.fail_after_bytes = None
            log.info("fault injected: connection dropped after %d bytes", faults.bytes_seen)
            self.connection.abort()
            raise asyncssh.SFTPConnectionLost("connection dropped by fault injection")

    async def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        if self._faults.hang_seconds:
            await asyncio.sleep(self._faults.hang_seconds)
        return super().open(path, pflags, attrs)

    def read(self, file_obj: object, offset: int, size: int) -> bytes:
        data = super().read(file_obj, offset, size)
        self._count(len(data))
        return data

    def write(self, file_obj: object, offset: int, data: bytes) -> int:
        self._count(len(data))
        return super().write(file_obj, offset, data)

    def _drop_on_rename(self) -> None:
        if self._faults.drop_on_rename:
            self._faults.drop_on_rename = False
            log.info("fault injected: connection dropped before a rename")
            self.connection.abort()
            raise asyncssh.SFTPConnectionLost("connection dropped by fault injection")

    def rename(self, oldpath: bytes, newpath: bytes) -> None:
        self._drop_on_rename()
        if self._faults.refuse_rename:
            raise asyncssh.SFTPPermissionDenied("rename refused by fault injection")
        return super().rename(oldpath, newpath)

    def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        self._drop_on_rename()
        if self._faults.no_posix_rename:
            raise asyncssh.SFTPOpUnsupported("Operation unsupported")
        if self._faults.refuse_rename:
            raise asyncssh.SFTPPermissionDenied("rename refused by fault injection")
        return super().posix_rename(oldpath, newpath)


class _PasswordServer(asyncssh.SSHServer):
    def __init__(self, owner: SftpServer):
        self._owner = owner
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._owner._connections.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._connections.discard(self._conn)

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return hmac.compare_digest(username.encode(), self._owner.username.encode()) and hmac.compare_digest(
            password.encode(), self._owner.password.encode()
        )


def _host_key(path: Path | None) -> asyncssh.SSHKey:
    """Load the host key at ``path``, creating it (0600) if it does not exist; a fresh one without a path."""
    if path is None:
        return asyncssh.generate_private_key("ssh-ed25519")
    if path.exists():
        return asyncssh.read_private_key(str(path))
    key = asyncssh.generate_private_key("ssh-ed25519")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.export_private_key("openssh"))
    return key


class SftpServer:
    """An SFTP server on ``host:port`` (port 0 picks a free one) serving ``root`` as ``/``."""

    def __init__(self, root: Path, username: str = "tfp", password: str | None = None,
                 host_key_path: Path | None = None, port: int = 0, host: str = "127.0.0.1"):
        self.root = Path(root).resolve()
        self.username = username
        self.password = password if password is not None else secrets.token_urlsafe(24)
        self.host = host
        self.port = port
        self.faults = Faults()
        self._key = _host_key(Path(host_key_path) if host_key_path else None)
        # "ssh-ed25519 AAAA..." without the comment: the form a connection's host_key extra pins
        self.host_key = " ".join(self._key.export_public_key("openssh").decode().split()[:2])
        self._connections: set[asyncssh.SSHServerConnection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._acceptor: asyncssh.SSHAcceptor | None = None

    def start(self) -> SftpServer:
        """Listen in a background thread; returns once the port is bound."""
        if self._thread is not None:
            return self
        self.root.mkdir(parents=True, exist_ok=True)
        loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name="tfp-sftp-server", daemon=True)
        self._loop = loop
        self._thread.start()
        try:
            self._acceptor = asyncio.run_coroutine_threadsafe(self._listen(), loop).result(timeout=30)
        except BaseException:
            self.stop()
            raise
        self.port = self._acceptor.get_port()
        log.info("SFTP server listening on %s:%d", self.host, self.port)
        return self

    async def _listen(self) -> asyncssh.SSHAcceptor:
        return await asyncssh.listen(
            self.host, self.port,
            server_host_keys=[self._key],
            server_factory=lambda: _PasswordServer(self),
            sftp_factory=lambda chan: _Sftp(chan, self.root, self.faults),
            allow_scp=False,
            login_timeout=30,
        )

    async def _shutdown(self) -> None:
        for conn in list(self._connections):
            conn.abort()
        if self._acceptor is not None:
            self._acceptor.close()
            await self._acceptor.wait_closed()
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self) -> None:
        """Close every connection and the listener, stop the loop and join its thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            if loop.is_running():
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()
            self._loop = self._thread = self._acceptor = None
            self._connections.clear()

    def __enter__(self) -> SftpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

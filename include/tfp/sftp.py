"""SFTP client with a pinned host key (paramiko), for partner drops and the delivery.

The host key is never learnt: it comes from the Connection's ``host_key`` extra and any
other key, or a host not pinned at all, is refused. Uploads go to a temporary name in the
destination folder, are size-checked and then renamed, so the recipient never sees half a file.
"""

from __future__ import annotations

import base64
import contextlib
import io
import logging
import posixpath
import secrets
import stat
from dataclasses import dataclass

import paramiko

from tfp import lookups
from tfp.errors import HostKeyRefused, RemoteFileTooLarge, SftpError
from tfp.lookups import ConnectionFields

log = logging.getLogger(__name__)


# What paramiko raises when the connection drops or stalls (as opposed to an SFTP status error)
_CONNECTION_ERRORS = (EOFError, paramiko.SSHException, TimeoutError, ConnectionError)


class _Capped(io.BytesIO):
    """A buffer that refuses to grow past ``cap`` bytes (a file that grows while it is read)."""

    def __init__(self, cap: int):
        super().__init__()
        self.cap = cap

    def write(self, data) -> int:
        if self.tell() + len(data) > self.cap:
            raise RemoteFileTooLarge(self.tell() + len(data))
        return super().write(data)


@dataclass(frozen=True)
class SftpEndpoint:
    host: str
    port: int
    username: str
    password: str | None
    private_key: str | None  # the private key text (OpenSSH or PEM), not a path
    host_key: str  # "ssh-ed25519 AAAA..."

    def __repr__(self) -> str:  # keep secrets out of logs and tracebacks
        return f"SftpEndpoint(host={self.host!r}, port={self.port}, username={self.username!r})"

    @property
    def known_hosts_name(self) -> str:
        """The host as known_hosts writes it: ``host`` on port 22, ``[host]:port`` otherwise."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


def _normalise_host_key(value: str, where: str) -> str:
    """``"<type> <base64>"``; a bare base64 blob (as the SFTP provider also accepts) gets its type from the blob."""
    parts = value.strip().split()
    try:
        blob = base64.b64decode(parts[-1], validate=True)
        n = int.from_bytes(blob[:4], "big")
        key_type = blob[4:4 + n].decode("ascii")
    except (IndexError, ValueError, UnicodeDecodeError) as e:
        raise SftpError(f"{where}: host_key is not an SSH public key") from e
    if len(parts) >= 2 and parts[0] != key_type:
        raise SftpError(f"{where}: host_key type {parts[0]} does not match its key data")
    return f"{key_type} {parts[-1]}"


def endpoint_of(conn_id: str, fields: ConnectionFields) -> SftpEndpoint:
    """The endpoint a Connection's plain fields describe; refused unless it has a host, a login and a pinned host key."""
    where = f"connection {conn_id}"
    extra = fields.extra or {}
    if not fields.host:
        raise SftpError(f"{where}: no host")
    if not fields.login:
        raise SftpError(f"{where}: no login")
    if str(extra.get("no_host_key_check", "false")).lower() in ("true", "1", "yes"):
        raise SftpError(f"{where}: no_host_key_check is on; the host key must be pinned")
    host_key = extra.get("host_key")
    if not host_key:
        raise SftpError(f"{where}: no host_key in its extras; the host key must be pinned")
    return SftpEndpoint(
        host=fields.host, port=int(fields.port or 22), username=fields.login, password=fields.password or None,
        private_key=extra.get("private_key") or None,
        host_key=_normalise_host_key(str(host_key), where),
    )


def endpoint_from_connection(conn_id: str) -> SftpEndpoint:
    """The endpoint of Connection ``conn_id``, from the installed Connection lookup (tfp.lookups: the
    Airflow Connection, under ``tfp_airflow``, which also reads ``AIRFLOW_CONN_<ID>``)."""
    fields = lookups.installed().connection(conn_id)
    if fields is None:
        raise SftpError(f"connection {conn_id} is not defined")
    return endpoint_of(conn_id, fields)


def _private_key(text: str) -> paramiko.PKey:
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key(io.StringIO(text))
        except (paramiko.SSHException, ValueError):
            continue
    raise SftpError("private_key is not an Ed25519, ECDSA or RSA private key")


class SftpClient:
    """One SSH connection and SFTP session to an endpoint; use as a context manager."""

    def __init__(self, endpoint: SftpEndpoint, timeout: float = 30.0):
        self.endpoint = endpoint
        self.timeout = timeout
        self._ssh: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None

    @property
    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            self.open()
        assert self._sftp is not None
        return self._sftp

    def open(self) -> SftpClient:
        ep = self.endpoint
        where = f"{ep.host}:{ep.port}"
        entry = paramiko.hostkeys.HostKeyEntry.from_line(f"{ep.known_hosts_name} {ep.host_key}")
        if entry is None or entry.key is None:
            raise SftpError(f"the pinned host key for {where} cannot be read")
        ssh = paramiko.SSHClient()
        ssh.get_host_keys().add(ep.known_hosts_name, entry.key.get_name(), entry.key)
        ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            ssh.connect(
                ep.host, port=ep.port, username=ep.username, password=ep.password,
                pkey=_private_key(ep.private_key) if ep.private_key else None,
                timeout=self.timeout, banner_timeout=self.timeout, auth_timeout=self.timeout,
                channel_timeout=self.timeout, look_for_keys=False, allow_agent=False,
            )
            sftp = ssh.open_sftp()
            sftp.get_channel().settimeout(self.timeout)
        except paramiko.BadHostKeyException as e:
            ssh.close()
            raise HostKeyRefused(f"host key of {where} does not match the pinned key; refusing to connect") from e
        except paramiko.AuthenticationException as e:
            ssh.close()
            raise SftpError(f"authentication to {where} as the configured user failed") from e
        except paramiko.SSHException as e:
            ssh.close()
            if "not found in known_hosts" in str(e):
                raise HostKeyRefused(f"host key of {where} is not pinned; refusing to connect") from e
            raise SftpError(f"SSH connection to {where} failed: {type(e).__name__}") from e
        except OSError as e:
            ssh.close()
            raise SftpError(f"cannot connect to {where}: {e.strerror or type(e).__name__}") from e
        self._ssh, self._sftp = ssh, sftp
        return self

    def close(self) -> None:
        """Close the session; never raises (the connection may already be gone)."""
        sftp, ssh = self._sftp, self._ssh
        self._sftp = self._ssh = None
        for closeable in (sftp, ssh):
            if closeable is not None:
                with contextlib.suppress(Exception):
                    closeable.close()

    def __enter__(self) -> SftpClient:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def list_files(self, path: str) -> list[tuple[str, int]]:
        """(name, size) of the regular files in ``path``, sorted by name."""
        return sorted((a.filename, a.st_size or 0) for a in self.sftp.listdir_attr(path)
                      if a.st_mode is not None and stat.S_ISREG(a.st_mode))

    def _dropped(self, e: BaseException) -> bool:
        """Whether ``e`` means the connection died or stalled (rather than an SFTP status error)."""
        if isinstance(e, _CONNECTION_ERRORS):
            return True
        transport = self._ssh.get_transport() if self._ssh is not None else None
        return isinstance(e, OSError) and (transport is None or not transport.is_active())

    def _lost(self, what: str, e: BaseException) -> SftpError:
        ep = self.endpoint
        return SftpError(f"{what} on {ep.host}:{ep.port} failed: connection lost or timed out ({type(e).__name__})")

    def read_bytes(self, path: str, max_bytes: int | None = None) -> bytes:
        """The file's bytes; with ``max_bytes``, its size is checked before a byte is read (and again
        while reading, should it grow), raising RemoteFileTooLarge."""
        if max_bytes is not None:
            size = self.stat(path).st_size or 0
            if size > max_bytes:
                raise RemoteFileTooLarge(size)
        buf = io.BytesIO() if max_bytes is None else _Capped(max_bytes)
        try:
            self.sftp.getfo(path, buf, prefetch=True)
        except OSError as e:
            if self._dropped(e):
                raise self._lost(f"reading {posixpath.basename(path)}", e) from e
            raise
        except _CONNECTION_ERRORS as e:
            raise self._lost(f"reading {posixpath.basename(path)}", e) from e
        return buf.getvalue()

    def stat(self, path: str) -> paramiko.SFTPAttributes:
        try:
            return self.sftp.stat(path)
        except _CONNECTION_ERRORS as e:
            raise self._lost(f"checking {posixpath.basename(path)}", e) from e

    def remove(self, path: str) -> None:
        self.sftp.remove(path)

    def upload_atomic(self, data: bytes, remote_dir: str, name: str) -> None:
        """Put ``data`` at ``remote_dir/name`` so that the name only ever holds a complete file.

        Upload to ``.<name>.part-<random>`` in the same folder, check its size, then rename over the
        final name (posix-rename overwrites atomically; without it, remove then rename). Temporary
        files left by an earlier, interrupted upload of the same name are removed first.
        """
        sftp = self.sftp
        prefix = f".{name}.part-"
        for stale, _size in self.list_files(remote_dir):
            if stale.startswith(prefix):
                sftp.remove(posixpath.join(remote_dir, stale))
        temp = posixpath.join(remote_dir, prefix + secrets.token_hex(6))
        final = posixpath.join(remote_dir, name)
        try:
            sftp.putfo(io.BytesIO(data), temp, file_size=len(data), confirm=False)
            size = sftp.stat(temp).st_size
            if size != len(data):
                raise SftpError(f"upload of {name} to {self.endpoint.host}: {size} bytes arrived, {len(data)} sent")
            try:
                sftp.posix_rename(temp, final)
            except OSError as e:
                if "unsupported" not in str(e).lower():
                    raise
                try:
                    sftp.remove(final)
                except FileNotFoundError:
                    pass
                sftp.rename(temp, final)
        except BaseException as e:
            try:
                sftp.remove(temp)
            except Exception:  # the connection may be gone; the next upload of this name removes it
                pass
            if self._dropped(e):
                raise self._lost(f"upload of {name}", e) from e
            if isinstance(e, OSError):  # an SFTP status: permission denied, no such folder, disk full...
                ep = self.endpoint
                raise SftpError(f"upload of {name} to {ep.host}:{ep.port} failed: "
                                f"{e.strerror or type(e).__name__}") from e
            raise
        log.info("uploaded %s (%d bytes) to %s:%d", name, len(data), self.endpoint.host, self.endpoint.port)

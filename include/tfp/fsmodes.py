"""File modes for what tfp writes that is personal or a key: 0600 files in 0700 folders, whatever the umask.

Every such write goes through :func:`private_dir` and :func:`atomic_write` (or :func:`atomic_writer`),
so a umask of 022 (the usual default) never leaves a warehouse, landing copy, outbox file or temporary
copy readable by other users of the machine. The process umask is never changed: modes are given at
creation and set exactly afterwards.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def private_dir(path: Path) -> Path:
    """Make ``path`` a 0700 folder: missing folders on the way are created 0700, and ``path`` itself is
    narrowed to 0700 if it already exists (a folder tfp owns, such as a landing or outbox folder)."""
    path = Path(path)
    missing = []
    for folder in (path, *path.parents):
        if folder.is_dir():
            break
        missing.append(folder)
    for folder in reversed(missing):
        try:
            os.mkdir(folder, PRIVATE_DIR)
        except FileExistsError:  # another process made it meanwhile, or it is not a folder at all
            _require_folder(folder)
            continue
        os.chmod(folder, PRIVATE_DIR)
    _require_folder(path)
    if stat.S_IMODE(os.stat(path).st_mode) != PRIVATE_DIR:
        os.chmod(path, PRIVATE_DIR)
    return path


def _require_folder(path: Path) -> None:
    """Refuse a path that exists but is not a folder (a file, a device such as /dev/null, a link to one):
    its mode is never tfp's to change."""
    if not stat.S_ISDIR(os.stat(path).st_mode):
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path))


def create_private_file(path: Path) -> bool:
    """Create ``path`` empty with mode 0600 unless it exists (never through a link); True when created."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, PRIVATE_FILE)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, PRIVATE_FILE)
    finally:
        os.close(fd)
    return True


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: Path, temp_name: str | None = None, mode: int | None = PRIVATE_FILE) -> Iterator[BinaryIO]:
    """Write ``path`` atomically: into a new temporary file in the same folder (created exclusively, never
    through a link), fsynced, then renamed over ``path``, so a reader never sees half a file and a link
    at ``path`` is replaced, not followed. The temporary file is removed when the body fails.

    ``mode`` is set exactly (0600 by default: what tfp writes is personal or a key, whatever the umask);
    ``None`` leaves it to the umask, for files that hold no personal value (run reports). ``temp_name``
    lets a caller name the temporary file (a sweep may need to recognise it); by default
    ``.<name>.<random>.tmp``. This is the one atomic write of the package: everything goes through it.
    """
    path = Path(path)
    temp = path.with_name(temp_name or f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666 if mode is None else mode)
    try:
        if mode is not None:
            os.fchmod(fd, mode)  # the umask can only have narrowed it; be exact
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    fsync_dir(path.parent)


def atomic_write(path: Path, data: bytes | str, mode: int | None = PRIVATE_FILE, temp_name: str | None = None) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` through :func:`atomic_writer`; mode 0600 unless told."""
    with atomic_writer(path, temp_name, mode) as out:
        out.write(data.encode("utf-8") if isinstance(data, str) else data)


def open_to_others(work_dir: Path, sqlite_file: Path | None) -> list[str]:
    """Warnings for the folders holding tfp's personal files that group or others can write to.

    Whoever can write to such a folder can swap or remove tfp's files in it (or plant a link where a
    file will be written). Covers ``work_dir`` itself, the folder it sits in, and the SQLite file's folder.
    """
    places = [("work_dir", Path(work_dir)), ("the folder holding work_dir", Path(work_dir).parent)]
    if sqlite_file is not None:
        places.append(("the folder holding the SQLite warehouse", Path(sqlite_file).parent))
    warnings, seen = [], set()
    for what, folder in places:
        try:
            mode = os.stat(folder).st_mode
        except FileNotFoundError:
            continue
        if folder in seen or not mode & (stat.S_IWGRP | stat.S_IWOTH):
            continue
        seen.add(folder)
        who = " and ".join(w for w, bit in (("group", stat.S_IWGRP), ("others", stat.S_IWOTH)) if mode & bit)
        warnings.append(f"{what} {folder} is writable by {who} (mode {stat.S_IMODE(mode):04o}): they could "
                        "replace or remove tfp's personal files; make it writable by its owner only")
    return warnings


def folder_warnings(config) -> list[str]:
    """:func:`open_to_others` for a config's work_dir and SQLite warehouse (what `tfp run` prints)."""
    from tfp.warehouse import sqlite_path

    return open_to_others(config.work_dir, sqlite_path(config.warehouse_url))

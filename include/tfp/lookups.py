"""Where a secret, a Variable or a Connection comes from when the environment does not hold it.

tfp itself reads environment variables only and knows nothing of Airflow. An orchestrator hands it
plain values through the three callables of :class:`Lookups`, installed once per process by the
process's entry point (the DAG files and ``tfp run`` call ``tfp_airflow.install()``). A lookup
returns ``None`` only when the name is not defined; a lookup that fails (a secrets backend down or
refusing) raises a :class:`tfp.errors.TfpError`, never ``None``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, repr=False)
class ConnectionFields:
    """A Connection's fields as plain values (an SFTP server's host, port, login, password and extras)."""

    host: str | None
    port: int | None
    login: str | None
    password: str | None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"ConnectionFields(host={self.host!r}, port={self.port!r}, <credentials redacted>)"


def _undefined(name: str) -> None:
    return None


def _no_masker(value: str) -> None:
    return None


@dataclass(frozen=True)
class Lookups:
    """``variable(name)``: a Variable's value or None; ``connection(conn_id)``: its fields or None;
    ``mask(value)``: tell the orchestrator's log masker about a secret tfp has read."""

    variable: Callable[[str], str | None] = _undefined
    connection: Callable[[str], ConnectionFields | None] = _undefined
    mask: Callable[[str], None] = _no_masker


_installed = Lookups()


def install(lookups: Lookups) -> Lookups:
    """Make ``lookups`` this process's; returns the ones it replaces (a test puts them back)."""
    global _installed
    previous, _installed = _installed, lookups
    return previous


def installed() -> Lookups:
    """This process's lookups: the environment only until an entry point installs others."""
    return _installed

"""A real SMTP server on loopback (aiosmtpd) that keeps what it is given, for the alert tests."""

from __future__ import annotations

import email
import email.header
import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import Message

from aiosmtpd.controller import Controller


class Inbox:
    """aiosmtpd handler keeping every message it is given."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.raw: list[bytes] = []
        self.port = 0

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's hook name)
        content = envelope.original_content or envelope.content
        self.raw.append(content)
        self.messages.append(email.message_from_bytes(content))
        return "250 Message accepted for delivery"

    def wait(self, count: int, timeout: float = 15) -> list[Message]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.messages

    def connection(self, to: str) -> str:
        """An ``AIRFLOW_CONN_<ID>`` value for an SMTP Connection to this inbox."""
        return json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": self.port,
                           "extra": {"from_email": "tfp@council.example", "to": to, "disable_ssl": True,
                                     "disable_tls": True, "timeout": 10, "retry_limit": 0}})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def smtp_server() -> Iterator[Inbox]:
    inbox = Inbox()
    inbox.port = _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=inbox.port)
    controller.start()
    try:
        yield inbox
    finally:
        controller.stop()


def text_of(message: Message) -> str:
    """Subject and every decoded text part of a message."""
    parts = [str(email.header.make_header(email.header.decode_header(message["Subject"] or "")))]
    for part in message.walk():
        if part.get_content_maintype() == "text":
            parts.append(part.get_payload(decode=True).decode(part.get_content_charset() or "utf-8"))
    return "\n".join(parts)

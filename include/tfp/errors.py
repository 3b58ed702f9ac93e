"""tfp's own errors: one base class, whose message is safe to show and whose hint tells the operator what to do.

A ``TfpError``'s message names files, rules, datasets, variables and Connections — never a value from
the data or a secret — so an alert quotes it (with its hint). Any other exception is a library's or
Python's, whose message may echo a value it was given: an alert names its class only (``tfp.notify``).

The classes keep their historic homes too (``tfp.config.ConfigError``, ``tfp.sftp.SftpError`` ...),
which re-export them from here. Each keeps the built-in base it had (``ValueError``, ``RuntimeError``)
so existing ``except`` clauses still catch it.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path


class TfpError(Exception):
    """Base of tfp's errors: ``message`` is safe to show (no values); ``hint`` is what the operator does next."""

    hint: str = "see the task log for the step that failed and the README's operations section"

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint

    def __str__(self) -> str:
        return self.message


# -- set-up: config, secrets, deployment -----------------------------------------------------------

class ConfigError(TfpError, ValueError):
    """A config file or secret that cannot be used; the message names the key and the problem."""

    hint = "correct the config file or the named variable (README: configuration, keys)"


class KeysExistError(ConfigError, FileExistsError):
    """A key file is already there: keys are never overwritten (the old ones may still be needed)."""

    hint = "choose an empty folder: existing keys are never overwritten"


class KeysFolderError(ConfigError):
    """The ``--out`` of ``tfp keys`` cannot be made or written (a missing parent, a file in the way, no
    permission, a read-only disk): the message names the path and the system's reason, never a key."""

    hint = "choose a folder you can write to, new or empty, on this machine's disk (for example --out ./keys)"


class SchemaBehind(ConfigError):
    """The warehouse's schema is older than this tfp's (or empty): its owner migrates it, runs never do."""

    hint = "migrate it as the warehouse's owner: tfp db upgrade --config FILE (README: the warehouse schema)"


class SchemaAhead(ConfigError):
    """The warehouse's schema is newer than this tfp: a newer release migrated it."""

    hint = "install the tfp release that migrated this warehouse (or a newer one); an older tfp never runs on it"


class SecretsBackendError(ConfigError):
    """The secrets backend failed or refused to answer: not the same as a variable that is not set."""

    hint = "check the Airflow secrets backend (its credentials, its network); the variable was not read"


class LiveAirflow(ConfigError):
    """``AIRFLOW_HOME`` is the home of an Airflow whose scheduler is running: ``tfp run`` would create
    runs beside (or replace) the scheduler's own and race it (contract section 10)."""

    hint = "trigger the DAG in that Airflow, or run tfp run with an AIRFLOW_HOME of its own"


class DevToolMissing(TfpError):
    """A development command (generate, demo) run where tfp_dev or its dependencies are not installed."""

    hint = "install tfp with its [dev] extra (pip install -e '.[dev]', or make install)"


# -- a night's input ---------------------------------------------------------------------------------

class SourceUnavailable(TfpError):
    """A local drop folder that does not exist, is not a folder or cannot be read: an error of this
    machine's set-up, which waiting does not mend, so the task fails at once (no retries). Network
    errors (an SFTP server down or slow) are other exceptions and are retried."""

    hint = "create the drop folder or correct its path or permissions in the config"

    def __init__(self, source: str, folder: Path, reason: str):
        super().__init__(f"source {source}: drop folder {folder} {reason}")
        self.source, self.folder, self.reason = source, folder, reason


class MissingInput(TfpError):
    """A night without a file on or before R for a dataset it needs; the message names the datasets."""

    hint = "ask the named partners for their file, then run the night again"

    def __init__(self, reference_date: date, missing: list[str]):
        self.missing = missing
        super().__init__(f"no file dated on or before {reference_date} for: {', '.join(missing)}; "
                         "nothing is packaged or delivered for this night")


class FeedOverdue(TfpError):
    """With ``freshness.on_overdue: fail``, a dataset whose newest file is older than its max age; the
    message names the datasets, their newest file dates and max ages, never a value from a file."""

    hint = ("ask the named partners for their file, then run the night again; if the feed's cadence is "
            "slower, raise freshness.max_age_days for it (or set freshness.on_overdue: warn)")

    def __init__(self, reference_date: date, overdue: list[tuple[str, date, int]]):
        self.overdue = [name for name, _, _ in overdue]
        listed = ", ".join(f"{name} (newest file {newest}, max age {days} days)" for name, newest, days in overdue)
        super().__init__(f"feeds overdue on {reference_date}: {listed}; nothing is packaged or delivered "
                         "for this night")


# -- landing -------------------------------------------------------------------------------------------

class LandingError(TfpError):
    """A file that cannot be landed as it is."""

    hint = "ask the partner for a corrected file; the drop folder keeps what was refused"


class NotARegularFile(LandingError):
    """A name in a drop folder that is a link, folder, pipe or device: refused, never read."""

    def __init__(self, kind: str):
        super().__init__(kind)
        self.kind = kind


class FileTooLarge(LandingError):
    """A file larger than ``quality.max_file_bytes``: refused before it is read."""

    def __init__(self, size: int):
        super().__init__(f"file larger than the limit ({size} bytes)")
        self.size = size


class LandingTampered(TfpError, RuntimeError):
    """A landing copy failed authentication: altered, truncated or encrypted under another key."""

    hint = "treat as a security incident: do not delete the copy; see the README's incident section"


# -- quality -------------------------------------------------------------------------------------------

class FileRejected(TfpError):
    """A file that breaks a file-level rule. The message names the file and the rule, never a value."""

    hint = "ask the partner for a corrected file (the run report lists the rule)"

    def __init__(self, file_name: str, rule: str) -> None:
        super().__init__(f"{file_name}: {rule}")
        self.file_name = file_name
        self.rule = rule


class FilesRejected(TfpError, RuntimeError):
    """One or more current files broke a file-level rule; the message names each file and rule."""

    hint = FileRejected.hint


# -- delivery ------------------------------------------------------------------------------------------

class SftpError(TfpError, RuntimeError):
    """An SFTP endpoint is misconfigured, refused, or a transfer failed."""

    hint = "check the named Airflow Connection and that the server is up (README: Connections)"


class HostKeyRefused(SftpError):
    """The server's host key is not the pinned one (or nothing is pinned)."""

    hint = "confirm the server's new key with its owner out of band before pinning it in the Connection"


class RemoteFileTooLarge(SftpError):
    """A remote file is larger than the reader's limit; nothing more of it is read."""

    def __init__(self, size: int):
        super().__init__(f"remote file larger than the limit ({size} bytes or more)")
        self.size = size


class OutboxTampered(LandingTampered):
    """A file in the outbox is not what tfp packaged: a manifest that does not verify or breaks the naming
    rules, a file that differs from its signed manifest, or a state file whose HMAC does not verify.
    The message names the file and the rule only."""


# -- retention -----------------------------------------------------------------------------------------

class RetentionIncomplete(TfpError, RuntimeError):
    """After deleting, something past its cutoff is still there."""

    hint = "run tfp retention again; if it persists, see the deletion log and the README's retention section"


# -- anything else -------------------------------------------------------------------------------------

class StageCrashed(TfpError, RuntimeError):
    """A stage failed with an error that is not tfp's own (a library's or Python's), whose message may quote
    a value it was given: a database's "Key (...)=(...) already exists", a parser's offending field. The
    message keeps the error's class and where in tfp it was raised; the original message is withheld
    from the task log, alerts, reports and lineage events, and the value-free traceback is logged instead."""

    hint = ("the task log shows where it failed (file, line and function of every frame); re-run the stage "
            "after fixing the cause, or report it with that log")

    def __init__(self, stage: str, error: BaseException) -> None:
        self.error_class = type(error).__name__
        frames = traceback_frames(error)
        # where tfp's own code called the failing library; the pipeline's wrapper is no news
        own = [f for f in frames if "/tfp/" in f.filename.replace("\\", "/") and not f.filename.endswith("pipeline.py")]
        where = own[-1] if own else (frames[-1] if frames else None)
        place = f" in {where.name} ({Path(where.filename).name}:{where.lineno})" if where else ""
        super().__init__(f"stage {stage} failed: {self.error_class}{place}")


def traceback_frames(error: BaseException) -> list:
    """The frames of ``error``'s traceback (file, line, function, source line): code, never a value."""
    import traceback

    return list(traceback.extract_tb(error.__traceback__)) if error.__traceback__ else []


def value_free_traceback(error: BaseException) -> str:
    """``error``'s traceback, its causes and contexts included, with every exception's message left out:
    only classes and frames (file, line, function, source line), so it can be logged."""
    import traceback

    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append("".join(traceback.format_list(traceback_frames(current))) + f"{type(current).__name__}: "
                     "<message withheld: it may quote a value>\n")
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return "\nThe above exception led to the following one:\n\n".join(reversed(parts))

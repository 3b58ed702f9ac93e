"""The linkage review queue (issue 15 item 3; contract section 10's `tfp review export` / `tfp review import`).

Each night ``tfp.link`` leaves the doubtful records unlinked (method ``queued``) and records here which
(record, candidate person) pairs it sent to review (``review_night``), each pair with a random review id
that stays the pair's in ``review_queue``. An authorised reviewer receives the pairs of a night as an
age-encrypted CSV with both sides' fields (``export_queue``), decides ``link`` or ``not_a_link`` for each,
and the decisions come back through ``import_decisions``, with who decided and when.

A decision is about a pair, not about a night: it applies to every night that sees that pair (the record
among the night's current partner rows, the person on its roster) whose reference date R is on or after
the decision's date (``decided_at`` in Europe/London). That is what "as of their date" means: a backfill
of a date before the decision keeps what the model alone decided then (the record queued), a backfill of
a later date applies it. A pair's latest decision on or before R wins (a reviewer may correct one).

Nothing here logs or raises a value from a record: messages name row numbers, review ids (random, not
derived from anything personal), counts and paths. The export is encrypted in memory and written 0600;
its plaintext never touches the disk.
"""

from __future__ import annotations

import csv
import getpass
import io
import logging
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, and_, delete, func, select, update

from tfp.current import record_key_column
from tfp.errors import TfpError
from tfp.statuses import ReviewDecision
from tfp.warehouse import insert_rows, links, review_decision, review_night, review_queue

log = logging.getLogger(__name__)

LONDON = ZoneInfo("Europe/London")
PERSON_FIELDS = ("forename", "surname", "date_of_birth", "sex", "postcode", "nino", "upn")
EXPORT_HEADER = (["review_id", "reason", "dataset", "match_probability", "record_id"]
                 + [f"record_{f}" for f in PERSON_FIELDS]
                 + ["person_ref", "person_family_ref"] + [f"person_{f}" for f in PERSON_FIELDS]
                 + ["decision", "reviewer", "decided_at"])
DECISION_COLUMNS = ("review_id", "decision", "reviewer", "decided_at")
MAX_REVIEWER = 100
# a decided_at later than now by more than this is refused (a clock a little ahead is not an error)
FUTURE_SLACK = timedelta(minutes=10)


class ReviewError(TfpError):
    """A review export or import that cannot be done; the message names rows, ids and paths, never a value."""

    hint = "see the README's linkage review section: tfp review export / tfp review import"


# -- the nightly side ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Decisions:
    """The reviewers' decisions in force on a night: per pair, its latest decision on or before R."""

    linked: dict[tuple[str, str], str] = field(default_factory=dict)  # (dataset, record_id) -> person_ref
    rejected: set[tuple[str, str, str]] = field(default_factory=set)  # (dataset, record_id, person_ref)

    def records(self) -> set[tuple[str, str]]:
        """The (dataset, record_id) of every record one of these decisions is about."""
        return set(self.linked) | {(d, r) for d, r, _ in self.rejected}


def decisions_as_of(conn, reference_date: date) -> Decisions:
    """Each pair's latest decision decided on or before R. When several of a record's pairs end at
    ``link`` (a reviewer linked it to another person later without undoing the first), the latest wins."""
    latest = (select(review_decision.c.review_id, func.max(review_decision.c.decided_at).label("at"))
              .where(review_decision.c.decided_on <= reference_date)
              .group_by(review_decision.c.review_id).subquery())
    rows = conn.execute(
        select(review_queue.c.dataset, review_queue.c.record_id, review_queue.c.person_ref,
               review_decision.c.decision, review_decision.c.decided_at)
        .join(latest, latest.c.review_id == review_queue.c.review_id)
        .join(review_decision, and_(review_decision.c.review_id == latest.c.review_id,
                                    review_decision.c.decided_at == latest.c.at))
        .order_by(review_decision.c.decided_at, review_queue.c.review_id)).all()
    decisions = Decisions()
    for dataset, record_id, person_ref, decision, _ in rows:  # oldest first: a later link replaces an earlier one
        if decision == ReviewDecision.LINK:
            decisions.linked[(dataset, record_id)] = person_ref
        else:
            decisions.rejected.add((dataset, record_id, person_ref))
    for (dataset, record_id), person_ref in decisions.linked.items():
        decisions.rejected.discard((dataset, record_id, person_ref))
    return decisions


def _new_review_id() -> str:
    """Random, so that it says nothing about the record or the person (it may be quoted in a message)."""
    return f"rv{secrets.token_hex(8)}"


def record_queue(conn, reference_date: date, pairs: Iterable[tuple[str, str, str, str, float | None]]) -> int:
    """Record the pairs (dataset, record_id, person_ref, reason, probability) night R sent to review:
    a pair seen before keeps its review id (and its first date becomes R if R is earlier); R's
    ``review_night`` rows are replaced. Returns the number of pairs."""
    pairs = list({(d, r, p): (d, r, p, reason, q) for d, r, p, reason, q in pairs}.values())
    conn.execute(delete(review_night).where(review_night.c.reference_date == reference_date))
    if not pairs:
        return 0
    known: dict[tuple[str, str, str], tuple[str, date]] = {}
    datasets = sorted({d for d, *_ in pairs})
    for dataset in datasets:
        ids = sorted({r for d, r, *_ in pairs if d == dataset})
        for i in range(0, len(ids), 500):
            for review_id, d, r, p, first in conn.execute(
                    select(review_queue.c.review_id, review_queue.c.dataset, review_queue.c.record_id,
                           review_queue.c.person_ref, review_queue.c.first_queued_on)
                    .where(review_queue.c.dataset == dataset, review_queue.c.record_id.in_(ids[i:i + 500]))):
                known[(d, r, p)] = (review_id, first)
    new = {"review_id": [], "dataset": [], "record_id": [], "person_ref": [], "first_queued_on": []}
    night = {"reference_date": [], "review_id": [], "reason": [], "match_probability": []}
    for dataset, record_id, person_ref, reason, probability in pairs:
        review_id, first = known.get((dataset, record_id, person_ref), (None, None))
        if review_id is None:
            review_id = _new_review_id()
            for column, value in zip(new, (review_id, dataset, record_id, person_ref, reference_date), strict=True):
                new[column].append(value)
        elif first > reference_date:  # a backfill of an earlier date queued it too
            conn.execute(update(review_queue).where(review_queue.c.review_id == review_id)
                         .values(first_queued_on=reference_date))
        for column, value in zip(night, (reference_date, review_id, str(reason),
                                         None if probability is None else round(float(probability), 6)), strict=True):
            night[column].append(value)
    insert_rows(conn, review_queue, new)
    insert_rows(conn, review_night, night)
    return len(pairs)


def review_counts(engine: Engine, reference_date: date) -> dict[str, int]:
    """The run report's counts for R: records queued and decided that night (from ``links``), pairs queued
    that night, and of those how many are still pending now (no decision recorded yet, on any date)."""
    from tfp.statuses import LinkMethod

    with engine.connect() as conn:
        by_method = dict(conn.execute(
            select(links.c.method, func.count()).where(links.c.reference_date == reference_date,
                                                       links.c.method.in_([LinkMethod.QUEUED, LinkMethod.REVIEWED]))
            .group_by(links.c.method)).all())
        pairs = conn.execute(select(func.count()).select_from(review_night)
                             .where(review_night.c.reference_date == reference_date)).scalar_one()
        decided = select(review_decision.c.review_id).distinct()
        pending = conn.execute(select(func.count()).select_from(review_night).where(
            review_night.c.reference_date == reference_date, review_night.c.review_id.not_in(decided))).scalar_one()
    return {"queued": int(by_method.get(LinkMethod.QUEUED, 0)), "reviewed_links": int(by_method.get(LinkMethod.REVIEWED, 0)),
            "pairs_queued": int(pairs), "pairs_pending": int(pending), "pairs_decided": int(pairs) - int(pending)}


# -- export ----------------------------------------------------------------------------------------

def _cell(value) -> str:
    if value is None:
        return ""
    try:
        import pandas as pd

        if pd.isna(value):
            return ""
    except (TypeError, ValueError):
        pass
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def export_rows(engine: Engine, reference_date: date) -> list[list[str]]:
    """The pairs night D queued that have no decision yet, with both sides' fields as of D: the roster's
    current row for the person, the dataset's current row for the record. Sorted so that a near-tie's
    candidates sit together (dataset, record, most probable first)."""
    from tfp.current import current_rows
    from tfp.feeds import PARTNER_DATASETS

    with engine.connect() as conn:
        ran = conn.execute(select(func.count()).select_from(links)
                           .where(links.c.reference_date == reference_date)).scalar_one()
        if not ran:
            raise ReviewError(f"no night has linked records for {reference_date}: run it first "
                              f"(tfp run --config FILE --date {reference_date})")
        decided = select(review_decision.c.review_id).distinct()
        queued = conn.execute(
            select(review_queue.c.review_id, review_queue.c.dataset, review_queue.c.record_id,
                   review_queue.c.person_ref, review_night.c.reason, review_night.c.match_probability)
            .join(review_night, review_night.c.review_id == review_queue.c.review_id)
            .where(review_night.c.reference_date == reference_date, review_queue.c.review_id.not_in(decided))).all()
        if not queued:
            return []
        roster = current_rows(conn, "families", reference_date)
        people = {str(r["person_ref"]): r for r in roster.to_dict("records")}
        records: dict[tuple[str, str], dict] = {}
        for dataset in PARTNER_DATASETS:
            wanted = {r for _, d, r, *_ in queued if d == dataset}
            if wanted:
                frame = current_rows(conn, dataset, reference_date)
                frame = frame[frame["record_id"].astype(str).isin(wanted)]
                records.update({(dataset, str(r["record_id"])): r for r in frame.to_dict("records")})
    rows = []
    for review_id, dataset, record_id, person_ref, reason, probability in queued:
        record = records.get((dataset, record_id), {})
        person = people.get(person_ref, {})
        rows.append([review_id, reason, dataset, "" if probability is None else f"{probability:.6f}", record_id,
                     *(_cell(record.get(f)) for f in PERSON_FIELDS),
                     person_ref, _cell(person.get("family_ref")), *(_cell(person.get(f)) for f in PERSON_FIELDS),
                     "", "", ""])
    rows.sort(key=lambda r: (r[2], r[4], -(float(r[3]) if r[3] else 0.0), r[0]))
    return rows


def _recipient(value: str):
    import pyrage

    try:
        return pyrage.x25519.Recipient.from_str(value.strip())
    except Exception:  # noqa: BLE001 - pyrage's own error type; the key is public, but say only what is wrong
        raise ReviewError("the review recipient is not an age public key (age1...)",
                          hint="give --recipient age1... or set linkage.review_recipient") from None


def export_queue(engine: Engine, reference_date: date, out: Path, recipient: str | None) -> int:
    """`tfp review export`: night D's undecided pairs as a CSV encrypted to ``recipient`` with age, written
    0600 to ``out`` (the plaintext exists only in memory). Returns the number of rows."""
    import pyrage

    from tfp.fsmodes import atomic_write

    if not recipient:
        raise ReviewError("no reviewer to encrypt the queue to",
                          hint="give --recipient age1... or set linkage.review_recipient in the config")
    key = _recipient(recipient)
    rows = export_rows(engine, reference_date)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(EXPORT_HEADER)
    writer.writerows(rows)
    out = Path(out)
    if out.parent and not out.parent.is_dir():
        raise ReviewError(f"the folder of --out is not there: {out.parent}", hint="create it, or choose another path")
    atomic_write(out, pyrage.encrypt(buffer.getvalue().encode("utf-8"), [key]))
    log.info("review export %s: %d pairs written encrypted to %s", reference_date, len(rows), out)
    return len(rows)


# -- import ----------------------------------------------------------------------------------------

def _identity(path: Path):
    from tfp.verify import _identity as read_identity

    try:
        return read_identity(Path(path))
    except OSError:
        raise ReviewError(f"the age identity file cannot be read: {path}") from None


def _read_decisions(path: Path, identity_path: Path | None) -> str:
    """The decisions file's text: decrypted in memory when it is an age file (``--identity`` needed)."""
    import pyrage

    path = Path(path)
    if not path.is_file():
        raise ReviewError(f"the decisions file is not there or not a file: {path}")
    data = path.read_bytes()
    if data.startswith(b"age-encryption.org/"):
        if identity_path is None:
            raise ReviewError(f"{path} is age-encrypted: give --identity FILE to decrypt it")
        identity = _identity(identity_path)
        if identity is None:
            raise ReviewError(f"no AGE-SECRET-KEY- line in {identity_path}")
        try:
            data = pyrage.decrypt(data, [identity])
        except Exception:  # noqa: BLE001 - pyrage's DecryptError; no value in it, but say it plainly
            raise ReviewError(f"{path} cannot be decrypted with that age identity") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ReviewError(f"{path} is not UTF-8 text") from None


def _decided_at(text: str) -> datetime | None:
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo is not None else None


@dataclass(frozen=True)
class ImportOutcome:
    """What an import did, in counts."""

    recorded: int  # new decisions stored
    already: int  # the same decision was recorded before (the file imported again)
    undecided: int  # rows the reviewer left without a decision


def import_decisions(engine: Engine, path: Path, identity_path: Path | None = None,
                     clock: Callable[[], datetime] | None = None, imported_by: str | None = None) -> ImportOutcome:
    """`tfp review import`: validate every row, then record all the decisions in one transaction, or none.

    Read: ``review_id``, ``decision`` (link | not_a_link; empty = not decided yet, skipped), ``reviewer``
    and ``decided_at`` (ISO 8601 with a UTC offset); every other column (the exported fields) is ignored
    and never stored. Refused, naming the row numbers: an unknown review id, another decision word, an
    empty or over-long reviewer, a decided_at without offset or in the future or before the pair was first
    queued, the same review id twice, two ``link`` for one record in the file, and a decision that
    contradicts one already recorded for the same review id and time.
    """
    now = (clock or (lambda: datetime.now(UTC)))()
    reader = csv.DictReader(io.StringIO(_read_decisions(path, identity_path)))
    missing = [c for c in DECISION_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ReviewError(f"{Path(path).name} has no column {', '.join(missing)}; the header needs "
                          f"{', '.join(DECISION_COLUMNS)}")
    problems: dict[str, list[int]] = {}
    chosen: list[tuple[int, str, str, str, datetime]] = []
    undecided = 0
    for number, row in enumerate(reader, start=2):  # row 1 is the header
        decision = (row.get("decision") or "").strip()
        if not decision:
            undecided += 1
            continue
        review_id = (row.get("review_id") or "").strip()
        reviewer = (row.get("reviewer") or "").strip()
        at = _decided_at(row.get("decided_at") or "")
        if decision not in {d.value for d in ReviewDecision}:
            problems.setdefault("decision is not link or not_a_link", []).append(number)
        if not reviewer or len(reviewer) > MAX_REVIEWER:
            problems.setdefault(f"reviewer is empty or longer than {MAX_REVIEWER} characters", []).append(number)
        if at is None:
            problems.setdefault("decided_at is not an ISO 8601 date and time with a UTC offset", []).append(number)
        elif at > now + FUTURE_SLACK:
            problems.setdefault("decided_at is in the future", []).append(number)
        chosen.append((number, review_id, decision, reviewer, at))
    with engine.connect() as conn:
        ids = sorted({c[1] for c in chosen})
        known = {}
        for i in range(0, len(ids), 500):
            known.update({r.review_id: r for r in conn.execute(
                select(review_queue).where(review_queue.c.review_id.in_(ids[i:i + 500])))})
        before = {}
        for i in range(0, len(ids), 500):
            before.update({(r.review_id, _utc(r.decided_at)): r for r in conn.execute(
                select(review_decision).where(review_decision.c.review_id.in_(ids[i:i + 500])))})
    seen: dict[str, int] = {}
    links_per_record: dict[tuple[str, str], list[int]] = {}
    for number, review_id, decision, reviewer, at in chosen:
        pair = known.get(review_id)
        if pair is None:
            problems.setdefault("review_id is not in the review queue", []).append(number)
            continue
        if review_id in seen:
            problems.setdefault("review_id appears more than once", []).append(number)
        seen[review_id] = number
        if at is not None and at.astimezone(LONDON).date() < pair.first_queued_on:
            problems.setdefault("decided_at is before the pair was first queued", []).append(number)
        if decision == ReviewDecision.LINK:
            links_per_record.setdefault((pair.dataset, pair.record_id), []).append(number)
        old = before.get((review_id, _utc(at))) if at is not None else None
        if old is not None and (old.decision != decision or old.reviewer != reviewer):
            problems.setdefault("a different decision is recorded for this review_id at this decided_at",
                                []).append(number)
    for numbers in links_per_record.values():
        if len(numbers) > 1:
            problems.setdefault("link for more than one person of one record", []).extend(numbers)
    if problems:
        detail = "; ".join(f"{rule} (rows {', '.join(map(str, sorted(set(n))[:20]))}"
                           f"{' …' if len(set(n)) > 20 else ''})" for rule, n in problems.items())
        raise ReviewError(f"{Path(path).name}: nothing imported: {detail}",
                          hint="correct those rows (row 1 is the header) and import the file again")
    new = [c for c in chosen if (c[1], _utc(c[4])) not in before]
    who = (imported_by or _os_user())[:100]
    with engine.begin() as conn:
        insert_rows(conn, review_decision, {
            "review_id": [c[1] for c in new],
            "decided_at": [c[4].astimezone(UTC) for c in new],
            "decided_on": [c[4].astimezone(LONDON).date() for c in new],
            "decision": [c[2] for c in new],
            "reviewer": [c[3] for c in new],
            "imported_at": [now] * len(new),
            "imported_by": [who] * len(new),
        })
    outcome = ImportOutcome(recorded=len(new), already=len(chosen) - len(new), undecided=undecided)
    log.info("review import: %d decisions recorded, %d recorded before, %d rows undecided",
             outcome.recorded, outcome.already, outcome.undecided)
    return outcome


def _utc(value: datetime | None) -> datetime | None:
    """A timestamp as aware UTC (SQLite returns naive UTC), so the file's and the warehouse's compare."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


# -- retention -------------------------------------------------------------------------------------

def pairs_of_gone_records(conn) -> list[str]:
    """Review ids whose record no longer has a staged row (aged out or deleted with a withdrawn person)."""
    from sqlalchemy import exists

    from tfp.feeds import PARTNER_DATASETS
    from tfp.warehouse import staging

    gone: list[str] = []
    for dataset in PARTNER_DATASETS:
        table = staging[dataset]
        gone += conn.execute(select(review_queue.c.review_id).where(
            review_queue.c.dataset == dataset,
            ~exists().where(record_key_column(table) == review_queue.c.record_id))).scalars().all()
    gone += conn.execute(select(review_queue.c.review_id).where(
        review_queue.c.dataset.not_in(list(PARTNER_DATASETS)))).scalars().all()
    return sorted(set(gone))


def pairs_of_people(conn, people: Iterable[str]) -> list[str]:
    """Review ids whose candidate person is one of ``people``."""
    refs = sorted(people)
    found: list[str] = []
    for i in range(0, len(refs), 500):
        found += conn.execute(select(review_queue.c.review_id)
                              .where(review_queue.c.person_ref.in_(refs[i:i + 500]))).scalars().all()
    return sorted(set(found))


def review_rows(conn, review_ids: list[str]) -> int:
    """How many rows (queue, nights, decisions) these review ids hold."""
    total = 0
    for table in (review_queue, review_night, review_decision):
        for i in range(0, len(review_ids), 500):
            total += conn.execute(select(func.count()).select_from(table)
                                  .where(table.c.review_id.in_(review_ids[i:i + 500]))).scalar_one()
    return total


def delete_reviews(conn, review_ids: list[str]) -> int:
    """Delete these pairs with their nights and decisions (the reviewer's name and dates go too)."""
    deleted = 0
    for i in range(0, len(review_ids), 500):
        chunk = review_ids[i:i + 500]
        for table in (review_night, review_decision, review_queue):
            deleted += conn.execute(delete(table).where(table.c.review_id.in_(chunk))).rowcount
    return deleted

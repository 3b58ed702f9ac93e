"""Stage 2: read a feed file and check it against its Great Expectations suite (contract section 3).

Each dataset has one suite in ``expectations/<dataset>.json``, generated from ``tfp.feeds`` by
``python -m tfp.validate --write-suites`` so that a rule is written down once. A row that breaks a
row-level rule is quarantined with the rules it broke; a file that breaks a file-level rule raises
``FileRejected`` and fails the run.

Great Expectations does the checking. Checks that are not a single built-in expectation (a date that
is a real calendar date, a UPN check letter) are computed vectorised in pandas as helper columns
(``<column>__is_date`` and so on) that the suite's expectations then assert. Failing rows come back
from GX as ``_row`` numbers only (``RESULT_FORMAT``: the frame is indexed by ``_row`` and
``exclude_unexpected_values`` keeps values out of the results); only counts are kept
(``ValidationResult.expectations``). Results are not stored in the GX context either: the suite runs
through GX's validator directly, not ``ValidationDefinition.run``, which files every result in the
context's results store.

A file is never held whole (``validate_file``): its bytes come in pieces (a landing copy decrypted a
segment at a time) and are read twice by Arrow's streaming CSV reader. The first pass makes the
file-level checks and finds the record_ids that occur more than once; the second validates about
``CHUNK_BYTES`` at a time and hands on the clean rows as CSV. GX's result of each chunk is summed
into what a run over the whole file gives, so what is stored does not depend on the chunking; only
``record_id_unique`` needs the whole file, and it gets it from the first pass. Memory peaks at about
twice the file's size (``tfp_dev.bench.validation_memory``), where it was over twelve times.
"""

from __future__ import annotations

import codecs
import io
import json
import logging
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cache
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from sqlalchemy import Engine, delete, func, insert, select, update

from tfp import feeds, identifiers
from tfp.config import Config
from tfp.errors import FileRejected, FilesRejected
from tfp.landing import VALIDATED, LandingStore
from tfp.resources import expectations_dir
from tfp.statuses import LandingStatus
from tfp.warehouse import landing_log, quarantine

if TYPE_CHECKING:
    from tfp.context import RunContext, StageResult

log = logging.getLogger(__name__)

# expectations/ in a checkout, tfp/expectations in an installed wheel (tfp.resources); TFP_EXPECTATIONS_DIR wins
EXPECTATIONS_DIR = Path(os.environ.get("TFP_EXPECTATIONS_DIR") or expectations_dir())
ROW = "_row"
BOM = b"\xef\xbb\xbf"
CHUNK_BYTES = 8 * 1024 * 1024  # about this much of a file is validated at a time: what bounds validation's memory
BLOCK_BYTES = 1024 * 1024  # what Arrow parses at a time (its default; it reads up to 32 blocks ahead)
DECODE_BYTES = 1024 * 1024  # the UTF-8 check decodes this much at a time
DOB_FROM = 19000101  # dates of birth from 1900-01-01, as YYYYMMDD
FILE_DATE_PARAMETER = "file_date"  # GX suite parameter: the file's date as YYYYMMDD

INTEGER = r"^[0-9]{1,9}$"  # a non-negative integer that fits the warehouse's INTEGER columns
DECIMAL = r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)$"
DATE_SHAPE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
DATETIME_TAIL = r"^(?:[T ].+)?$"  # what may follow the date of an ISO 8601 datetime
# feeds.TERM with its named groups made non-capturing (pandas warns about groups in str.contains).
TERM_FORMAT = re.sub(r"\(\?P<\w+>", "(?:", feeds.TERM.pattern)
DATE_SHAPE_RE = re.compile(DATE_SHAPE)
FITS = "_values__fit"  # helper column: every value of the row fits its warehouse column
DATETIME_TAIL_RE = re.compile(DATETIME_TAIL)

# COMPLETE lists every failing row; with ``_row`` as the frame's named index and
# exclude_unexpected_values, GX returns only row numbers ([{"_row": [...]}]) and never the values.
RESULT_FORMAT: dict[str, Any] = {
    "result_format": "COMPLETE",
    "unexpected_index_column_names": [ROW],
    "exclude_unexpected_values": True,
    "return_unexpected_index_query": False,
    "partial_unexpected_count": 0,
}


@dataclass
class ValidationResult:
    """What validation made of one file: the clean rows, the quarantined rows and counts."""

    clean: pd.DataFrame
    quarantined: pd.DataFrame
    rule_counts: dict[str, int]
    rows_read: int
    expectations: list[dict[str, Any]] = field(default_factory=list)  # per expectation: counts only
    gx_result: dict[str, Any] = field(default_factory=dict)  # GX's own result, sanitised: for Data Docs


# --------------------------------------------------------------------------------------------------
# Reading, in chunks: a file is never held whole (contract section 3's file-level rules, streamed)


class _Plaintext(io.RawIOBase):
    """A feed's bytes, given as pieces, as a file for Arrow's streaming CSV reader.

    On the way through it makes the byte-level checks ``read_feed`` always made on the whole file
    (UTF-8, NUL bytes, an unclosed quote, nothing but blanks), drops a leading BOM and adds a line end
    at the end if the file lacks one (Arrow cannot read a header-only file without it).
    """

    def __init__(self, pieces: Iterable[bytes]) -> None:
        super().__init__()
        self._pieces = iter(pieces)
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._buffer = memoryview(b"")
        self._offset = 0
        self._head: bytes | None = b""  # the first bytes until the BOM is settled, then None
        self._ended = False
        self.utf8 = True
        self.nul = False
        self.quotes = 0
        self.blank = True
        self.size = 0
        self._last = b""

    def readable(self) -> bool:
        return True

    def _check(self, piece: bytes) -> bytes:
        if self.utf8:
            try:
                for start in range(0, len(piece), DECODE_BYTES):
                    self._decoder.decode(piece[start:start + DECODE_BYTES])
            except UnicodeDecodeError:
                self.utf8 = False
        self.nul = self.nul or b"\x00" in piece
        self.quotes += piece.count(b'"')
        self.blank = self.blank and not piece.strip()
        self.size += len(piece)
        if piece:
            self._last = piece[-1:]
        return piece

    def _more(self) -> bytes:
        """The next checked bytes for the reader; b"" at the end."""
        for piece in self._pieces:
            if self._head is not None:
                self._head += piece
                if len(self._head) < len(BOM):
                    continue
                piece, self._head = self._head.removeprefix(BOM), None
            if piece:
                return self._check(piece)
        if self._ended:
            return b""
        self._ended = True
        tail = self._check(self._head.removeprefix(BOM)) if self._head else b""  # shorter than a BOM
        self._head = None
        if self.utf8:
            try:
                self._decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                self.utf8 = False
        return tail + (b"" if not self.size or self._last in (b"\n", b"\r") else b"\n")

    def read(self, size: int = -1) -> bytes:
        """``size`` bytes unless the file ends first (Arrow takes a short read for a block), made
        with one allocation: Arrow reads ahead on a thread whose malloc arena keeps what it frees."""
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(BLOCK_BYTES), b""))
        if self._offset + size <= len(self._buffer):
            self._offset += size
            return self._buffer[self._offset - size:self._offset].tobytes()
        out = bytearray(size)  # across pieces, or at the end
        return bytes(out[:self.readinto(out)])

    def readinto(self, target: Any) -> int:
        """Fill ``target`` unless the file ends first: Arrow takes a short read for a block."""
        filled = 0
        while filled < len(target):
            if self._offset >= len(self._buffer):
                self._buffer, self._offset = memoryview(self._more()), 0
                if not self._buffer:
                    break
            n = min(len(target) - filled, len(self._buffer) - self._offset)
            target[filled:filled + n] = self._buffer[self._offset:self._offset + n]
            self._offset += n
            filled += n
        return filled

    def drain(self) -> None:
        """Run the checks over what the reader did not read (after it stopped at a broken row)."""
        self._buffer, self._offset = memoryview(b""), 0
        while self._more():
            pass

    def reject(self, file_name: str) -> None:
        """Raise the first byte-level rule the file broke, in the order they were always checked."""
        if not self.utf8:
            raise FileRejected(file_name, "not readable as UTF-8")
        if self.blank:
            return
        if self.nul:  # UTF-16 or a damaged file; PostgreSQL text cannot hold NUL either
            raise FileRejected(file_name, "not readable as CSV (it contains NUL bytes)")
        if self.quotes % 2:
            raise FileRejected(file_name, "not readable as CSV (a quoted field is not closed)")


@dataclass
class FeedScan:
    """What a first pass over a feed found: how to read it again, its rows and its duplicated ids."""

    rows: int
    duplicated: pd.Index  # record_ids (stripped, non-empty) on more than one row of the file
    block_size: int = 0
    names: tuple[str, ...] = ()  # the header's column names; () for a file with nothing but blanks


def _csv_reader(source: _Plaintext, block_size: int, names: Sequence[str] = ()) -> Any:
    """Arrow's streaming CSV reader, RFC 4180 strictly, every named column read as text."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    return pacsv.open_csv(
        source,
        read_options=pacsv.ReadOptions(block_size=block_size, use_threads=False),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.string()),
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )


def _head(pieces: Iterable[bytes], size: int) -> Iterator[bytes]:
    """The first ``size`` bytes or so of a file: enough for Arrow to read the header from."""
    for piece in pieces:
        yield piece[:size]
        size -= len(piece)
        if size <= 0:
            return


def scan_feed(open_pieces: Callable[[], Iterable[bytes]], file_name: str, dataset: str,
              block_bytes: int = BLOCK_BYTES) -> FeedScan:
    """The first pass over a feed: its file-level rules, its row count and its duplicated record_ids.

    ``open_pieces`` gives the file's bytes from the start, in pieces, each time it is called. RFC 4180
    is enforced strictly: a row with too few or too many fields, or a quoted field that never ends,
    makes the whole file unreadable rather than silently shifting values.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = feeds.DATASETS[dataset].columns
    block_size = block_bytes
    while True:
        source = _Plaintext(open_pieces())
        names: tuple[str, ...] = ()
        ids: list[Any] = []
        rows = 0
        try:
            # The header's names first (from the first block), so that every column, extra ones
            # included, is read as text: a type guessed from one block could fail on a later one.
            names = tuple(_csv_reader(_Plaintext(_head(open_pieces(), 2 * block_size)), block_size).schema.names)
            position = names.index("record_id") if "record_id" in names else None
            for batch in _csv_reader(source, block_size, names):
                rows += batch.num_rows
                if position is not None:
                    record_ids = batch.column(position).to_pandas().astype("str").str.strip()  # as _normalised
                    ids.append(pa.array(record_ids[record_ids != ""].array, type=pa.large_string()))
            parsed = True
        except (pa.ArrowInvalid, UnicodeDecodeError):  # the latter: a header name that is not UTF-8
            parsed = False
        source.drain()
        source.reject(file_name)
        if source.blank:
            return FeedScan(rows=0, duplicated=pd.Index([], dtype="str"))
        if parsed:
            break
        if block_size > source.size:
            # Arrow's message quotes the offending row; it must not reach a log.
            raise FileRejected(file_name, "not readable as CSV (a row has the wrong number of fields)")
        # A row longer than a block fails to parse as if it were broken: try once with the whole
        # file as one block before calling the file unreadable.
        block_size = source.size + 2
    optional = feeds.DATASETS[dataset].optional
    for column in columns:
        if column not in names and column not in optional:
            raise FileRejected(file_name, f"required column missing: {column}")
        if names.count(column) > 1:
            raise FileRejected(file_name, f"not readable as CSV (column repeated: {column})")
    # Sorted, a repeated id sits next to itself (a sort takes far less memory than a hash table here).
    every_id = pa.chunked_array(ids, type=pa.large_string()).combine_chunks()
    ordered = every_id.take(pc.sort_indices(every_id))
    del every_id
    repeated = pc.filter(ordered[1:], pc.equal(ordered[1:], ordered[:-1])) if len(ordered) > 1 else ordered[:0]
    duplicated = pd.Index(pc.unique(repeated).to_pylist(), dtype="str")
    return FeedScan(rows=rows, duplicated=duplicated, block_size=block_size, names=names)


def feed_chunks(open_pieces: Callable[[], Iterable[bytes]], scan: FeedScan, dataset: str,
                chunk_bytes: int = CHUNK_BYTES) -> Iterator[pd.DataFrame]:
    """The second pass: the feed as frames of about ``chunk_bytes`` of its columns each (whole rows),
    the dataset's columns as strings (empty = "") plus ``_row``, the row's number in the file."""
    columns = list(feeds.DATASETS[dataset].columns)
    if not scan.names:
        return
    first, batches, size = 1, [], 0
    for batch in chain(_csv_reader(_Plaintext(open_pieces()), scan.block_size, scan.names), [None]):
        if batch is not None:
            batches.append(batch)
            size += batch.nbytes
            if size < chunk_bytes:
                continue
        frame = _to_frame(batches, columns)
        batches, size = [], 0
        if not len(frame):
            continue
        frame[ROW] = pd.RangeIndex(first, first + len(frame), dtype="int64")
        first += len(frame)
        yield frame


def _to_frame(batches: list[Any], columns: list[str]) -> pd.DataFrame:
    import pyarrow as pa

    if not batches:
        return pd.DataFrame()
    table = pa.Table.from_batches(batches)
    present = [c for c in columns if c in table.column_names]  # an optional column left out reads as empty
    frame = table.select([table.column_names.index(c) for c in present]).to_pandas()
    frame.columns = present
    for column in columns:
        if column not in present:
            frame[column] = ""
    frame = frame[columns]
    for column in columns:  # a header-only file gives no rows to convert
        frame[column] = frame[column].astype("str")
    return frame.reset_index(drop=True)


def read_feed(data: bytes, file_name: str, dataset: str) -> pd.DataFrame:
    """Parse a whole feed file's bytes into strings (empty = ""), the dataset's columns plus ``_row``.

    The same two passes as the validate stage makes over a landing copy, with the frames put together.
    """
    columns = feeds.DATASETS[dataset].columns
    scan = scan_feed(lambda: [data], file_name, dataset)
    frames = list(feed_chunks(lambda: [data], scan, dataset))
    if not frames:
        return _with_row(pd.DataFrame({c: pd.Series([], dtype="str") for c in columns}))
    return pd.concat(frames, ignore_index=True)


def _with_row(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.reset_index(drop=True)
    frame[ROW] = pd.RangeIndex(1, len(frame) + 1, dtype="int64")
    return frame


# --------------------------------------------------------------------------------------------------
# The suites


def _expectation(type_: str, rule: str, **kwargs: Any) -> dict[str, Any]:
    return {"type": type_, "kwargs": kwargs, "meta": {"rule": rule}}


def suite_dict(dataset: str) -> dict[str, Any]:
    """The GX suite of one dataset, as stored in ``expectations/<dataset>.json``.

    Columns named ``<column>__...`` are helper columns that ``validate_feed`` derives before GX runs.
    """
    d = feeds.DATASETS[dataset]
    exps: list[dict[str, Any]] = []
    for column in d.required:
        exps.append(_expectation("expect_column_values_to_not_be_null", f"required:{column}", column=column))
    for column in d.dates:
        exps.append(_expectation("expect_column_values_to_be_in_set", f"date:{column}",
                                 column=f"{column}__is_date", value_set=[True]))
    for column in d.datetimes:
        exps.append(_expectation("expect_column_values_to_be_in_set", f"datetime:{column}",
                                 column=f"{column}__is_datetime", value_set=[True]))
    if "date_of_birth" in d.dates:
        exps.append(_expectation("expect_column_values_to_be_between", "date_of_birth_from_1900",
                                 column="date_of_birth__yyyymmdd", min_value=DOB_FROM))
    for column in d.not_after_file_date:
        exps.append(_expectation("expect_column_values_to_be_between", f"not_after_file_date:{column}",
                                 column=f"{column}__yyyymmdd", max_value={"$PARAMETER": FILE_DATE_PARAMETER}))
    for column, codes in d.codes.items():
        exps.append(_expectation("expect_column_values_to_be_in_set", f"code:{column}",
                                 column=column, value_set=list(codes)))
    if "nino" in d.columns:
        exps.append(_expectation("expect_column_values_to_match_regex", "nino_format",
                                 column="nino", regex=identifiers.NINO.pattern))
    if "upn" in d.columns:
        exps.append(_expectation("expect_column_values_to_be_in_set", "upn_check_letter",
                                 column="upn__valid", value_set=[True]))
    if "nhs_number" in d.columns:
        exps.append(_expectation("expect_column_values_to_be_in_set", "nhs_number_check_digit",
                                 column="nhs_number__valid", value_set=[True]))
    if "postcode" in d.columns:
        exps.append(_expectation("expect_column_values_to_match_regex", "postcode_format",
                                 column="postcode", regex=identifiers.POSTCODE.pattern))
    for column in d.integers:
        exps.append(_expectation("expect_column_values_to_match_regex", f"integer:{column}",
                                 column=column, regex=INTEGER))
    for column in d.decimals:
        exps.append(_expectation("expect_column_values_to_match_regex", f"decimal:{column}",
                                 column=column, regex=DECIMAL))
    if {"sessions_missed", "sessions_possible"} <= set(d.columns):
        exps.append(_expectation("expect_column_pair_values_a_to_be_greater_than_b",
                                 "sessions_missed_within_possible",
                                 column_A="sessions_possible__number", column_B="sessions_missed__number",
                                 or_equal=True, ignore_row_if="either_value_is_missing"))
    if "term" in d.columns:
        exps.append(_expectation("expect_column_values_to_match_regex", "term_format",
                                 column="term", regex=TERM_FORMAT))
    exps.append(_expectation("expect_column_values_to_be_in_set", "value_too_long",
                             column=FITS, value_set=[True]))
    # Every row of a duplicated record_id is unexpected: which of them is right cannot be known.
    exps.append(_expectation("expect_column_values_to_be_unique", "record_id_unique", column="record_id"))
    return {
        "name": dataset,
        "expectations": exps,
        "meta": {"generated_by": "python -m tfp.validate --write-suites (from tfp.feeds); do not edit"},
        "notes": f"Row-level rules of contract section 3 for the {d.source} {dataset} feed. "
                 "meta.rule names the rule a failing row is quarantined with.",
    }


def suite_json(dataset: str) -> str:
    return json.dumps(suite_dict(dataset), indent=2, ensure_ascii=False) + "\n"


def write_suites(directory: Path | None = None) -> list[Path]:
    """(Re)write every dataset's suite JSON from ``tfp.feeds``."""
    directory = Path(directory or EXPECTATIONS_DIR)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for dataset in feeds.DATASETS:
        path = directory / f"{dataset}.json"
        path.write_text(suite_json(dataset), encoding="utf-8")
        paths.append(path)
    return paths


# --------------------------------------------------------------------------------------------------
# Great Expectations: one ephemeral context per process


@cache
def _context() -> Any:
    """An in-memory GX context (writes nothing to disk), created once: GX is slow to import. Analytics are
    off in the context's own config, not by changing the process's environment."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=True),
                               analytics_enabled=False)
    context = gx.get_context(project_config=config, mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    context.data_sources.add_pandas("tfp_feeds")
    return context


@cache
def _suite_and_batch_definition(dataset: str) -> tuple[Any, Any]:
    """Load the committed suite JSON of a dataset into the context, with a whole-frame batch definition."""
    from great_expectations.core import ExpectationSuite

    context = _context()
    stored = json.loads((EXPECTATIONS_DIR / f"{dataset}.json").read_text(encoding="utf-8"))
    suite = context.suites.add(ExpectationSuite(**stored))
    if len(suite.expectations) != len(stored["expectations"]):  # GX drops invalid ones with a log line
        raise RuntimeError(f"expectation suite {dataset}: some expectations are not valid")
    asset = context.data_sources.get("tfp_feeds").add_dataframe_asset(dataset)
    return suite, asset.add_batch_definition_whole_dataframe("whole_file")


# --------------------------------------------------------------------------------------------------
# Validating


def _blank_to_null(s: pd.Series) -> pd.Series:
    return s.where(s != "")


def _map_distinct(s: pd.Series, fn: Callable[[str], Any], dtype: str) -> pd.Series:
    """``s.map(fn)`` calling ``fn`` once per distinct value: identifiers repeat, regexes are slow."""
    codes, distinct = pd.factorize(s)
    return pd.Series(pd.array([fn(v) for v in distinct], dtype=dtype).take(codes), index=s.index)


def _date_number(value: str) -> float:
    """A ``YYYY-MM-DD`` calendar date as the number YYYYMMDD; NaN when it is not one (2023-02-30)."""
    if not DATE_SHAPE_RE.match(value):
        return math.nan
    try:
        day = date.fromisoformat(value)
    except ValueError:
        return math.nan
    return float(day.year * 10000 + day.month * 100 + day.day)


def _datetime_date_number(value: str) -> float:
    """An ISO 8601 datetime's date as YYYYMMDD (the date as written, not in UTC); NaN when not one."""
    if not DATETIME_TAIL_RE.match(value[10:]):
        return math.nan
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return math.nan
    return _date_number(value[:10])


def _parse(s: pd.Series, number: Callable[[str], float]) -> tuple[pd.Series, pd.Series]:
    """(valid flag, NA when empty; the date as YYYYMMDD, NaN when empty or invalid), once per distinct value."""
    yyyymmdd = _map_distinct(s, number, "float64")
    return _present_flag(s, yyyymmdd.notna()), yyyymmdd


def _present_flag(raw: pd.Series, ok: pd.Series) -> pd.Series:
    """A nullable boolean: NA where the raw value is empty (GX skips nulls), else ``ok``."""
    return ok.astype("boolean").where(raw != "", pd.NA)


def _normalised(frame: pd.DataFrame, d: feeds.Dataset) -> pd.DataFrame:
    """The dataset's columns stripped of surrounding spaces, identifiers normalised, empty sex as U."""
    out = pd.DataFrame({c: frame[c].astype("str").str.strip() for c in d.columns})
    if "postcode" in out:
        out["postcode"] = _map_distinct(out["postcode"], identifiers.normalise_postcode, "str")
    if "nino" in out:
        out["nino"] = _map_distinct(out["nino"], identifiers.normalise_nino, "str")
    if "upn" in out:
        out["upn"] = out["upn"].str.upper()
    if "nhs_number" in out:
        out["nhs_number"] = _map_distinct(out["nhs_number"], identifiers.normalise_nhs_number, "str")
    if "sex" in out:
        out["sex"] = out["sex"].where(out["sex"] != "", "U")
    out[ROW] = frame[ROW].to_numpy()
    return out


@cache
def _checked_columns(dataset: str) -> tuple[frozenset[str], frozenset[str]]:
    """(the columns the suite reads, those a regex reads): only these go into the GX frame."""
    exps = suite_dict(dataset)["expectations"]
    read = frozenset(e["kwargs"][k] for e in exps for k in ("column", "column_A", "column_B") if k in e["kwargs"])
    matched = frozenset(e["kwargs"]["column"] for e in exps if e["type"] == "expect_column_values_to_match_regex")
    return read, matched


def _gx_frame(values: pd.DataFrame, d: feeds.Dataset) -> pd.DataFrame:
    """The frame GX checks: empty values as nulls plus the helper columns the suite names.

    ``record_id`` goes in as a number per distinct value (NaN when empty): presence and uniqueness
    read the same, and GX fingerprints every batch by hashing it, which is slow on distinct strings.
    The index is ``_row``, so that GX reports failing rows by number.
    """
    checked, matched = _checked_columns(d.name)
    # Columns no regex reads go in as categoricals: GX filters the frame once per expectation,
    # and taking rows of a categorical is far cheaper than of Arrow strings.
    g = {c: _blank_to_null(values[c]) if c in matched else _blank_to_null(values[c]).astype("category")
         for c in d.columns if c in checked and c != "record_id"}
    codes, _ = pd.factorize(values["record_id"].where(values["record_id"] != ""))
    g["record_id"] = pd.Series(codes, index=values.index).where(codes >= 0).astype("float64")
    for column in d.dates:
        g[f"{column}__is_date"], g[f"{column}__yyyymmdd"] = _parse(values[column], _date_number)
    for column in d.datetimes:
        g[f"{column}__is_datetime"], g[f"{column}__yyyymmdd"] = _parse(values[column], _datetime_date_number)
    if "upn" in d.columns:
        upn = values["upn"]
        g["upn__valid"] = _present_flag(upn, _map_distinct(upn, identifiers.is_valid_upn, "bool"))
    if "nhs_number" in d.columns:
        nhs = values["nhs_number"]
        g["nhs_number__valid"] = _present_flag(nhs, _map_distinct(nhs, identifiers.is_valid_nhs_number, "bool"))
    g[FITS] = _values_fit(values, d)
    for column in d.integers:
        g[f"{column}__number"] = pd.to_numeric(values[column].where(values[column].str.match(INTEGER)),
                                               errors="coerce").astype("float64")
    return pd.DataFrame(g).set_index(pd.Index(values[ROW].to_numpy(), name=ROW))


@cache
def _max_lengths(dataset: str) -> dict[str, int]:
    """The length limit of each text column of the dataset's staging table (record_id included)."""
    from tfp.warehouse import staging

    return {c.name: c.type.length for c in staging[dataset].columns
            if c.name in feeds.DATASETS[dataset].columns and getattr(c.type, "length", None)}


def _values_fit(values: pd.DataFrame, d: feeds.Dataset) -> pd.Series:
    """False for a row with a value longer than its staging column holds (PostgreSQL would refuse it)."""
    fits = pd.Series(True, index=values.index)
    for column, limit in _max_lengths(d.name).items():
        fits &= values[column].str.len().fillna(0).to_numpy() <= limit
    return fits


def _run_suite(gx_frame: pd.DataFrame, dataset: str, file_date: date, file_name: str
               ) -> tuple[list[tuple[str, set[int]]], dict[str, Any]]:
    """Run the dataset's suite on one chunk; return (rule, failing _row numbers) per expectation in the
    suite's order, and GX's result with every value and row number taken out (for Data Docs)."""
    suite, batch_definition = _suite_and_batch_definition(dataset)
    from great_expectations.validator.v1_validator import Validator

    validator = Validator(batch_definition=batch_definition, result_format=RESULT_FORMAT,
                          batch_parameters={"dataframe": gx_frame})
    result = validator.validate_expectation_suite(
        suite, expectation_parameters={FILE_DATE_PARAMETER: int(f"{file_date:%Y%m%d}")})
    failures: list[tuple[str, set[int]]] = []
    order = {e.meta["rule"]: i for i, e in reversed(list(enumerate(suite.expectations)))}
    # GX returns results in no fixed order; the suite's order keeps "rules" strings stable.
    for r in sorted(result.results, key=lambda r: order[r.expectation_config.meta["rule"]]):
        rule = r.expectation_config.meta["rule"]
        if r.exception_info.get("raised_exception") or any(
            isinstance(v, dict) and v.get("raised_exception") for v in r.exception_info.values()
        ):
            # GX's exception text may quote values: name the rule only.
            raise RuntimeError(f"{file_name}: the expectation for rule {rule} could not be evaluated")
        failures.append((rule, {int(row) for entry in r.result.get("unexpected_index_list") or ()
                                for row in entry[ROW]}))
        r.result.pop("unexpected_index_list", None)  # row numbers, possibly millions: not worth serialising
    from tfp.datadocs import sanitise

    return failures, sanitise(result.to_json_dict())


def _rule(expectation_result: dict[str, Any]) -> str:
    return expectation_result["expectation_config"]["meta"]["rule"]


def _add_result(total: dict[str, Any] | None, chunk: dict[str, Any]) -> dict[str, Any]:
    """Add one chunk's (sanitised) GX result to the file's: counts add up, an expectation succeeds
    when it succeeds on every chunk. Percentages are made by ``_finish_result``."""
    if total is None:
        return chunk
    of_chunk = {_rule(r): r for r in chunk["results"]}
    for r in total["results"]:
        c = of_chunk[_rule(r)]
        r["success"] = bool(r["success"] and c["success"])
        for key in ("element_count", "missing_count", "unexpected_count"):
            if key in r["result"]:
                r["result"][key] += c["result"][key]
    return total


def _finish_result(total: dict[str, Any]) -> dict[str, Any]:
    """The percentages and statistics of the summed counts, as GX computes them for a whole file
    (``_format_map_output``, ``calc_validation_statistics``)."""
    for r in total["results"]:
        res = r["result"]
        if "element_count" not in res or res.get("unexpected_count") is None:
            continue
        n, bad = res["element_count"], res["unexpected_count"]
        of_all = bad / n * 100 if n > 0 else None
        if "missing_count" in res:  # GX left out the missing counts when it skipped them
            present = n - res["missing_count"]
            res["missing_percent"] = res["missing_count"] / n * 100 if n > 0 else None
            res["unexpected_percent_total"] = of_all
            res["unexpected_percent_nonmissing"] = bad / present * 100 if n > 0 and present > 0 else None
            res["unexpected_percent"] = res["unexpected_percent_nonmissing"]
        else:
            res["unexpected_percent"] = of_all
    results = total["results"]
    successful = sum(bool(r["success"]) for r in results)
    total["success"] = successful == len(results)
    total["statistics"] = {"evaluated_expectations": len(results), "successful_expectations": successful,
                           "unsuccessful_expectations": len(results) - successful,
                           "success_percent": successful / len(results) * 100 if results else None}
    return total


@dataclass
class _Chunk:
    values: pd.DataFrame  # normalised
    bad: pd.Series  # per row: quarantined
    broken: dict[str, pd.Series]  # per rule: the rows that broke it
    result: dict[str, Any]  # GX's result, sanitised


def _check_chunk(frame: pd.DataFrame, d: feeds.Dataset, file_date: date, file_name: str,
                 duplicated: pd.Index | None) -> _Chunk:
    """Run the suite on one chunk. ``duplicated``: the record_ids on several rows of the whole file
    (None when the chunk is the whole file): GX sees duplicates within the chunk only, so every row
    of a record_id the file repeats is counted as unexpected here, and GX's count made to match."""
    values = _normalised(frame, d)
    failures, result = _run_suite(_gx_frame(values, d), d.name, file_date, file_name)
    if duplicated is not None:
        repeated = values["record_id"].isin(duplicated).to_numpy()
        rows = set(frame[ROW].to_numpy()[repeated].tolist())
        failures = [(rule, rows if rule == "record_id_unique" else found) for rule, found in failures]
        for r in result["results"]:
            if _rule(r) == "record_id_unique":
                r["result"]["unexpected_count"] = len(rows)
                r["success"] = not rows
    row_numbers = pd.Series(frame[ROW].to_numpy(), index=frame.index)
    broken: dict[str, pd.Series] = {}
    for rule, rows in failures:
        if not rows:
            continue
        mask = row_numbers.isin(rows)
        broken[rule] = mask if rule not in broken else broken[rule] | mask
    bad = pd.Series(False, index=frame.index)
    for mask in broken.values():
        bad |= mask
    return _Chunk(values=values, bad=bad, broken=broken, result=result)


def _quarantined(frame: pd.DataFrame, chunk: _Chunk, d: feeds.Dataset) -> pd.DataFrame:
    """The chunk's bad rows as they came (``_row``, record_id, the rules broken, the row as JSON)."""
    bad_index = frame.index[chunk.bad.to_numpy()]
    rules = pd.Series("", index=bad_index, dtype="str")
    for rule, mask in chunk.broken.items():
        hit = mask[bad_index]
        rules = rules.where(~hit, rules.where(rules == "", rules + "; ") + rule)
    raw = frame.loc[bad_index, list(d.columns)]
    return pd.DataFrame({
        ROW: frame.loc[bad_index, ROW].astype("int64"),
        "record_id": raw["record_id"].astype("str"),
        "rules": rules.astype("str"),
        "row_json": [json.dumps(dict(zip(d.columns, r, strict=True)), ensure_ascii=False)
                     for r in zip(*(raw[c].tolist() for c in d.columns), strict=True)],
    }).reset_index(drop=True)


def _empty(d: feeds.Dataset) -> pd.DataFrame:
    return _with_row(pd.DataFrame({c: pd.Series([], dtype="str") for c in d.columns}))


def validate_chunks(chunks: Iterable[pd.DataFrame], dataset: str, file_date: date, file_name: str,
                    max_bad_row_fraction: float, duplicated: pd.Index | None = None, rows: int | None = None,
                    keep_clean: Callable[[pd.DataFrame], None] | None = None) -> ValidationResult:
    """Split a feed read in chunks into clean and quarantined rows by its GX suite.

    ``record_id_unique``: every row of a record_id that occurs more than once in the file is
    quarantined, since which of them is right cannot be known; with several chunks ``duplicated``
    must name those record_ids (``scan_feed`` finds them). ``keep_clean`` takes each chunk's clean
    rows as they are found (then ``clean`` is empty); once ``rows`` (the file's row count) tells that
    the file will be rejected, nothing more is kept, only counted.
    Raises ``FileRejected`` when more than ``max_bad_row_fraction`` of the rows are quarantined.
    """
    d = feeds.DATASETS[dataset]
    n = n_bad = 0
    rule_counts: dict[str, int] = {}
    quarantined: list[pd.DataFrame] = []
    clean: list[pd.DataFrame] = []
    total: dict[str, Any] | None = None
    for frame in chunks:
        if total is not None and not len(frame):
            continue
        chunk = _check_chunk(frame, d, file_date, file_name, duplicated)
        total = _add_result(total, chunk.result)
        n += len(frame)
        n_bad += int(chunk.bad.sum())
        for rule, mask in chunk.broken.items():
            rule_counts[rule] = rule_counts.get(rule, 0) + int(mask.sum())
        if rows and n_bad / rows > max_bad_row_fraction:
            continue  # the file will be rejected: keep nothing more of it
        quarantined.append(_quarantined(frame, chunk, d))
        good = chunk.values[~chunk.bad.to_numpy()].reset_index(drop=True)
        if keep_clean is None:
            clean.append(good)
        else:
            keep_clean(good)
    if total is None:  # no rows: the suite still runs, as GX's result is kept
        return validate_chunks([_empty(d)], dataset, file_date, file_name, max_bad_row_fraction,
                               keep_clean=keep_clean)
    if n and n_bad / n > max_bad_row_fraction:
        raise FileRejected(
            file_name, f"more than {max_bad_row_fraction:.0%} of rows quarantined ({n_bad} of {n})")
    gx_result = _finish_result(total)
    summary = [{"rule": _rule(r), "expectation_type": r["expectation_config"]["type"], "success": bool(r["success"]),
                "element_count": int(r["result"].get("element_count", 0)),
                "unexpected_count": int(r["result"].get("unexpected_count", 0))} for r in gx_result["results"]]
    order = {e["meta"]["rule"]: i for i, e in reversed(list(enumerate(suite_dict(dataset)["expectations"])))}
    summary.sort(key=lambda s: order[s["rule"]])
    quarantine = pd.concat([q for q in quarantined if len(q)] or quarantined[:1], ignore_index=True)
    good = pd.concat(clean, ignore_index=True) if clean else _normalised(_empty(d), d)
    log.info("%s: %d rows read, %d clean, %d quarantined", file_name, n, n - n_bad, n_bad)
    return ValidationResult(clean=good, quarantined=quarantine, rule_counts=rule_counts,
                            rows_read=n, expectations=summary, gx_result=gx_result)


def validate_feed(frame: pd.DataFrame, dataset: str, file_date: date, file_name: str,
                  max_bad_row_fraction: float) -> ValidationResult:
    """Split a whole read feed into clean and quarantined rows by its GX suite (``validate_chunks``)."""
    return validate_chunks([frame], dataset, file_date, file_name, max_bad_row_fraction)


def validate_file(open_pieces: Callable[[], Iterable[bytes]], dataset: str, file_date: date, file_name: str,
                  max_bad_row_fraction: float, write_clean: Callable[[bytes], None],
                  chunk_bytes: int = CHUNK_BYTES, block_bytes: int = BLOCK_BYTES) -> ValidationResult:
    """Validate a feed given as pieces of its bytes (a landing copy as it is decrypted), a chunk at a
    time, so that memory follows the chunk and not the file.

    ``open_pieces`` gives the bytes from the start each time it is called (it is read twice: once for
    the file-level rules and the duplicated record_ids, once to validate). ``write_clean`` receives
    the clean rows as CSV, header first: the bytes ``result.clean.to_csv(index=False)`` gives for the
    whole file. They are complete only when this returns; after ``FileRejected`` they are to be thrown
    away. ``clean`` of the result is empty.
    """
    d = feeds.DATASETS[dataset]
    scan = scan_feed(open_pieces, file_name, dataset, block_bytes)
    write_clean(_normalised(_empty(d), d).to_csv(index=False).encode("utf-8"))

    def keep(clean: pd.DataFrame) -> None:
        if len(clean):
            write_clean(clean.to_csv(index=False, header=False).encode("utf-8"))

    return validate_chunks(feed_chunks(open_pieces, scan, dataset, chunk_bytes), dataset, file_date, file_name,
                           max_bad_row_fraction, duplicated=scan.duplicated, rows=scan.rows, keep_clean=keep)


# -- the validate stage ------------------------------------------------------------------------

def validate_source(engine: Engine, config: Config, source: str, reference_date: date,
                    store: LandingStore | None = None, partner: str | None = None) -> dict[str, int]:
    """Validate the new landings of one partner of a source (the short form's by default); fail naming
    every current file of that partner that breaks a file-level rule."""
    store = store or LandingStore.of(engine, config)
    partner_id = config.partner(source, partner).id
    counts = {"files_validated": 0, "rows_read": 0, "rows_quarantined": 0, "files_rejected": 0}
    for row in store.landings(source, LandingStatus.LANDED, reference_date, partner_id):
        try:
            # A chunk at a time, the landing copy decrypted and the validated copy encrypted as they
            # go: memory follows the chunk, not the file. The validated copy appears only on success.
            with store.writing(row.id, VALIDATED) as write:
                result = validate_file(store.reader(row.id), row.dataset, row.file_date,
                                       row.file_name, config.quality.max_bad_row_fraction, write)
        except FileRejected as rejected:
            with engine.begin() as conn:
                store.lock(conn, source)
                conn.execute(update(landing_log)
                             .where(landing_log.c.id == row.id, landing_log.c.status == LandingStatus.LANDED)
                             .values(status=LandingStatus.REJECTED, rejection=rejected.rule))
            counts["files_rejected"] += 1
            continue
        quarantined = [
            {"landing_id": row.id, "row_number": int(q["_row"]), "rules": q["rules"], "row_json": q["row_json"],
             "quarantined_on": reference_date}
            for q in result.quarantined.to_dict("records")
        ]
        with engine.begin() as conn:
            if not store.still(conn, source, row.id, LandingStatus.LANDED):  # a concurrent run (backfill) got there first
                continue
            conn.execute(delete(quarantine).where(quarantine.c.landing_id == row.id))
            if quarantined:
                conn.execute(insert(quarantine), quarantined)
            conn.execute(update(landing_log).where(landing_log.c.id == row.id).values(
                status=LandingStatus.VALIDATED, rows_read=result.rows_read, rows_quarantined=len(quarantined),
                expectation_results=json.dumps(result.expectations, sort_keys=True),
                gx_result=json.dumps(result.gx_result, sort_keys=True)))
        counts["files_validated"] += 1
        counts["rows_read"] += result.rows_read
        counts["rows_quarantined"] += len(quarantined)
    failures = rejected_files(engine, source, reference_date, partner_id)
    if failures:
        raise FilesRejected("; ".join(f"file {name} rejected: {rule}" for name, rule in failures))
    return counts


def rejected_files(engine: Engine, source: str, reference_date: date,
                   partner: str | None = None) -> list[tuple[str, str]]:
    """Current files of a partner (the short form's by default: the source's own name) (latest landing of
    each name, dated on or before R) that were rejected."""
    latest = (
        select(landing_log.c.file_name, func.max(landing_log.c.id).label("id"))
        .where(landing_log.c.source == source, landing_log.c.partner == (partner or source),
               landing_log.c.file_date <= reference_date,
               landing_log.c.status != LandingStatus.DUPLICATE)
        .group_by(landing_log.c.file_name).subquery()
    )
    with engine.connect() as conn:
        rows = conn.execute(
            select(landing_log.c.file_name, landing_log.c.rejection)
            .join(latest, latest.c.id == landing_log.c.id)
            .where(landing_log.c.status == LandingStatus.REJECTED).order_by(landing_log.c.file_name)
        ).all()
    return [(r.file_name, r.rejection) for r in rows]


def quarantine_reasons(engine: Engine, landing_id: int) -> dict[str, int]:
    """How many quarantined rows of a landing broke each rule (for the run report)."""
    reasons: dict[str, int] = {}
    with engine.connect() as conn:
        for (rules,) in conn.execute(select(quarantine.c.rules).where(quarantine.c.landing_id == landing_id)):
            for rule in rules.split("; "):
                reasons[rule] = reasons.get(rule, 0) + 1
    return dict(sorted(reasons.items()))


def run(ctx: RunContext) -> StageResult:
    """The validate task: validate the new landings of the context's source; fail naming every current
    file that breaks a file-level rule."""
    from tfp.context import StageResult
    from tfp.lineage import validated

    source = ctx.need_source()
    partner = ctx.config.partner(source, ctx.partner).id
    todo = [row.id for row in ctx.landing.landings(source, LandingStatus.LANDED, ctx.reference_date, partner)]
    counts = validate_source(ctx.warehouse, ctx.config, source, ctx.reference_date, store=ctx.landing,
                             partner=partner)
    log.info("source %s validated: %s", source if partner == source else f"{source}, partner {partner}", counts)
    return StageResult(stage="validate", counts=counts, source=source,
                       lineage=validated(ctx.warehouse, ctx.landing, source, todo, counts.get("rows_quarantined", 0)))


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tfp.validate", description=__doc__.splitlines()[0])
    parser.add_argument("--write-suites", action="store_true", help="regenerate expectations/*.json")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: expectations/)")
    args = parser.parse_args(argv)
    if not args.write_suites:
        parser.print_help()
        return 2
    for path in write_suites(args.dir):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


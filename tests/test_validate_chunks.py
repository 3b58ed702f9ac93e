"""Validation in chunks (issue 13 item 11): a file read and validated a few rows at a time gives
exactly what validating it whole gives (quarantine, counts, the stored GX result, the clean rows),
record_id uniqueness spans the whole file, and the file-level rules keep their order and words."""

from __future__ import annotations

import json
from datetime import date

import pytest
from test_validate import FILE_DATE, row, to_csv

from tfp import feeds, landing
from tfp.validate import (
    RESULT_FORMAT,
    FileRejected,
    _gx_frame,
    _normalised,
    _suite_and_batch_definition,
    feed_chunks,
    read_feed,
    scan_feed,
    validate_feed,
    validate_file,
)

NAME = "attendance_20250131.csv"
SMALL = {"block_bytes": 2048, "chunk_bytes": 4096}  # a few dozen rows a chunk


def _pieces(data: bytes, size: int = 777):
    return lambda: (data[i:i + size] for i in range(0, len(data), size))


def _many_chunk_file() -> bytes:
    rows = [row("attendance", f"A{i}", surname=f"Name {i}") for i in range(600)]
    rows[5]["record_id"] = "A590"  # duplicated across chunks: rows 6 and 591
    rows[100]["record_id"] = "A101 "  # duplicated within a chunk once stripped
    rows[40]["record_id"] = ""  # required, and never a duplicate
    rows[300]["upn"] = "B801200005002"  # bad check letter
    rows[301]["sessions_missed"] = "101"  # more than possible
    rows[302]["date_of_birth"] = "2023-02-30"
    rows[303]["term"] = "2024-WIN"
    rows[599]["surname"] = 'Line "one"\nline, two'  # quoted, over two lines
    return b"\xef\xbb\xbf" + to_csv(rows, feeds.DATASETS["attendance"].columns)


def _timeless(gx_result: dict) -> dict:
    """A stored GX result without what differs between any two runs (times, ids)."""
    out = json.loads(json.dumps(gx_result, sort_keys=True))
    out["meta"] = {k: v for k, v in out["meta"].items() if k not in ("run_id", "validation_time", "batch_markers")}
    for r in out["results"]:
        r["expectation_config"].pop("id", None)
    out["results"].sort(key=lambda r: r["expectation_config"]["meta"]["rule"])
    return out


def _gx_on_whole_frame(data: bytes) -> dict:
    """Great Expectations itself on the whole file as one frame, sanitised as the stage stores it."""
    from great_expectations.validator.v1_validator import Validator

    from tfp.datadocs import sanitise

    d = feeds.DATASETS["attendance"]
    suite, batch_definition = _suite_and_batch_definition("attendance")
    frame = read_feed(data, NAME, "attendance")
    result = Validator(batch_definition=batch_definition, result_format=RESULT_FORMAT,
                       batch_parameters={"dataframe": _gx_frame(_normalised(frame, d), d)}
                       ).validate_expectation_suite(suite, expectation_parameters={"file_date": 20250131})
    return sanitise(result.to_json_dict())


@pytest.mark.slow  # GX over ten chunks and over the whole file
def test_a_file_over_many_chunks_validates_exactly_as_the_whole_file():
    data = _many_chunk_file()
    scan = scan_feed(_pieces(data), NAME, "attendance", SMALL["block_bytes"])
    chunks = list(feed_chunks(_pieces(data), scan, "attendance", SMALL["chunk_bytes"]))
    assert len(chunks) >= 10 and sum(len(c) for c in chunks) == 600

    whole = validate_feed(read_feed(data, NAME, "attendance"), "attendance", FILE_DATE, NAME, 1.0)
    written: list[bytes] = []
    chunked = validate_file(_pieces(data), "attendance", FILE_DATE, NAME, 1.0, written.append, **SMALL)

    assert chunked.quarantined.equals(whole.quarantined)
    assert chunked.rule_counts == whole.rule_counts
    assert chunked.rows_read == whole.rows_read == 600
    assert len(chunked.quarantined) + len(whole.clean) == 600
    assert chunked.expectations == whole.expectations
    assert _timeless(chunked.gx_result) == _timeless(whole.gx_result) == _timeless(_gx_on_whole_frame(data))
    assert b"".join(written) == whole.clean.to_csv(index=False).encode("utf-8")
    rules = dict(zip(chunked.quarantined["_row"], chunked.quarantined["rules"], strict=True))
    assert rules[6] == rules[591] == "record_id_unique"  # a duplicate in another chunk is still one
    assert rules[101] == rules[102] == "record_id_unique"
    assert "record_id_unique" not in rules[41]
    assert chunked.rule_counts["record_id_unique"] == 4


@pytest.mark.parametrize("rows", [0, 1], ids=["header-only", "one-row"])
def test_small_files_store_what_great_expectations_stores(rows):
    data = to_csv([row("attendance", f"A{i}") for i in range(rows)], feeds.DATASETS["attendance"].columns)
    written: list[bytes] = []
    result = validate_file(_pieces(data, 5), "attendance", FILE_DATE, NAME, 0.05, written.append, **SMALL)
    assert _timeless(result.gx_result) == _timeless(_gx_on_whole_frame(data))
    assert result.rows_read == rows
    assert b"".join(written) == validate_feed(read_feed(data, NAME, "attendance"), "attendance", FILE_DATE, NAME,
                                              0.05).clean.to_csv(index=False).encode("utf-8")


def test_the_bad_row_limit_counts_the_whole_file():
    rows = [row("benefits", f"B{i}") for i in range(200)]
    for i in range(150, 161):  # 11 of 200 (5.5 %), all in the file's last chunks
        rows[i]["benefit"] = "lottery"
    data = to_csv(rows, feeds.DATASETS["benefits"].columns)
    with pytest.raises(FileRejected) as e:
        validate_file(_pieces(data), "benefits", FILE_DATE, "benefits_20250131.csv", 0.05, lambda b: None, **SMALL)
    assert str(e.value) == "benefits_20250131.csv: more than 5% of rows quarantined (11 of 200)"
    result = validate_file(_pieces(data), "benefits", FILE_DATE, "benefits_20250131.csv", 0.06, lambda b: None,
                           **SMALL)
    assert len(result.quarantined) == 11


@pytest.mark.parametrize(("tail", "rule"), [
    (b"N9,P9,early_help\r\n" + "Sm\xedth".encode("latin-1") + b"\r\n", "not readable as UTF-8"),
    (b"N9,P9,early_help\r\nN10,P\x0010,early_help,2024-01-01,\r\n", "not readable as CSV (it contains NUL bytes)"),
    (b'N9,P9,early_help\r\nN10,"P10,early_help,2024-01-01,\r\n', "not readable as CSV (a quoted field is not closed)"),
    (b"N9,P9,early_help\r\n", "not readable as CSV (a row has the wrong number of fields)"),
], ids=["utf8", "nul", "quote", "fields"])
def test_file_level_rules_keep_their_order_when_a_later_chunk_breaks_them(tail, rule):
    """A broken row early and a worse fault late: the rule named is the one the whole-file check names."""
    rows = [row("needs", f"N{i}") for i in range(300)]
    data = to_csv(rows, feeds.DATASETS["needs"].columns) + tail
    with pytest.raises(FileRejected) as whole:
        read_feed(data, "needs_20250131.csv", "needs")
    with pytest.raises(FileRejected) as chunked:
        validate_file(_pieces(data), "needs", FILE_DATE, "needs_20250131.csv", 1.0, lambda b: None, **SMALL)
    assert whole.value.rule == chunked.value.rule == rule


def test_a_row_longer_than_a_block_is_read():
    rows = [row("needs", f"N{i}") for i in range(50)]
    rows[20]["person_ref"] = "P" * 10_000  # longer than a block
    data = to_csv(rows, feeds.DATASETS["needs"].columns)
    result = validate_file(_pieces(data), "needs", FILE_DATE, "needs_20250131.csv", 1.0, lambda b: None, **SMALL)
    assert result.rows_read == 50


def test_the_validated_copy_streams_to_the_same_landing_format(tmp_path, monkeypatch):
    monkeypatch.setattr(landing, "SEGMENT", 100)
    key = landing.new_key()
    for size in (0, 1, 100, 101, 250):
        data = bytes(range(256))[:size] if size <= 256 else b""
        with landing.encrypting_to(tmp_path / "s.bin", key, 7, b"validated") as write:
            for i in range(0, size, 33):
                write(data[i:i + 33])
        landing.encrypt_to(tmp_path / "w.bin", data, key, 7, b"validated")
        streamed, whole = (tmp_path / "s.bin").read_bytes(), (tmp_path / "w.bin").read_bytes()
        assert len(streamed) == len(whole) and streamed[:8] == whole[:8] and streamed[16:20] == whole[16:20]
        assert landing.decrypt_from(tmp_path / "s.bin", key, 7, b"validated") == data
        assert b"".join(landing.decrypt_segments(tmp_path / "w.bin", key, 7, b"validated")) == data


def test_a_failed_stream_leaves_no_copy(tmp_path):
    with pytest.raises(FileRejected), landing.encrypting_to(tmp_path / "v.bin", landing.new_key(), 1) as write:
        write(b"some rows\n")
        raise FileRejected("x.csv", "more than 5% of rows quarantined (1 of 2)")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage", ["truncated", "appended", "flipped", "other-purpose"])
def test_reading_a_copy_a_segment_at_a_time_still_authenticates_it(tmp_path, monkeypatch, damage):
    monkeypatch.setattr(landing, "SEGMENT", 64)
    key, path = landing.new_key(), tmp_path / "r.bin"
    landing.encrypt_to(path, b"x" * 300, key, 3)
    blob = path.read_bytes()
    purpose = b"raw"
    if damage == "truncated":
        path.write_bytes(blob[:-100])
    elif damage == "appended":
        path.write_bytes(blob + b"\0")
    elif damage == "flipped":
        path.write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))
    else:
        purpose = b"validated"
    with pytest.raises(landing.LandingTampered):
        list(landing.decrypt_segments(path, key, 3, purpose))


def test_scan_finds_only_repeated_ids():
    rows = [row("needs", f"N{i}") for i in range(100)] + [row("needs", " N7"), row("needs", "")]
    data = to_csv(rows, feeds.DATASETS["needs"].columns)
    scan = scan_feed(_pieces(data), "needs_20250131.csv", "needs", 1024)
    assert (scan.rows, list(scan.duplicated)) == (102, ["N7"])


def test_a_copy_altered_in_a_later_segment_stops_validation_and_leaves_nothing(tmp_path, sqlite_url, monkeypatch):
    """The landing copy is read a segment at a time: damage near its end is found after earlier
    segments were validated, and still nothing is written or moved on."""
    from helpers import make_config
    from tfp.extract import land_source
    from tfp.validate import validate_source
    from tfp.warehouse import connect, landing_log, quarantine

    monkeypatch.setattr(landing, "SEGMENT", 4096)
    config = make_config(tmp_path, sqlite_url)
    engine = connect(sqlite_url)
    rows = [row("needs", f"N{i}", start_date="2099-01-01" if i % 3 == 0 else "2024-01-01") for i in range(2000)]
    (tmp_path / "inbound/children_services/needs_20250131.csv").write_bytes(
        to_csv(rows, feeds.DATASETS["needs"].columns))
    land_source(engine, config, "children_services", date(2025, 1, 31))
    (path,) = (config.work_dir / "landing" / "children_services").glob("*.raw.bin")
    blob = bytearray(path.read_bytes())
    assert len(blob) > 10 * 4096
    blob[-10] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(landing.LandingTampered):
        validate_source(engine, config, "children_services", date(2025, 1, 31))
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no validated copy, no temporary one
    with engine.connect() as conn:
        assert conn.execute(landing_log.select()).one().status == "landed"
        assert conn.execute(quarantine.select()).all() == []


def test_the_benchmark_table_reports_validation_memory_against_the_file_size():
    from test_bench import _doc

    from tfp_dev import bench

    doc = _doc()
    doc["validation_memory"] = {"file_bytes": 200_473_978, "file_mb": 200.5, "baseline_rss_mb": 301.0,
                                "peak_rss_mb": 732.0, "validation_mb": 431.0, "ratio": 2.15, "seconds": 22.4,
                                "rows_read": 2_124_850, "rows_quarantined": 23_530}
    table = bench.render_table(doc)
    assert "Validating one 200 MB file (2,124,850 rows) took 431 MB" in table and "2.1× the file" in table
    assert "Validating one" not in bench.render_table(_doc())

"""Data Docs from sanitised Great Expectations results (real GX, real suites run on a frame of
made-up people): GX's own pages, every count on them, and not one value or row number in any file."""

from __future__ import annotations

import json
import os
import pathlib
import re
import sys
import time
from typing import Any

os.environ["GX_ANALYTICS_ENABLED"] = "False"

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from tfp import datadocs as gxdocs  # noqa: E402

ROW = "_row"
ROW_BASE = 7_340_001  # distinctive row numbers: they must not show up in the site either
PROJECT_RESULT_FORMAT: dict[str, Any] = {  # as in include/tfp/validate.py
    "result_format": "COMPLETE",
    "unexpected_index_column_names": [ROW],
    "exclude_unexpected_values": True,
    "return_unexpected_index_query": False,
    "partial_unexpected_count": 0,
}
LEAKY_RESULT_FORMAT: dict[str, Any] = {  # GX's usual output: quotes failing values
    "result_format": "COMPLETE",
    "unexpected_index_column_names": [ROW],
}

FIRST = ["Alice", "Bob", "Carol", "Dmitri", "Eleanor", "Farouk", "Gwendolyn", "Hamish"]
LAST = ["Smith", "Jones", "Whitfield", "Okonkwo", "Pemberton", "Zabłocki", "Fairweather", "McTavish"]
BAD_SEX = ["Xq-unknown-sex", "Qz-other-sex"]
DUP_ID = "REC-DUP-558812"
MAX_DOB = 19871231  # the largest dob: an observed_value of expect_column_max_to_be_between


def fake_frame(n: int = 120) -> pd.DataFrame:
    names = [f"{FIRST[i % len(FIRST)]} {LAST[(i // len(FIRST)) % len(LAST)]}" for i in range(n)]
    sex = ["F", "M", "U"] * (n // 3) + ["F"] * (n % 3)
    sex[5], sex[17] = BAD_SEX
    rec = [f"REC-{100000 + i * 7}" for i in range(n)]
    rec[10] = rec[11] = DUP_ID
    email = [f"{nm.lower().replace(' ', '.')}.{i}@example.org" for i, nm in enumerate(names)]
    email[3] = None
    postcode = [f"ZX{i % 9 + 1} {i % 7 + 1}QJ" for i in range(n)]
    dob = [19500101 + (i % 30) * 10000 for i in range(n)]
    dob[7] = MAX_DOB
    df = pd.DataFrame({"full_name": names, "sex": sex, "record_id": rec, "email": email,
                       "postcode": postcode, "dob": dob})
    df.loc[8, "full_name"] = None
    return df.set_index(pd.Index(range(ROW_BASE, ROW_BASE + n), name=ROW))


def sensitive_strings(df: pd.DataFrame) -> set[str]:
    """Every personal value in the frame (strings, the distinctive dob) and every row number."""
    out: set[str] = set()
    for c in ("full_name", "record_id", "email", "postcode"):
        out |= {v for v in df[c].dropna().astype(str)}
    out |= set(BAD_SEX) | {str(MAX_DOB)}
    out |= {str(r) for r in df.index}
    return out


def expectations(n_extra: int = 0) -> list:
    import great_expectations.expectations as gxe

    base = [
        gxe.ExpectColumnValuesToNotBeNull(column="full_name"),
        gxe.ExpectColumnValuesToNotBeNull(column="email"),
        gxe.ExpectColumnValuesToMatchRegex(column="full_name", regex=r"^[A-Z]{2,}$"),  # all fail
        gxe.ExpectColumnValuesToBeInSet(column="sex", value_set=["F", "M", "U"]),
        gxe.ExpectColumnValuesToBeUnique(column="record_id"),
        gxe.ExpectColumnValuesToBeBetween(column="dob", min_value={"$PARAMETER": "file_date"}),
        gxe.ExpectColumnMaxToBeBetween(column="dob", max_value=19800101),  # observed_value = MAX_DOB
        gxe.ExpectColumnDistinctValuesToBeInSet(column="sex", value_set=["F", "M", "U"]),
        gxe.ExpectTableRowCountToBeBetween(min_value=1, max_value=10_000),
    ]
    extra = []
    cols = ["full_name", "sex", "record_id", "email", "postcode", "dob"]
    i = 0
    while len(extra) < n_extra:
        c = cols[i % len(cols)]
        kind = (i // len(cols)) % 4
        if kind == 0:
            extra.append(gxe.ExpectColumnValuesToNotBeNull(column=c, meta={"n": i}))
        elif kind == 1:
            extra.append(gxe.ExpectColumnValueLengthsToBeBetween(column=c, min_value=1, max_value=12 + i))
        elif kind == 2:
            extra.append(gxe.ExpectColumnValuesToMatchRegex(column=c, regex=rf"^.{{1,{20 + i}}}$"))
        else:
            extra.append(gxe.ExpectColumnValuesToNotMatchRegex(column=c, regex=rf"^X{{{i}}}$"))
        i += 1
    return base + extra


_CONTEXT: dict[str, Any] = {}


def gx_context():
    if "ctx" not in _CONTEXT:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        ctx = gx.get_context(mode="ephemeral")
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        _CONTEXT["ds"] = ctx.data_sources.add_pandas("tfp_feeds")
        _CONTEXT["ctx"] = ctx
    return _CONTEXT["ctx"], _CONTEXT["ds"]


def run_suite(dataset: str, df: pd.DataFrame, result_format: dict, n_extra: int = 0) -> dict:
    """Validate df as the project does; return result.to_json_dict() after a JSON round trip."""
    from great_expectations.core import ExpectationSuite
    from great_expectations.validator.v1_validator import Validator

    ctx, ds = gx_context()
    suite = ctx.suites.add(ExpectationSuite(name=dataset, expectations=expectations(n_extra)))
    asset = ds.add_dataframe_asset(dataset)
    bd = asset.add_batch_definition_whole_dataframe("whole_file")
    result = Validator(batch_definition=bd, result_format=result_format,
                       batch_parameters={"dataframe": df}).validate_expectation_suite(
        suite, expectation_parameters={"file_date": 19600101})
    assert len(result.results) == len(suite.expectations)
    return json.loads(json.dumps(result.to_json_dict()))  # what storing it as JSON gives back


def all_files(site_dir: pathlib.Path) -> list[pathlib.Path]:
    return [p for p in site_dir.rglob("*") if p.is_file()]


def leaks(site_dir: pathlib.Path, secrets: set[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    needles = {s: s.encode() for s in secrets} | {f"{s} (html)": s.replace("'", "&#39;").encode() for s in secrets}
    for p in all_files(site_dir):
        data = p.read_bytes()
        for label, b in needles.items():
            if b in data:
                found.setdefault(str(p.relative_to(site_dir)), []).append(label)
    return found


def with_scripts(p: pathlib.Path) -> str:
    """A page with the scripts tfp moved out of it (GX's index keeps its table rows in one)."""
    text = p.read_text(encoding="utf-8")
    moved = re.findall(r'<script src="((?:\.\./)*static/tfp/[0-9a-f]+\.js)"', text)
    return text + "".join((p.parent / m).read_text(encoding="utf-8") for m in moved)


def page_text(p: pathlib.Path) -> str:
    import html

    t = re.sub(r"<script.*?</script>|<style.*?</style>", " ", p.read_text(encoding="utf-8"), flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", t)))


class WriteWatcher:
    """Records every file-system write Python makes (audit hooks) while active."""

    def __init__(self) -> None:
        self.active = False
        self.paths: list[str] = []
        sys.addaudithook(self._hook)

    def _hook(self, event: str, args: tuple) -> None:
        if not self.active:
            return
        if event == "open":
            path, mode, flags = args
            writing = (isinstance(mode, str) and any(m in mode for m in "wax+")) or (
                mode is None and isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
            if writing and isinstance(path, (str, bytes, os.PathLike)):
                self.paths.append(os.fsdecode(path))
        elif event in ("os.mkdir", "os.remove", "os.rmdir", "os.truncate", "os.chmod", "os.utime"):
            if isinstance(args[0], (str, bytes, os.PathLike)):
                self.paths.append(os.fsdecode(args[0]))
        elif event in ("os.rename", "os.replace", "shutil.copyfile", "shutil.copytree", "os.symlink", "os.link"):
            self.paths.append(os.fsdecode(args[1]))


WATCHER = WriteWatcher()


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return fake_frame()


@pytest.fixture(scope="module")
def project_result(frame) -> dict:
    return run_suite("pupils", frame, PROJECT_RESULT_FORMAT)


@pytest.fixture(scope="module")
def leaky_result(frame) -> dict:
    return run_suite("pupils_leaky", frame, LEAKY_RESULT_FORMAT)


# ------------------------------------------------------------------------------------------------


def test_raw_results_do_hold_values(project_result, leaky_result, frame):
    """Control: without sanitising, the results carry row numbers and (leaky format) values."""
    raw = json.dumps(project_result)
    assert str(ROW_BASE + 8) in raw  # the null full_name row, in unexpected_index_list
    assert str(MAX_DOB) in raw  # observed_value of expect_column_max_to_be_between
    assert "pandas_data_fingerprint" in raw
    leaky = json.dumps(leaky_result, ensure_ascii=False)
    assert "Alice Smith" in leaky and BAD_SEX[0] in leaky and DUP_ID in leaky


FORBIDDEN = {"partial_unexpected_list", "partial_unexpected_counts", "partial_unexpected_index_list",
             "unexpected_list", "unexpected_index_list", "unexpected_index_query", "unexpected_rows",
             "details", "batch_spec", "pandas_data_fingerprint", "batch_data"}


def _keys(o: Any) -> set[str]:
    if isinstance(o, dict):
        return set(o) | {k for v in o.values() for k in _keys(v)}
    if isinstance(o, list):
        return {k for v in o for k in _keys(v)}
    return set()


@pytest.mark.parametrize("which", ["project_result", "leaky_result"])
def test_sanitise(which, request, frame):
    raw = request.getfixturevalue(which)
    clean = gxdocs.sanitise(raw)
    assert not (_keys(clean) & FORBIDDEN)
    text = json.dumps(clean, ensure_ascii=False)
    assert not [s for s in sensitive_strings(frame) if s in text]
    assert json.loads(json.dumps(clean)) == clean  # JSON-serialisable
    assert gxdocs.sanitise(clean) == clean  # idempotent
    assert raw != clean and "partial_unexpected_list" not in json.dumps(clean)
    # counts kept, per expectation
    count_keys = ("element_count", "unexpected_count", "unexpected_percent", "missing_count")
    for r, c in zip(raw["results"], clean["results"], strict=True):
        assert c["expectation_config"]["type"] == r["expectation_config"]["type"]
        assert c["success"] == r["success"]
        for k in count_keys:
            assert c["result"].get(k) == r["result"].get(k)
    assert clean["statistics"] == raw["statistics"]
    row_count = next(c for c in clean["results"]
                     if c["expectation_config"]["type"] == "expect_table_row_count_to_be_between")
    assert row_count["result"]["observed_value"] == len(frame)


def test_sanitise_rejects_describe_dict():
    with pytest.raises(ValueError):
        gxdocs.sanitise({"success": False, "statistics": {}, "expectations": [], "result_url": None})


def test_build_data_docs(tmp_path, project_result, leaky_result, frame, caplog):
    site_dir = tmp_path / "docs" / "site"
    runs = [("pupils_2024-01-05.csv", project_result), ("pupils 2024/01/06 (leaky)", leaky_result)]
    WATCHER.paths.clear()
    WATCHER.active = True
    try:
        built = gxdocs.build_data_docs(site_dir, runs)
    finally:
        WATCHER.active = False

    # GX swallows rendering exceptions and logs them at ERROR: there must be none
    assert not [r for r in caplog.records if r.levelno >= 40], [r.getMessage()[:300] for r in caplog.records]
    # nothing written outside site_dir
    site = site_dir.resolve()
    allowed_mkdirs = {str(site), *(str(a) for a in site.parents)}  # creating site_dir itself
    outside = sorted({p for p in WATCHER.paths
                      if not os.path.abspath(p).startswith(str(site) + os.sep)
                      and os.path.abspath(p) not in allowed_mkdirs})
    assert not outside, outside
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs"]
    assert sorted(p.name for p in (tmp_path / "docs").iterdir()) == ["site"]

    index = site_dir / built[""]
    assert built[""] == "index.html" and index.is_file()
    assert all((site_dir / built[name]).is_file() for name, _ in runs)
    pages = sorted((site_dir / "validations").rglob("*.html"))
    assert len(pages) == 2, pages
    assert (site_dir / "expectations" / "pupils.html").is_file()
    assert (site_dir / "static" / "styles" / "data_docs_default_styles.css").is_file()

    index_html = with_scripts(index)
    for p in pages:
        assert p.relative_to(site_dir).as_posix() in index_html  # index links to each page

    for p, (name, raw) in zip(sorted(pages, key=lambda p: "leaky" in str(p)), runs, strict=True):
        text = page_text(p)
        assert gxdocs._safe(name) in text  # run name
        assert "Status: Failed" in text
        assert f"Evaluated Expectations {raw['statistics']['evaluated_expectations']}" in text
        assert "values must never be null" in text  # expect_column_values_to_not_be_null
        assert "values must match this regular expression" in text  # ..._to_match_regex
        assert "values must belong to this set" in text  # ..._to_be_in_set
        assert "values must be unique" in text  # ..._to_be_unique
        n = len(frame)
        for r in raw["results"]:
            res = r["result"]
            if "unexpected_count" in res and res["unexpected_count"]:
                assert f"{res['unexpected_count']} unexpected values found" in text, r["expectation_config"]
                assert f"of {n} total rows" in text
        assert "2 unexpected values found" in text  # sex: two bad codes; record_id: one duplicate pair
        assert f"{n - 1} unexpected values found" in text  # the regex every (non-null) name fails
        assert "Observed Value" in text

    found = leaks(site_dir, sensitive_strings(frame))
    assert not found, found


def test_build_twice_same_dir(tmp_path, project_result):
    site = tmp_path / "site"
    gxdocs.build_data_docs(site, [("a", project_result)])
    gxdocs.build_data_docs(site, [("b", project_result)])
    # a full rebuild: GX's index builder deletes pages whose result is not in this build
    pages = list((site / "validations").rglob("*.html"))
    assert [p.relative_to(site).parts[2] for p in pages] == ["b"]
    assert not (site / "validations" / "pupils" / "a").exists()  # no empty directories left
    index = with_scripts(site / "index.html")
    assert "validations/pupils/b/" in index and "validations/pupils/a/" not in index
    print("\nafter rebuild:", sorted(str(p.relative_to(site)) for p in (site / "validations").rglob("*")))


@pytest.mark.slow  # eight GX runs of 2,000 rows, then the site
def test_eight_files_of_thirty_expectations(tmp_path):
    df = fake_frame(2_000)
    runs = []
    for i in range(8):
        raw = run_suite(f"dataset_{i}", df, PROJECT_RESULT_FORMAT, n_extra=21)
        assert len(raw["results"]) == 30
        runs.append((f"dataset_{i}_2024-01-0{i + 1}.csv", raw))
    site = tmp_path / "site"
    t0 = time.perf_counter()
    gxdocs.build_data_docs(site, runs)
    elapsed = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in all_files(site))
    static = sum(p.stat().st_size for p in all_files(site / "static"))
    print(f"\nbuild_data_docs: 8 results x 30 expectations in {elapsed:.2f}s; "
          f"{len(all_files(site))} files, {size / 1e6:.2f} MB ({static / 1e6:.2f} MB static assets)")
    assert len(list((site / "validations").rglob("*.html"))) == 8
    assert not leaks(site, sensitive_strings(df))


def test_dotted_suite_and_unsafe_run_names(tmp_path, project_result):
    r = json.loads(json.dumps(project_result))
    r["suite_name"] = "tfp.pupils"  # GX turns the dots of a suite name into directories
    site = tmp_path / "site"
    gxdocs.build_data_docs(site, [("../../escape attempt", r), ("plain", r)])
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html"))
    assert "expectations/tfp/pupils.html" in pages
    assert len([p for p in pages if p.startswith("validations/tfp/pupils/")]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]  # nothing escaped site_dir
    with pytest.raises(ValueError):
        gxdocs.build_data_docs(site, [("same", r), ("same", r)])


# -- issue 20 item 1: the site loads nothing from elsewhere and runs no inline script ------------------

LOCAL_REF = re.compile(r"""\b(?:src|href)\s*=\s*["']([^"'#]+)["']|url\(\s*["']?([^"')#]+)["']?\s*\)""", re.I)


def test_site_is_self_contained(tmp_path, project_result):
    """Every page and stylesheet GX wrote refers only to files of the site or of tfp's package (served by
    the plugin two levels up): no CDN, no inline script, no onclick; every local reference exists; moved
    scripts are named by their content; the vendored files are byte for byte what VENDOR.json says."""
    import hashlib

    site = tmp_path / "reports" / "2025-03-31" / "data_docs"  # where the plugin serves it from
    served_static = tmp_path / "reports" / "static"  # what /tfp-reports/static/ serves: gxdocs.STATIC
    gxdocs.build_data_docs(site, [("a.csv", project_result)])
    checked = 0
    for p in all_files(site):
        if p.suffix not in (".html", ".css"):
            continue
        text = p.read_text(encoding="utf-8")
        assert gxdocs.external_references(text) == [], p.relative_to(site)
        assert "http://" not in text and "https://" not in text, p.relative_to(site)
        for m in LOCAL_REF.finditer(text):
            ref = m.group(1) or m.group(2)
            if ref.startswith("data:"):
                continue
            target = (p.parent / ref.split("?")[0]).resolve()
            if target.is_relative_to(served_static.resolve()):
                target = gxdocs.STATIC / target.relative_to(served_static.resolve())
                assert target.is_file(), (p.relative_to(site), ref)
                continue
            assert target.is_relative_to(site.resolve()) and target.is_file(), (p.relative_to(site), ref)
        checked += 1
    assert checked >= 4  # index, validation page, suite page, GX's stylesheet
    pages = [p for p in all_files(site) if p.suffix == ".html"]
    assert all("../static/vendor/jquery-3.7.1/jquery.min.js" in p.read_text() for p in pages)
    assert any("data-tfp-call=" in p.read_text() for p in pages)  # onclick moved to handlers.js
    moved = list((site / "static" / "tfp").iterdir())
    assert moved and all(p.name == gxdocs.script_name(p.read_bytes()) for p in moved)
    assert not (site / "static" / "vendor").exists()  # served from the package, not copied into work_dir
    manifest = json.loads((gxdocs.STATIC / "vendor" / "VENDOR.json").read_text())
    for folder, entry in manifest.items():
        assert (gxdocs.STATIC / "vendor" / folder / entry["license_file"]).is_file()
        for name, meta in entry["files"].items():
            data = (gxdocs.STATIC / "vendor" / folder / name).read_bytes()
            assert hashlib.sha256(data).hexdigest() == meta["sha256"], (folder, name)


@pytest.mark.parametrize("page", [
    '<script src="https://cdn.example.org/evil.js"></script>',
    '<link rel="stylesheet" href="//cdn.example.org/x.css">',
    '<style>body{background:url(https://tracker.example.org/p.png)}</style>',
    '<button onclick="fetch(\'/api/v2/variables\')">x</button>',
])
def test_localise_refuses_what_it_cannot_make_local(tmp_path, page):
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text(f"<!doctype html><html><body>{page}</body></html>", encoding="utf-8")
    with pytest.raises(RuntimeError, match="data docs"):
        gxdocs.localise_site(site)


def test_localise_makes_links_off_site_plain_text_and_scripts_files(tmp_path):
    site = tmp_path / "site"
    (site / "a" / "b").mkdir(parents=True)
    page = site / "a" / "b" / "p.html"
    page.write_text('<html><body><a href="https://greatexpectations.io">GX</a>'
                    '<script src="https://code.jquery.com/jquery-3.7.1.min.js"></script>'
                    '<script>var x = 1;</script><button onclick="showAllValidations()">all</button>'
                    "</body></html>", encoding="utf-8")
    gxdocs.localise_site(site)
    text = page.read_text(encoding="utf-8")
    assert "<a>GX</a>" in text
    assert 'src="../../../../static/vendor/jquery-3.7.1/jquery.min.js"' in text
    moved = re.findall(r'src="\.\./\.\./(static/tfp/[0-9a-f]{24}\.js)"', text)
    assert len(moved) == 1 and (site / moved[0]).read_text() == "var x = 1;"
    assert moved[0].endswith(gxdocs.script_name(b"var x = 1;"))
    assert 'data-tfp-on="click" data-tfp-call="showAllValidations"' in text
    assert text.index('src="../../../../static/tfp/handlers.js"') > text.index("data-tfp-call")
    assert gxdocs.external_references(text) == []

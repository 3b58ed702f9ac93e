"""Great Expectations Data Docs for a night, built from the stored validation results of its files.

``sanitise`` strips everything that could hold a data value from the JSON dict of an
``ExpectationSuiteValidationResult`` (``result.to_json_dict()``): failing values, row numbers,
exception texts, the data fingerprint, and ``observed_value`` unless it is a count. Counts stay.
The validate stage stores that dict per landing (``landing_log.gx_result``); ``build_data_docs``
renders the night's with GX's own SiteBuilder (index.html, validations/, expectations/, static/)
into ``reports/<date>/data_docs``. An in-memory GX context writes nothing outside that folder.

GX's pages load jQuery, Bootstrap, vega and Font Awesome from public CDNs and run inline scripts;
served under the api-server's address they would run with an engineer's session. ``localise_site``
rewrites every page to tfp's vendored copies (``tfp/static/vendor``, see VENDOR.json), moves inline
scripts into content-addressed files and onclick handlers into attributes, and refuses a page that
still refers to anything outside the site, so the pages work under
``Content-Security-Policy: default-src 'self'``. The vendored files are not copied into the site: the
tfp_reports plugin serves them from the installed package (nothing in ``work_dir`` can replace them),
at ``/tfp-reports/static/``, two levels above a night's site (``/tfp-reports/<date>/data_docs/``).
"""

from __future__ import annotations

import copy
import hashlib
import logging
import pathlib
import re
import shutil
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)

SITE_NAME = "local_site"

# The keys of an expectation result's "result" dict that are kept: counts, known to be data-free.
# Everything else goes (an allow-list): partial_unexpected_list, unexpected_index_list, details and
# any key a later GX adds can carry data values or row identities.
_RESULT_KEEP = frozenset({
    "element_count",
    "missing_count",
    "missing_percent",
    "unexpected_count",
    "unexpected_percent",
    "unexpected_percent_total",
    "unexpected_percent_nonmissing",
    "unexpected_index_column_names",  # column names only
})
# "observed_value" is a data value for e.g. expect_column_max_to_be_between or a list of distinct
# values for expect_column_distinct_values_to_be_in_set; keep it only where it is a count/schema.
_OBSERVED_VALUE_OK = frozenset({
    "expect_table_row_count_to_be_between",
    "expect_table_row_count_to_equal",
    "expect_table_row_count_to_equal_other_table",
    "expect_table_column_count_to_be_between",
    "expect_table_column_count_to_equal",
    "expect_table_columns_to_match_ordered_list",
    "expect_table_columns_to_match_set",
    "expect_column_to_exist",
    "expect_column_unique_value_count_to_be_between",
    "expect_column_proportion_of_unique_values_to_be_between",
})
# Keys kept from the suite result's "meta"; batch_spec (may embed a dataframe or a query),
# batch_markers (pandas_data_fingerprint is a hash of the data) and anything else are dropped.
_META_KEEP = frozenset({"great_expectations_version", "active_batch_definition", "run_id",
                        "validation_time", "checkpoint_id", "validation_id"})


def _clean_exception_info(info: Any) -> Any:
    """Keep only whether an exception was raised: GX's messages and tracebacks may quote values."""
    if not isinstance(info, dict):
        return {"raised_exception": False, "exception_traceback": None, "exception_message": None}
    if "raised_exception" in info:
        return {"raised_exception": bool(info.get("raised_exception")),
                "exception_traceback": None, "exception_message": None}
    # GX 1.x may key exception info by metric id: {"('metric', ...)": {"raised_exception": ...}}
    return {str(k): _clean_exception_info(v) for k, v in info.items()}


def _clean_expectation_result(evr: dict) -> dict:
    evr = dict(evr)
    config = dict(evr.get("expectation_config") or {})
    config.pop("rendered_content", None)
    evr["expectation_config"] = config
    result = evr.get("result") or {}
    kept = {k: v for k, v in result.items() if k in _RESULT_KEEP}
    if "observed_value" in result and config.get("type") in _OBSERVED_VALUE_OK:
        kept["observed_value"] = result["observed_value"]
    evr["result"] = kept
    evr["exception_info"] = _clean_exception_info(evr.get("exception_info"))
    evr.pop("rendered_content", None)
    return evr


def sanitise(result_json: dict) -> dict:
    """A copy of an ExpectationSuiteValidationResult JSON dict with no data values, counts kept.

    Takes ``result.to_json_dict()`` (``describe_dict()`` has no suite name or meta and cannot be
    rendered). Idempotent; the output is JSON-serialisable if the input is.
    """
    if not isinstance(result_json, dict) or "results" not in result_json or "suite_name" not in result_json:
        raise ValueError("expected ExpectationSuiteValidationResult.to_json_dict() output "
                         "(with 'suite_name' and 'results')")
    out = copy.deepcopy(result_json)
    out["results"] = [_clean_expectation_result(r) for r in out.get("results") or []]
    meta = out.get("meta") or {}
    clean_meta = {k: v for k, v in meta.items() if k in _META_KEEP}
    abd = clean_meta.get("active_batch_definition")
    if isinstance(abd, dict):  # batch_identifiers: "<DATAFRAME>" for dataframes; keep names only
        clean_meta["active_batch_definition"] = {
            k: v for k, v in abd.items() if k in ("datasource_name", "data_connector_name", "data_asset_name")
        }
    load_time = (meta.get("batch_markers") or {}).get("ge_load_time")
    if isinstance(load_time, str):  # a timestamp: used as the run time when there is no run_id
        clean_meta["batch_markers"] = {"ge_load_time": load_time}
    out["meta"] = clean_meta
    return out


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _safe(name: str) -> str:
    """A file-name-safe form of a run name (GX uses it as a directory name)."""
    s = _UNSAFE.sub("_", name).strip("._") or "run"
    return s


def _run_time(meta: dict) -> datetime:
    from dateutil.parser import parse

    run_id = meta.get("run_id")
    candidates = [run_id.get("run_time") if isinstance(run_id, dict) else None,
                  (meta.get("batch_markers") or {}).get("ge_load_time")]
    for c in candidates:
        if c:
            try:
                t = parse(c)
                return t if t.tzinfo else t.replace(tzinfo=UTC)
            except (ValueError, TypeError, OverflowError):
                pass
    return datetime.now(UTC)


def _context(site_dir: pathlib.Path):
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites={
            SITE_NAME: {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(site_dir),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                # only the validations and expectations sections, no profiling section
                "site_section_builders": {"profiling": "None"},
            }
        },
        analytics_enabled=False,
    )
    return gx.get_context(project_config=config, mode="ephemeral")


# What each of the contract's row-level rules asks (validate.py names them in each expectation's meta.rule):
# the Data Docs pages say this, under the rule's name, instead of GX's sentence about an internal column.
_RULE_TEXT = {
    "required": "{col} must be present",
    "date": "{col} must be a date (YYYY-MM-DD)",
    "datetime": "{col} must be a date and time (ISO 8601)",
    "code": "{col} must be one of the contract's codes",
    "decimal": "{col} must be a decimal number",
    "integer": "{col} must be a whole number",
    "not_after_file_date": "{col} must not be after the file's date",
    "date_of_birth_from_1900": "date_of_birth must be on or after 1900-01-01",
    "nino_format": "nino must be a National Insurance number (HMRC format)",
    "postcode_format": "postcode must be a UK postcode (BS 7666)",
    "record_id_unique": "record_id must be unique in the file",
    "sessions_missed_within_possible": "sessions_missed must not exceed sessions_possible",
    "term_format": "term must be YYYY-AUT, YYYY-SPR or YYYY-SUM",
    "upn_check_letter": "upn must be 13 characters with a correct check letter",
    "nhs_number_check_digit": "nhs_number must be 10 digits with a correct check digit",
    "value_too_long": "no value may be longer than the contract allows",
}


def contract_column(column: str) -> str:
    """The feed's own column behind one validate.py derives for a rule (``date_of_birth__is_date`` ->
    ``date_of_birth``); ``_values__fit`` stands for every column."""
    if column.startswith("_values"):
        return "every column"
    return column.split("__", 1)[0]


def describe_rule(rule: str) -> str:
    """The Data Docs line of a contract rule: its name, then what it asks (no ``$``: GX reads it as a template)."""
    kind, _, column = rule.partition(":")
    text = _RULE_TEXT.get(kind, "").format(col=column or "the value")
    return (f"Rule {rule}: {text}" if text else f"Rule {rule}").replace("$", "")


def _contract_names(result: dict) -> None:
    """Show the contract's rule names and columns, not validate.py's derived columns, in an expectation result."""
    config = result.get("expectation_config") or {}
    rule = (config.get("meta") or {}).get("rule")
    if not rule:
        return
    config["description"] = describe_rule(str(rule))
    kwargs = config.get("kwargs") or {}
    if isinstance(kwargs.get("column"), str) and "__" in kwargs["column"]:
        kwargs["column"] = contract_column(kwargs["column"])


FAILED_STATUS = re.compile(r'(<i class="fas fa-times text-danger" aria-hidden="true"></i> Failed)')


def _explain_failed(page: pathlib.Path, outcome: dict) -> None:
    """On a staged file's validation page, say what "Failed" means: rows quarantined, the file staged."""
    quarantined, staged = int(outcome.get("rows_quarantined") or 0), int(outcome.get("rows_staged") or 0)
    if outcome.get("status") in ("staged", "superseded", "validated") and quarantined:
        note = (f"<br><span id=tfp-failed-means class=\"text-warning\"><strong>Rows quarantined, file staged.</strong> "
                f"{quarantined} of {quarantined + staged} rows broke at least one row-level rule below and were "
                f"quarantined (kept out of the warehouse with the rules they broke); the other {staged} rows were "
                "staged. A file that breaks a file-level rule is rejected whole instead.</span>")
    elif outcome.get("status") == "rejected":
        note = ("<br><span id=tfp-failed-means class=\"text-danger\"><strong>File rejected.</strong> It broke a "
                "file-level rule: none of its rows were staged (see the run report).</span>")
    else:
        return
    text = page.read_text(encoding="utf-8")
    new = FAILED_STATUS.sub(lambda m: m.group(1) + note, text, count=1)
    if new != text:
        page.write_text(new, encoding="utf-8")


INDEX_SECTION = re.compile(r'(<div id="section-1" )')


def _explain_index(index: pathlib.Path, outcomes: dict[str, dict]) -> None:
    """Above the index's table: what its "Failed" means for files that staged with rows quarantined."""
    partial = sorted(n for n, o in outcomes.items()
                     if o.get("status") in ("staged", "superseded", "validated") and o.get("rows_quarantined"))
    rejected = sorted(n for n, o in outcomes.items() if o.get("status") == "rejected")
    if not partial and not rejected:
        return
    import html

    note = ('<div id=tfp-status-means class="alert alert-warning"><strong>"Failed" below does not mean a file '
            "was refused.</strong> "
            + (f"{len(partial)} file(s) staged with some rows quarantined: those rows broke a row-level rule and "
               "were kept out of the warehouse, the other rows were staged (" + html.escape(", ".join(partial))
               + "). " if partial else "")
            + (f"{len(rejected)} file(s) rejected whole for a file-level rule (" + html.escape(", ".join(rejected))
               + "). " if rejected else "")
            + "Each file's page gives its counts; the run report's Files table gives the rules.</div>")
    text = index.read_text(encoding="utf-8")
    new = INDEX_SECTION.sub(lambda m: note + m.group(1), text, count=1)
    if new != text:
        index.write_text(new, encoding="utf-8")


def build_data_docs(site_dir: pathlib.Path, runs: list[tuple[str, dict]],
                    outcomes: dict[str, dict] | None = None) -> dict[str, str]:
    """Render ``runs`` ((name, ExpectationSuiteValidationResult JSON dict)) as a Data Docs site.

    Every dict is sanitised first. Each run becomes a validation page under
    ``site_dir/validations/<suite>/<name>/<run time>/<batch id>.html``; each suite seen gets an
    expectation suite page under ``site_dir/expectations/<suite>.html``, rebuilt from the
    expectation configurations in the results. GX rebuilds the whole site, so ``runs`` is every
    result to show. Returns each run's page relative to ``site_dir`` (and ``""`` for index.html).
    Each expectation is shown by its contract rule name (``meta.rule``) and column; ``outcomes`` (file
    status and row counts by name) lets a page say what its "Failed" means for that file.
    Analytics are off in the context's config (``_context``), not by changing the process's environment.
    """
    from great_expectations.core import ExpectationSuite
    from great_expectations.core.expectation_validation_result import (
        ExpectationSuiteValidationResultSchema,
    )
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    site_dir = pathlib.Path(site_dir).resolve()
    site_dir.mkdir(parents=True, exist_ok=True)
    context = _context(site_dir)
    schema = ExpectationSuiteValidationResultSchema()
    suites: dict[str, dict[str, ExpectationConfiguration]] = {}
    seen: set[tuple] = set()
    pages: dict[str, str] = {}

    for name, result_json in runs:
        clean = sanitise(result_json)
        for r in clean["results"]:
            _contract_names(r)
            res = r["result"]
            # GX's "N unexpected values found" statement needs all three; without them it raises
            # KeyError, which GX logs at ERROR level (expect_column_distinct_values_to_be_in_set
            # returns unexpected_count alone). Leave the count out of the page instead.
            if "unexpected_count" in res and not {"unexpected_percent", "element_count"} <= res.keys():
                res.pop("unexpected_count")
        meta = clean["meta"]
        run_name = _safe(name)
        run_time = _run_time(meta)
        meta["run_id"] = {"run_name": run_name, "run_time": run_time.isoformat()}
        abd = meta.get("active_batch_definition") or {}
        if abd.get("data_asset_name"):  # shown as "Data asset:" in the page header
            meta["batch_spec"] = {"data_asset_name": abd["data_asset_name"]}
        result = schema.load(clean)  # -> ExpectationSuiteValidationResult
        suite_name = result.suite_name
        batch_id = next((r.expectation_config.kwargs.get("batch_id") for r in result.results
                         if r.expectation_config is not None and r.expectation_config.kwargs.get("batch_id")),
                        None) or "-".join(filter(None, (abd.get("datasource_name"), abd.get("data_asset_name")))) \
            or "batch"
        key = ValidationResultIdentifier(
            expectation_suite_identifier=ExpectationSuiteIdentifier(name=suite_name),
            run_id=RunIdentifier(run_name=run_name, run_time=run_time),
            batch_identifier=_safe(batch_id),
        )
        if key.to_tuple() in seen:
            raise ValueError(f"two runs would share one validation page: {name!r}")
        seen.add(key.to_tuple())
        parts = key.to_tuple()
        pages[name] = "/".join(["validations", *parts[:-1]]) + f"/{parts[-1]}.html"
        context.validation_results_store.set(key, result)

        configs = suites.setdefault(suite_name, {})
        for r in result.results:
            cfg = r.expectation_config
            if cfg is None:
                continue
            kwargs = {k: v for k, v in cfg.kwargs.items() if k != "batch_id"}
            ident = cfg.id or f"{cfg.type}:{sorted(kwargs.items())!r}"
            configs.setdefault(ident, ExpectationConfiguration(
                type=cfg.type, kwargs=kwargs, meta=cfg.meta, notes=cfg.notes,
                description=cfg.description, severity=cfg.severity, id=cfg.id))

    for suite_name, configs in suites.items():
        suite = ExpectationSuite(name=suite_name)
        for cfg in configs.values():
            try:  # an expectation type unknown to this GX install (a custom one) cannot be added
                suite.add_expectation_configuration(cfg)
            except Exception:  # noqa: BLE001 - the suite page is a convenience; log type only
                log.warning("data docs: expectation %s left out of suite page %s", cfg.type, suite_name)
        context.suites.add(suite)

    context.build_data_docs(site_names=[SITE_NAME])
    # GX deletes the pages of results not in this build but leaves their directories: remove those.
    for section in ("validations", "expectations"):
        for d in sorted((site_dir / section).rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
    # GX logs (and swallows) an exception raised while rendering a page: check every page is there.
    expected = [site_dir / "index.html"] + [
        site_dir.joinpath("validations", *key[:-1], f"{key[-1]}.html") for key in seen]
    missing = [str(p.relative_to(site_dir)) for p in expected if not p.is_file()]
    if missing:
        raise RuntimeError(f"GX did not write these data docs pages: {missing}")
    for name, outcome in (outcomes or {}).items():
        if name in pages:
            _explain_failed(site_dir / pages[name], outcome)
    _explain_index(site_dir / "index.html", outcomes or {})
    localise_site(site_dir)
    return {"": "index.html", **pages}


STATIC = pathlib.Path(__file__).resolve().parent / "static"
# Where the plugin serves STATIC, relative to a night's site root (reports/<date>/data_docs).
SERVED_STATIC = "../../static/"
# GX 1.24's CDN addresses (query strings aside) -> the vendored file, relative to the site root.
_VENDORED = {
    "https://cdn.jsdelivr.net/npm/vega@5": "vega-5.33.1/vega.min.js",
    "https://cdn.jsdelivr.net/npm/vega-lite@5": "vega-lite-5.23.0/vega-lite.min.js",
    "https://cdn.jsdelivr.net/npm/vega-embed@6": "vega-embed-6.29.0/vega-embed.min.js",
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery-3.7.1/jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": "popper.js-1.12.9/popper.min.js",
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": "bootstrap-4.3.1/js/bootstrap.min.js",
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": "bootstrap-4.3.1/css/bootstrap.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": "bootstrap-table-1.19.1/bootstrap-table.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": "bootstrap-table-1.19.1/bootstrap-table.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js":
        "bootstrap-table-1.19.1/extensions/filter-control/bootstrap-table-filter-control.min.js",
    # GX asks for the 1.19.0 stylesheet of the extension beside 1.19.1's script: 1.19.1's is used
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css":
        "bootstrap-table-1.19.1/extensions/filter-control/bootstrap-table-filter-control.min.css",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css":
        "bootstrap-table-1.19.1/extensions/filter-control/bootstrap-table-filter-control.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js":
        "bootstrap-datepicker-1.9.0/js/bootstrap-datepicker.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css":
        "bootstrap-datepicker-1.9.0/css/bootstrap-datepicker.min.css",
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css":
        "bootstrap-dark-1.1.0/css/bootstrap-prefers-dark.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": "fontawesome-free-6.6.0/css/all.min.css",
}
_LOCAL = {  # GX's logos on S3 -> its own copies in the site's static/images; the rest -> tfp's package
    "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/logo-long.png": "static/images/logo-long.png",
    "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/full_logo_dark.png":
        "static/images/logo-long.png",
    **{url: f"{SERVED_STATIC}vendor/{path}" for url, path in _VENDORED.items()},
}
_EXTERNAL = r"(?:[a-z][a-z0-9+.-]*:|//)"  # any scheme (https:, javascript:, data:) or a scheme-relative URL
_EXTERNAL_LINK = re.compile(rf"""(<a\b[^>]*?)\s+href\s*=\s*(["']){_EXTERNAL}[^"']*\2""", re.I | re.S)
_URL = re.compile(rf"""(?P<pre>\b(?:src|href|action|formaction|poster|data)\s*=\s*(?P<q>["']))(?P<url>{_EXTERNAL}[^"']*)(?P=q)"""
                  rf"""|(?P<cpre>url\(\s*(?P<cq>["']?))(?P<curl>{_EXTERNAL}[^"')]*)(?P=cq)\s*\)"""
                  rf"""|(?P<ipre>@import\s+(?P<iq>["']))(?P<iurl>{_EXTERNAL}[^"']*)(?P=iq)""", re.I)
_STATIC_REF = re.compile(r"""(\b(?:src|href)\s*=\s*["'])(?:\.\./)*static/(?=images/|styles/|fonts/)""", re.I)
_SCRIPT = re.compile(r"<script\b(?P<attrs>[^>]*)>(?P<body>.*?)</script\s*>", re.I | re.S)
_JS_TYPE = re.compile(r"""\btype\s*=\s*["']?(?!(?:text|application)/(?:java|ecma)script|module)""", re.I)
_HANDLER = re.compile(r"""(<[a-z][^<>]*?)\s(on[a-z]+)\s*=\s*(?:"([^"]*)"|'([^']*)')""", re.I | re.S)
_CALL = re.compile(r"""^\s*(\w+)\(\s*(?:'([^'\\]*)')?\s*\)\s*;?\s*$""")
_HANDLED = frozenset({"clearTableFilters", "hideSucceededValidations", "showAllValidations"})  # handlers.js


def script_name(content: bytes) -> str:
    """The file name of a script moved out of a page: its SHA-256, so replacing it is detectable."""
    return hashlib.sha256(content).hexdigest()[:24] + ".js"


def external_references(text: str) -> list[str]:
    """What in a page (or stylesheet) would make a browser load or run something from elsewhere:
    external URLs, inline scripts, event-handler attributes. Empty for a page fit to serve."""
    found = [m.group("url") or m.group("curl") or m.group("iurl") for m in _URL.finditer(text)]
    found += [f"inline script {m.group('body')[:40]!r}" for m in _SCRIPT.finditer(text)
              if "src" not in m.group("attrs").lower() and not _JS_TYPE.search(m.group("attrs"))]
    found += [f"{m.group(2)} handler" for m in _HANDLER.finditer(text)]
    return found


def _localise(text: str, prefix: str, site_dir: pathlib.Path) -> str:
    def local(m: re.Match) -> str:
        url = m.group("url") or m.group("curl") or m.group("iurl")
        path = _LOCAL.get(url.split("?", 1)[0])
        if path is None:
            raise RuntimeError(f"data docs: a page refers to {url.split('?', 1)[0]!r}, which tfp has no copy of")
        pre = m.group("pre") or m.group("cpre") or m.group("ipre")
        quote = m.group("q") or m.group("cq") or m.group("iq") or ""
        return f"{pre}{prefix}{path}{quote}" + (")" if m.group("cpre") else "")

    def script(m: re.Match) -> str:
        attrs, body = m.group("attrs"), m.group("body")
        if "src" in attrs.lower() or _JS_TYPE.search(attrs):
            return m.group(0)
        # named by its content: the plugin serves a script of the site only if name and content agree
        name = script_name(body.encode())
        out = site_dir / "static" / "tfp" / name
        if not out.exists():
            out.write_bytes(body.encode())
        return f'<script src="{prefix}static/tfp/{name}"></script>'

    def handler(m: re.Match) -> str:
        code = m.group(3) if m.group(3) is not None else m.group(4)
        call = _CALL.match(code)
        if not call or call.group(1) not in _HANDLED:
            raise RuntimeError(f"data docs: an {m.group(2)} handler tfp cannot move out of the page: {code[:60]!r}")
        arg = f' data-tfp-arg="{call.group(2)}"' if call.group(2) is not None else ""
        return f'{m.group(1)} data-tfp-on="{m.group(2)[2:].lower()}" data-tfp-call="{call.group(1)}"{arg}'

    text = _EXTERNAL_LINK.sub(r"\1", text)  # a link off-site (GX's home page, its newsletter) becomes text
    # GX gets the depth wrong for the favicon of a validation page: its static folder is at the site root
    text = _STATIC_REF.sub(lambda m: f"{m.group(1)}{prefix}static/", text)
    text = _URL.sub(local, text)
    text = _SCRIPT.sub(script, text)
    moved = _HANDLER.subn(handler, text)
    while moved[1]:  # one tag can carry several handlers
        text = moved[0]
        moved = _HANDLER.subn(handler, text)
    if "data-tfp-call=" in text:
        text = re.sub(r"</body\s*>", f'<script src="{prefix}{SERVED_STATIC}tfp/handlers.js"></script></body>', text,
                      count=1, flags=re.I)
    return text


def localise_site(site_dir: pathlib.Path) -> None:
    """Make a built site self-contained (see the module docstring); raises if anything external is left."""
    site_dir = pathlib.Path(site_dir)
    shutil.rmtree(site_dir / "static" / "tfp", ignore_errors=True)  # GX rewrote every page: their scripts too
    (site_dir / "static" / "tfp").mkdir(parents=True)
    for path in sorted(site_dir.rglob("*")):
        if path.suffix not in (".html", ".css") or not path.is_file():
            continue
        prefix = "../" * (len(path.relative_to(site_dir).parts) - 1)
        text = path.read_text(encoding="utf-8")
        new = _localise(text, prefix, site_dir)
        left = external_references(new)
        if left:
            raise RuntimeError(f"data docs: {path.relative_to(site_dir)} still refers to {left[:3]}")
        if new != text:
            path.write_text(new, encoding="utf-8")

"""The one shape of a stage: ``run(ctx: RunContext) -> StageResult``.

A task of the nightly (or of retention) does three things, always in :mod:`tfp.pipeline`: build a
:class:`RunContext` with :func:`open_context`, call one stage module's ``run``, and hand the
:class:`StageResult`'s :meth:`~StageResult.to_xcom` to Airflow. The context is frozen, so a stage cannot
change what the next one sees; everything a stage needs from outside (config, reference date, warehouse,
keys, landing store, clock) is in it, so a test builds one with a fixed clock and calls ``run`` directly.

A result carries counts and ids only: its XCom and the run report are read from it, never from a
personal value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from tfp.lineage import NONE as NO_LINEAGE
from tfp.lineage import Lineage

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from tfp.config import Config, SecretKeys
    from tfp.landing import LandingStore


def utc_now() -> datetime:
    """The default clock: now, in UTC (a context's ``clock`` replaces it in a test)."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class RunContext:
    """What one task of one night works with. Built once per task by :func:`open_context`.

    ``keys`` are read on first use, not when the context is built: extract, validate and stage never
    need them, and a night whose keys are missing fails at check_setup, naming the variable. ``landing``
    (the :class:`~tfp.landing.LandingStore`) is made on first use too.
    ``source`` is set for the per-source stages (extract, validate, stage), ``category`` for a
    retention category; ``upstream`` holds the results the report reads; ``dry_run`` is the deliver
    and retention tasks' parameter.
    """

    config: Config
    reference_date: date
    warehouse: Engine
    clock: Callable[[], datetime] = utc_now
    source: str | None = None
    # the partner of ``source`` a per-partner stage works on; None: the short form's (the source's own name)
    partner: str | None = None
    category: str | None = None
    dry_run: bool = False
    upstream: Mapping[str, StageResult] = field(default_factory=dict)
    # the orchestrator's run, for the report's header: run_id, started_at (ISO 8601); empty outside one
    run: Mapping[str, str] = field(default_factory=dict)

    @cached_property
    def keys(self) -> SecretKeys:
        """The three checked secrets (read once, on first use)."""
        from tfp.config import load_keys

        return load_keys(self.config)

    @cached_property
    def landing(self) -> LandingStore:
        """The landing copies of this warehouse (paths, keys, locks, write, read, destroy, sweep)."""
        from tfp.landing import LandingStore

        return LandingStore.of(self.warehouse, self.config)

    def need_source(self) -> str:
        """The context's source, for a per-source stage (a context without one is a caller's bug)."""
        if self.source is None:
            raise ValueError("this stage runs per source: open its context with source=...")
        return self.source


def open_context(config_path: str | Path, reference_date: date, source: str | None = None, *,
                 partner: str | None = None, category: str | None = None, dry_run: bool = False,
                 upstream: Mapping[str, StageResult] | None = None,
                 run: Mapping[str, str] | None = None,
                 clock: Callable[[], datetime] = utc_now) -> RunContext:
    """The one way a task gets its context: load the config, open the warehouse (refused unless its
    schema is this tfp's revision) and bundle them with the task's reference date and parameters."""
    from tfp.config import load_config, warehouse_url
    from tfp.warehouse import connect

    config = load_config(config_path)
    return RunContext(config=config, reference_date=reference_date, warehouse=connect(warehouse_url(config)),
                      clock=clock, source=source, partner=partner, category=category, dry_run=dry_run,
                      upstream=dict(upstream or {}), run=dict(run or {}))


# -- results ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StageResult:
    """What a stage did, in counts only: its stage name, named counts and, for a per-source stage, the
    source. Subclasses add typed extras (link rates, packaged files); each says how it becomes an XCom
    (plain JSON: counts, ids, paths) and back (:func:`result_from_xcom`), so the report reads a result
    whether it ran in this process or came through Airflow. ``lineage`` names the files and tables the
    stage read and wrote (:mod:`tfp.lineage`); it is handed to the orchestrator, not put in the XCom."""

    stage: str
    counts: Mapping[str, int] = field(default_factory=dict)
    source: str | None = None
    lineage: Lineage = NO_LINEAGE

    registry: ClassVar[dict[str, type[StageResult]]] = {}

    def __init_subclass__(cls, stage: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if stage is not None:
            StageResult.registry[stage] = cls

    def count(self, name: str) -> int:
        """One count, 0 when the stage did not report it."""
        return int(self.counts.get(name, 0))

    def to_xcom(self) -> dict[str, Any]:
        """The task's return value: the counts, as plain ints."""
        return {k: int(v) for k, v in self.counts.items()}

    @classmethod
    def from_xcom(cls, stage: str, value: Mapping[str, Any]) -> StageResult:
        """A result back from its XCom: the int values are the counts."""
        return cls(stage=stage, counts={k: int(v) for k, v in value.items()
                                        if isinstance(v, int) and not isinstance(v, bool)})


@dataclass(frozen=True)
class LinkResult(StageResult, stage="link"):
    """Linking's counts, and per partner dataset how many records linked and how many did not."""

    per_dataset: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    @classmethod
    def of(cls, per_dataset: Mapping[str, Mapping[str, int]], review: Mapping[str, int] | None = None) -> LinkResult:
        """``review``: the review queue's counts (review_queued, review_decided, review_pending; tfp.link)."""
        per = {d: {"linked": int(c["linked"]), "unlinked": int(c["unlinked"])} for d, c in per_dataset.items()}
        return cls(stage="link", per_dataset=per,
                   counts={"records_linked": sum(c["linked"] for c in per.values()),
                           "records_unlinked": sum(c["unlinked"] for c in per.values()),
                           **{k: int(v) for k, v in (review or {}).items()}})

    def link_rate(self, dataset: str) -> float:
        """The share of a dataset's records linked to a roster person (0 when it had none)."""
        c = self.per_dataset.get(dataset, {})
        total = c.get("linked", 0) + c.get("unlinked", 0)
        return c.get("linked", 0) / total if total else 0.0


INDICATORS_KEY = "indicators"  # the criteria XCom's entry beside the scopes


@dataclass(frozen=True)
class CriteriaResult(StageResult, stage="criteria"):
    """The flags' counts per scope: ``all`` counts every roster person (the evaluation's own checks),
    ``kept`` only people kept by consent (what is delivered). ``counts`` are the kept scope's.
    ``indicators`` are the kept scope's families per indicator ("<flag>.<indicator>" -> ``families``
    meeting it, ``eligible`` of them; tfp.criteria.INDICATORS), for the run report."""

    by_scope: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    indicators: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    @classmethod
    def of(cls, by_scope: Mapping[str, Mapping[str, int]],
           indicators: Mapping[str, Mapping[str, int]] | None = None) -> CriteriaResult:
        scopes = {s: {k: int(v) for k, v in c.items()} for s, c in by_scope.items()}
        found = {i: {k: int(v) for k, v in c.items()} for i, c in (indicators or {}).items()}
        return cls(stage="criteria", by_scope=scopes, counts=dict(scopes.get("kept", {})), indicators=found)

    def to_xcom(self) -> dict[str, Any]:
        out: dict[str, Any] = {scope: dict(c) for scope, c in self.by_scope.items()}
        if self.indicators:
            out[INDICATORS_KEY] = {i: dict(c) for i, c in self.indicators.items()}
        return out

    @classmethod
    def from_xcom(cls, stage: str, value: Mapping[str, Any]) -> CriteriaResult:
        return cls.of({s: c for s, c in value.items() if isinstance(c, Mapping) and s != INDICATORS_KEY},
                      value.get(INDICATORS_KEY))


@dataclass(frozen=True)
class PackageResult(StageResult, stage="package"):
    """The packaged delivery: its outbox folder, its files' names, and the summary as published
    (measure -> programme status -> the disclosed count, e.g. "[c]")."""

    outbox: Path | None = None
    files: tuple[str, ...] = ()
    published_summary: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def to_xcom(self) -> dict[str, Any]:
        return {"outbox": str(self.outbox) if self.outbox else None, "files": len(self.files),
                "file_names": list(self.files), **super().to_xcom(),
                "published_summary": {m: dict(by) for m, by in self.published_summary.items()}}

    @classmethod
    def from_xcom(cls, stage: str, value: Mapping[str, Any]) -> PackageResult:
        base = StageResult.from_xcom(stage, value)
        outbox = value.get("outbox")
        return cls(stage=stage, counts={k: v for k, v in base.counts.items() if k != "files"},
                   outbox=Path(outbox) if outbox else None, files=tuple(value.get("file_names") or ()),
                   published_summary={m: dict(by) for m, by in (value.get("published_summary") or {}).items()})


@dataclass(frozen=True)
class DeliverResult(StageResult, stage="deliver"):
    """What delivery sent (``uploaded``) and found already there (``skipped``), and the names of the
    delivery's files now at the destination (none on a dry run)."""

    delivered: tuple[str, ...] = ()
    dry_run: bool = False

    def to_xcom(self) -> dict[str, Any]:
        return {**super().to_xcom(), **({"dry_run": 1} if self.dry_run else {}),
                **({"delivered": list(self.delivered)} if self.delivered else {})}

    @classmethod
    def from_xcom(cls, stage: str, value: Mapping[str, Any]) -> DeliverResult:
        base = StageResult.from_xcom(stage, value)
        return cls(stage=stage, counts={k: v for k, v in base.counts.items() if k != "dry_run"},
                   delivered=tuple(value.get("delivered") or ()), dry_run=bool(value.get("dry_run")))


@dataclass(frozen=True)
class PathResult(StageResult):
    """A stage whose product is one file (the run report, the retention report)."""

    path: Path | None = None

    def to_xcom(self) -> dict[str, Any]:
        return {**super().to_xcom(), "report": str(self.path) if self.path else None}


@dataclass(frozen=True)
class RetentionResult(StageResult, stage="retention"):
    """One retention category: its cutoff, what was found and deleted, and in what unit."""

    category: str = ""
    cutoff: str = ""
    unit: str = ""

    def to_xcom(self) -> dict[str, Any]:
        return {"cutoff": self.cutoff, "found": self.count("found"), "deleted": self.count("deleted"),
                "unit": self.unit}

    @classmethod
    def from_xcom(cls, stage: str, value: Mapping[str, Any]) -> RetentionResult:
        return cls(stage=stage, counts={"found": int(value.get("found", 0)), "deleted": int(value.get("deleted", 0))},
                   cutoff=str(value.get("cutoff", "")), unit=str(value.get("unit", "")))


def result_from_xcom(stage: str, value: Mapping[str, Any] | None) -> StageResult:
    """The typed result of ``stage`` from its XCom (an empty result when the task left none)."""
    cls = StageResult.registry.get(stage, StageResult)
    return cls.from_xcom(stage, value or {})

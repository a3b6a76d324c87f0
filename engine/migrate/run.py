"""The migration: plan, bulk load every collection, then the set-wise
post-load steps, with a checkpoint committed alongside every batch."""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from engine.core import events
from engine.core.control import MigrationControl
from engine.core.debug_log import unexpected
from engine.core.mapping import Mapping, Table
from engine.core.processes import WorkerPool
from engine.core.redact import printable, redact_text, redact_url
from engine.core.resources import ResourceSampler
from engine.core.run_files import RunFileError, prepare_run_dir
from engine.core.stage import StageRun
from engine.migrate import snapshot, target_prep
from engine.migrate.load import Paused, TableLoader, init_worker, load_in_worker
from engine.migrate.post_load import PostLoad
from engine.migrate.report import write_migration_report
from engine.migrate.run_files import CheckpointFileError, RunFiles
from engine.postgres import checkpoint, ddl, run_guard, state_schema
from engine.postgres.checkpoint import RunState
from engine.postgres.errors import explain
from engine.postgres.follow_state import load_follow
from engine.postgres.session import connect
from engine.source.base import CONNECTION_ADVICE, Source, SourceError, SourceUnreachable
from engine.source.spec import SourceSpec

PHASE_TITLES = {
    1: "Independent Lookup Tables",
    2: "Core Entity Tables",
    3: "Junction Tables",
}


MAX_SESSION_WARNINGS = 50


class Outcome(enum.Enum):
    FINISHED = "finished"
    FINISHED_WITH_QUARANTINE = "finished_with_quarantine"
    FINISHED_SHORT = "finished_short"  # documents read != documents in the source
    PAUSED = "paused"
    FAILED = "failed"


class MigrationError(Exception):
    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


@dataclass
class MigrationSettings:
    postgres_url: str
    run_dir: Path = field(default_factory=Path.cwd)
    batch_size: int | None = None  # default: the mapping's rules
    workers: int | None = None  # loader processes; default: one per core
    follow: bool = False  # take the change stream's position before the snapshot


class Migration(StageRun):
    def __init__(self, source: Source, settings: MigrationSettings,
                 sinks: Iterable[events.Sink] = (), control: MigrationControl | None = None,
                 mapping: Mapping | None = None) -> None:
        super().__init__(sinks, control, mapping)
        self.source = source
        self.settings = settings
        self.batch_size = settings.batch_size or self.mapping.rules.batch_size
        self.target = redact_url(settings.postgres_url)
        self.files = RunFiles(settings.run_dir, self.target,
                              warn=lambda text: self.emit(events.Notice("warning", text)))
        self.sinks.append(self.files.errors)
        self.state: RunState | None = None
        self.documents_read = 0
        self.workers = settings.workers or os.cpu_count() or 1
        self.pool: WorkerPool | None = None  # loader processes, when workers > 1
        self.phases: dict[str, float] = {}  # this invocation's seconds per phase
        self.resumed = False
        self._began = dt.datetime.now(dt.UTC)
        self._sampler: ResourceSampler | None = None
        self._session_recorded = False
        self._warnings: list[str] = []  # the warning signs said, for the session record
        self._warnings_lock = threading.Lock()

    def emit(self, event: events.Event) -> None:
        said = (f"{event.level}: {event.text}" if isinstance(event, events.Notice)
                and event.level != "info" else f"failed: {event.message}"
                if isinstance(event, events.MigrationFailed) else None)
        if said:
            with self._warnings_lock:  # the post-load steps emit from their threads
                if len(self._warnings) < MAX_SESSION_WARNINGS:
                    self._warnings.append(said)
        super().emit(event)

    # -- entry point -------------------------------------------------------

    def run(self) -> Outcome:
        """The migration, or what is left of it; each invocation is recorded as a
        session of the run (migration-sessions.jsonl) with its resource peaks."""
        self._began = dt.datetime.now(dt.UTC)
        with ResourceSampler(self.settings.run_dir) as self._sampler:
            outcome = self._run_guarded()
            if outcome is Outcome.FAILED and self.state is not None:
                self._say_what_is_off()
            self._record_session(outcome)
        return outcome

    def _say_what_is_off(self) -> None:
        """After a failure: what the load took off stays off until the run
        finishes; say exactly what, and how it comes back."""
        off = target_prep.off_after_failure(self.settings.postgres_url, self.mapping)
        if off:
            self.emit(events.Notice("warning", f"{off}: this run's load took them off. Run "
                                    "cockpit migrate again to resume: it restores them after "
                                    "the load (or start over: cockpit schema deploy --force)."))

    def _record_session(self, outcome: Outcome) -> None:
        if self._session_recorded or self.state is None or self._sampler is None:
            return
        self._session_recorded = True
        ended = dt.datetime.now(dt.UTC)
        with self._warnings_lock:
            warnings = [redact_text(w) for w in self._warnings]
        try:
            self.files.add_session({
                "runStartedAt": self.state.started_at.isoformat(),
                "startedAt": self._began.isoformat(), "endedAt": ended.isoformat(),
                "seconds": round((ended - self._began).total_seconds(), 3),
                "outcome": outcome.value, "resumed": self.resumed,
                "documentsRead": self.documents_read,
                "phaseSeconds": {k: round(v, 3) for k, v in self.phases.items()},
                "warnings": warnings,
                "resources": self._sampler.peaks()})
        except OSError as exc:  # the run's own outcome stands; say what was not written
            self.emit(events.Notice("warning", f"the session record was not written: {exc}"))

    def _run_guarded(self) -> Outcome:
        started = time.monotonic()
        try:
            prepare_run_dir(self.settings.run_dir)
            with contextlib.ExitStack() as stack:
                if self.workers > 1:  # started first: their start-up overlaps the checks
                    self.pool = stack.enter_context(WorkerPool(
                        self.workers, init_worker, (SourceSpec.of(self.source),
                                                    self.settings.postgres_url,
                                                    self.batch_size, self.control,
                                                    self.mapping)))
                conn = stack.enter_context(connect(self.settings.postgres_url, ""))
                self._lock(conn)
                if refused := run_guard.refusal(conn, run_guard.Stage.MIGRATE,
                                                self.source.description, self.mapping.rules.digest):
                    raise MigrationError(*refused)  # not this run's source or rules; cut over
                return self._run(conn, started)
        except Paused:
            return self._stopped()
        except (MigrationError, target_prep.TargetRefused) as exc:
            self.emit(events.MigrationFailed(exc.message, exc.hint))
        except CheckpointFileError as exc:
            self.emit(events.MigrationFailed(str(exc)))
        except RunFileError as exc:
            self.emit(events.MigrationFailed(str(exc), "Fix what it says (free space, the "
                                             "folder's permissions, a link), then run cockpit "
                                             "migrate again: it resumes from the last "
                                             "checkpoint."))
        except SourceUnreachable as exc:
            self.emit(events.Notice("error", f"{exc} {CONNECTION_ADVICE}"))
            return self._stopped()
        except SourceError as exc:
            self.emit(events.MigrationFailed(redact_text(str(exc)),
                                             "Fix the source, then run cockpit migrate again: "
                                             "it resumes from the last checkpoint."))
        except Exception as exc:  # told by its cause where known, else as a defect
            problem = (explain(exc, self.settings.postgres_url, "cockpit migrate")
                       if isinstance(exc, psycopg.Error) else None)
            self.emit(events.MigrationFailed(problem.message, problem.fix) if problem else
                      events.MigrationFailed(unexpected(exc, "migrating"), ""))
        return Outcome.FAILED

    def _source_size(self) -> dict[str, int] | None:
        try:
            return self.source.size()
        except (SourceError, OSError):
            return None  # a figure for the report only: the run stands without it

    def _lock(self, conn: psycopg.Connection) -> None:
        if not checkpoint.take_run_lock(conn):
            raise MigrationError(
                "another migration is already running against this target",
                "Wait for it to finish or pause it (Ctrl+C in its terminal); two runs on "
                "one target are refused.")

    # -- the run ---------------------------------------------------------------

    def _run(self, conn: psycopg.Connection, started: float) -> Outcome:
        try:
            ddl.require_deployed(conn, self.mapping)
        except ddl.SchemaError as exc:
            raise MigrationError(str(exc)) from None
        if checkpoint.run_finished(conn):
            raise MigrationError(
                "this target already holds a finished migration",
                "Check it with cockpit validate, or start over with "
                "cockpit schema deploy --force (drops every row).")
        file_state = self.files.read_checkpoint()
        self.state = checkpoint.load_state(conn)
        resumed = self.resumed = self.state is not None
        if self.state is None:
            if file_state is not None:
                self.emit(events.Notice("warning", f"{self.files.checkpoint_path.name} belongs "
                                        "to no run on this target; starting a new run"))
            # The pre-flight, before anything of the target changes; then the
            # checkpoint, with indexes, foreign keys and autovacuum off.
            target_prep.check_schema(conn, self.mapping, resumed=False, emit=self.emit)
            self.state = target_prep.start_new_run(conn, self.source, self.mapping,
                                                   self.settings.follow, self.emit)
        elif self.state.source != self.source.description:
            raise MigrationError(
                f"the checkpoint on this target is for source {self.state.source}, "
                f"not {self.source.description}",
                "Resume with the same --mongo/--dump, or start over with "
                "cockpit schema deploy --force.")
        elif self.state.rules_digest and self.state.rules_digest != self.mapping.rules.digest:
            raise MigrationError(
                f"this run started with other rules than {self.mapping.rules.source} "
                f"(sha256 {self.state.rules_digest[:12]}, now {self.mapping.rules.digest[:12]})",
                "Resume with the rules file it started with (--rules), so every row follows "
                "one set of rules, or start over with cockpit schema deploy --force.")
        elif self.settings.follow and load_follow(conn) is None:
            raise MigrationError(
                "this run's snapshot began without --follow: the changes made since it "
                "began are unknown",
                "Finish it with cockpit migrate, or start over to follow: cockpit schema "
                "deploy --force, then cockpit migrate --follow.")
        else:
            target_prep.check_schema(conn, self.mapping, resumed=True, emit=self.emit)
            try:  # a run paused by an older version: its checkpoint brought up to date
                with conn.transaction():
                    state_schema.upgrade(
                        conn, say=lambda text: self.emit(events.Notice("info", text)))
            except state_schema.StateSchemaError as exc:
                raise MigrationError(*exc.args) from None
        # The files hold exactly this run's quarantine (none yet, for a new one).
        self.files.errors.rewrite(conn)
        self._plan(resumed)
        phases = self.phases
        phases["prepare"] = time.monotonic() - started

        if self.workers > 1:
            # Foreign keys are off during the load, so every table can go at
            # once: one worker process per core, the largest tables first.
            self.emit(events.PhaseStarted(1, f"{PHASE_TITLES[1]} and {PHASE_TITLES[2]} "
                                          f"({self.workers} worker processes)"))
            self._load_tables(conn, self.mapping.entity_tables)
        else:
            for phase in (1, 2):
                self.emit(events.PhaseStarted(phase, PHASE_TITLES[phase]))
                self._load_tables(conn, [t for t in self.mapping.entity_tables
                                         if self.mapping.phase_of(t.name) == phase])
        phases["load"] = time.monotonic() - started - sum(phases.values())
        short = self._check_counts()
        PostLoad(self.settings.postgres_url, self.workers, self.mapping, self.source,
                 self.state, self.files, self.control, self.emit, self._wait_while_paused).run(conn)
        phases["postLoad"] = time.monotonic() - started - sum(phases.values())

        with conn.transaction():
            target_prep.give_back(conn, self.mapping)
            checkpoint.finish_run(conn)
        self.state = checkpoint.load_state(conn)
        assert self.state is not None
        self.files.finished()
        seconds = time.monotonic() - started
        quarantined = sum(t.quarantined for t in self.state.tables.values())
        self._record_session(Outcome.FINISHED_SHORT if short else
                             Outcome.FINISHED_WITH_QUARANTINE if quarantined else Outcome.FINISHED)
        sessions = self.files.sessions(self.state.started_at.isoformat(), self.resumed)
        report = write_migration_report(
            conn, self.mapping, self.settings.run_dir, self.source.description, self.target,
            seconds, phases, short, sessions, self._source_size())
        self.emit(events.MigrationFinished(
            total_records=self.state.total_records, quarantined=quarantined, seconds=seconds,
            documents=self.documents_read, report_path=str(report),
            junction_rows=sum(t.rows for t in self.state.tables.values() if not t.collection),
            short_tables=tuple(short)))
        if short:
            return Outcome.FINISHED_SHORT
        return Outcome.FINISHED_WITH_QUARANTINE if quarantined else Outcome.FINISHED

    def _plan(self, resumed: bool) -> None:
        assert self.state is not None
        present = set(self.source.collection_names())
        mapped = set(self.mapping.collections)
        source_only = tuple(printable(n) for n in sorted(present - mapped))
        missing = tuple(sorted(mapped - present))
        for name in source_only:
            self.emit(events.Notice("warning", f"collection {name} is in the source but not in "
                                    "the mapping: it is not migrated"))
        for name in missing:
            self.emit(events.Notice("warning", f"collection {name} is mapped but absent from "
                                    "the source: its table stays empty"))
        plans = tuple(events.TablePlan(
            t.table, t.collection, self.mapping.phase_of(t.table), t.expected,
            t.status == "done", t.rows, t.quarantined)
            for t in (self.state.tables[n] for n in self.mapping.load_order()))
        self.emit(events.PlanReady(
            plans, self.batch_size, self.source.description, self.target, resumed,
            self.state.current_table, self.state.total_records, source_only, missing))

    # -- bulk load ---------------------------------------------------------------

    def _load_tables(self, conn: psycopg.Connection, tables: list[Table]) -> None:
        """Bulk-load tables: in worker processes (one per core, largest tables
        first) when there are several cores, else here."""
        assert self.state is not None
        todo = [t for t in tables if self.state.tables[t.name].status != "done"]
        for t in tables:
            if t not in todo:
                ts = self.state.tables[t.name]
                self.emit(events.TableSkipped(t.name, ts.rows, ts.quarantined))
        if self.pool is None or len(todo) <= 1:
            loader = TableLoader(conn, self.source, self.mapping, self.batch_size,
                                 self.control, self._on_load_event)
            for t in todo:
                loader.load(t, self.state.tables[t.name], on_pause=self._save_and_say_paused)
            return
        todo.sort(key=lambda t: self.state.tables[t.name].expected, reverse=True)
        announced = False

        def tick() -> None:  # a pause in the cockpit: say so once
            nonlocal announced
            if self.control.paused and not self.control.stopping and not announced:
                self._save_and_say_paused()
            announced = self.control.paused

        results = self.pool.run(load_in_worker, [t.name for t in todo],
                                lambda e: self._on_load_event(e, conn), tick)
        self.state = checkpoint.load_state(conn)
        self.files.mirror(self.state)
        if "paused" in results.values():
            raise Paused

    def _on_load_event(self, event: events.Event, conn: psycopg.Connection | None = None) -> None:
        """Forward a loader's event; keep the checkpoint file fresh."""
        self.emit(event)
        if isinstance(event, events.BatchCommitted):
            self.documents_read += event.batch_documents
        if isinstance(event, events.BatchCommitted | events.TableFinished) and self.files.due():
            if conn is not None:  # workers: read what they committed
                self.state = checkpoint.load_state(conn)
            self.files.mirror(self.state)

    def _save_and_say_paused(self) -> None:
        """A pause begins (the cockpit's p): the file mirrors the checkpoint,
        and the pause is reported unless the run is stopping for good."""
        self.files.mirror(self.state)
        if self.control.paused and not self.control.stopping:
            self.emit(self._paused_event())

    def _wait_while_paused(self) -> None:
        """Between post-load steps: wait out a pause, or raise Paused to stop."""
        self._save_and_say_paused()
        if not self.control.wait_while_paused():
            raise Paused

    def _check_counts(self) -> dict[str, dict[str, int]]:
        assert self.state is not None
        if self.settings.follow:  # the source changes under the snapshot: the stream applies it
            self.emit(events.Notice("info", "documents written during the snapshot are "
                                    "applied from the change stream next"))
            return {}
        return snapshot.check_counts(self.source, self.state, self.emit)

    # -- checkpoint file and pause -----------------------------------------------

    def _paused_event(self) -> events.MigrationPaused:
        assert self.state is not None
        tables = list(self.state.tables.values())
        done = sum(1 for t in tables if t.status == "done")
        expected = sum(t.expected for t in tables if t.collection) or 1
        consumed = sum(t.consumed for t in tables if t.collection)
        return events.MigrationPaused(min(100.0, 100.0 * consumed / expected), done, len(tables),
                                      self.state.total_records, str(self.files.checkpoint_path))

    def _stopped(self) -> Outcome:
        """The run stops paused (Ctrl+C, q, a lost source): checkpoint saved, said."""
        self.files.mirror(self.state)
        self.emit(self._paused_event())
        return Outcome.PAUSED

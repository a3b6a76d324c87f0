"""The cockpit: one terminal that replaces the runbook's five monitoring
terminals and its paper checklists.

The engine runs in a thread worker and reports through EngineReported
messages; monitors run in their own workers; no widget is touched from a
thread."""

from __future__ import annotations

import datetime as dt
import io
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Container
from textual.widget import Widget
from textual.widgets import Footer, Header, Static
from textual.worker import Worker, WorkerState

from cockpit.alerts import Limits, WarningSigns
from cockpit.messages import (
    ConnectionsChecked,
    CutoverEnded,
    EngineReported,
    MigrationEnded,
    ReportEnded,
    ValidationEnded,
)
from cockpit.metrics_sheet import MetricsSheet
from cockpit.panes.checkpoint import CheckpointPane
from cockpit.panes.errors import ErrorsPane
from cockpit.panes.postgres import PostgresPane
from cockpit.panes.progress import ProgressPane
from cockpit.panes.runbook import RunbookPane
from cockpit.panes.system import SystemPane
from cockpit.progress_model import ProgressModel
from cockpit.screens import ConfirmQuitScreen, HelpScreen, RecordScreen, ReportScreen
from engine.console import print_cutover, print_validation
from engine.core import events
from engine.core.control import MigrationControl
from engine.core.mapping import nextcrm_with_rules
from engine.core.redact import redact_text, redact_url
from engine.core.run_files import CHECKPOINT_FILE, JSONL_FILE
from engine.cutover.run import Cutover, CutoverSettings
from engine.migrate.follow import Follower
from engine.migrate.retry import RetryFilters, RetryQuarantined
from engine.migrate.run import Migration, MigrationError, MigrationSettings, Outcome
from engine.runbook.checks import CheckResult, RunContext, run_check
from engine.runbook.model import RunbookState, load_runbook
from engine.source.base import DEFAULT_TIMEOUT_S, Source
from engine.source.mongo import MongoSource
from engine.validate.run import ValidationSettings, Validator

RECORDED = 2_000  # messages kept in CockpitApp.recorded
WRITES_STOPPED_ITEM = "production.2.1"  # runbook.yaml: "Application writes ... stopped"
PANES = ["progress", "postgres", "checkpoint", "errors", "system", "runbook"]
COMPACT_WIDTH, COMPACT_HEIGHT = 120, 34


@dataclass
class CockpitConfig:
    postgres_url: str | None
    mongo_url: str | None = None
    dump: str | None = None
    database: str | None = None
    run_dir: Path = field(default_factory=Path.cwd)
    runbook_path: Path = Path("runbook.yaml")
    autostart: bool = False
    batch_size: int | None = None
    workers: int | None = None
    postgres_interval: float = 2.0
    system_interval: float = 1.0
    alert_interval: float = 5.0
    metrics_interval: float = 60.0
    limits: Limits = field(default_factory=Limits)
    rules_path: Path | None = None  # the operator's rules file; None: the packaged rules
    source_timeout: float = DEFAULT_TIMEOUT_S
    backup_dir: Path | None = None  # where the artifacts action saves (default: run_dir/backups)
    follow: bool = False  # after the snapshot, follow the source's changes (live MongoDB)

    @property
    def context(self) -> RunContext:
        return RunContext(self.postgres_url, self.mongo_url, self.dump, self.database,
                          self.run_dir, self.source_timeout, self.backup_dir)


class CockpitApp(App[int]):
    CSS_PATH = "cockpit.tcss"
    TITLE = "Migration Cockpit"
    SUB_TITLE = "NextCRM MongoDB → PostgreSQL"
    BINDINGS = [
        Binding("s", "start", "Start"),
        Binding("p", "pause", "Pause/Resume"),
        Binding("v", "validate", "Validate"),
        Binding("f", "fullscreen", "Full screen"),
        Binding("question_mark", "help", "Help"),
        Binding("q", "request_quit", "Quit"),
        Binding("ctrl+c", "request_quit", "Quit", priority=True, show=False),
        *[Binding(str(n), f"show_pane({n - 1})", PANES[n - 1], show=False)
          for n in range(1, 7)],
        Binding("tab", "cycle_pane(1)", "Next pane", show=False),
        Binding("shift+tab", "cycle_pane(-1)", "Previous pane", show=False),
    ]
    HELP = [("s", "start the migration (or resume it)"),
            ("p", "pause / resume (the batch in flight finishes; checkpoint saved)"),
            ("v", "validate (four layers, every row)"),
            ("1-6, Tab", "go to a pane: 1 Progress 2 PostgreSQL 3 Checkpoint 4 Errors "
             "5 System 6 Runbook"),
            ("f", "full screen for the current pane (again to return)"),
            ("/", "Errors pane: search; Enter opens a record"),
            ("r, R", "Errors pane: retry the selected record / all of them (after fixing "
             "them in the source); documents waiting for them follow"),
            ("Space", "Runbook pane: tick a manual item"),
            ("Enter", "Runbook pane: run an automatic check or action"),
            ("n, b, e", "Runbook pane: note an item; record a step's start / end"),
            ("d", "Runbook pane: a step's objective, commands to copy, expected results, "
             "rollback"),
            ("?", "this help"),
            ("q, Ctrl+C", "quit: asks first, then pauses safely and saves the checkpoint")]

    def __init__(self, config: CockpitConfig) -> None:
        super().__init__()
        self.config = config
        self.mapping = nextcrm_with_rules(config.rules_path)
        self.control = MigrationControl()
        self.model = ProgressModel()
        self.metrics = MetricsSheet(config.run_dir)
        self.signs = WarningSigns(config.limits, config.run_dir / "migration-alerts.log")
        self.runbook = load_runbook(config.runbook_path)
        self.runbook_state = RunbookState.load(config.run_dir)
        self.engine_running = False
        self.quit_after_stop = False
        self.cutover_after_stop: dt.datetime | None = None  # a cutover waiting for the follower
        self.active = 0
        self.dirty = False
        self.last_metrics = time.monotonic()
        # The latest messages handled, for tests and replay; bounded, and
        # without the quarantined documents (the errors pane keeps those).
        self.recorded: deque[object] = deque(maxlen=RECORDED)
        # Kept, not queried: a modal screen on top must not hide them from updates.
        self.progress_pane = ProgressPane(id="progress")
        self.postgres_pane = PostgresPane(config.postgres_url, config.postgres_interval,
                                          id="postgres")
        self.checkpoint_pane = CheckpointPane(config.run_dir / CHECKPOINT_FILE, config.limits,
                                              lambda: self.engine_running, id="checkpoint")
        self.system_pane = SystemPane(config.run_dir, config.system_interval, config.limits,
                                      id="system")
        self.runbook_pane = RunbookPane(self.runbook, self.runbook_state, config.context,
                                        id="runbook")
        self.errors_pane = ErrorsPane(id="errors")
        self.panes: list[Widget] = [self.progress_pane, self.postgres_pane,
                                    self.checkpoint_pane, self.errors_pane, self.system_pane,
                                    self.runbook_pane]
        self.connections = Static(self._connection_line("checking…", "checking…"),
                                  id="connections")
        self.panebar = Static("", id="panebar")

    def compose(self) -> ComposeResult:
        yield Header()
        yield self.connections
        yield self.panebar
        with Container(id="grid"):
            # Grid order (see cockpit.tcss): progress spans two rows, errors
            # sits below it; system and runbook span two rows on the right.
            yield self.progress_pane
            yield self.postgres_pane
            yield self.checkpoint_pane
            yield self.system_pane
            yield self.runbook_pane
            yield self.errors_pane
        yield Footer()

    def _connection_line(self, pg: str, mongo: str) -> str:
        source = self.config.dump and f"dump {self.config.dump}" or redact_url(
            self.config.mongo_url or "(no source: --mongo or --dump)")
        target = redact_url(self.config.postgres_url or "(no target: --postgres)")
        return f"Source {source}: {mongo}   Target {target}: {pg}"

    def on_mount(self) -> None:
        self.set_interval(self.config.alert_interval, self.evaluate_alerts)
        self.set_interval(0.25, self.repaint)
        self.check_connections()
        self.action_show_pane(0)
        self._layout_for(self.size.width, self.size.height)
        if self.runbook_state.warning:
            self.notify(self.runbook_state.warning, title="Runbook state recovered",
                        severity="warning", timeout=30)
        self.errors_pane.load(self.config.run_dir / JSONL_FILE)
        if self.config.autostart:
            self.action_start()

    # -- workers (threads): they only post messages ---------------------------------

    @work(thread=True, exclusive=True, group="connect", exit_on_error=False)
    def check_connections(self) -> None:
        ctx = self.config.context
        pg = run_check("postgres_reachable", ctx) if ctx.postgres_url else CheckResult(
            False, "not set")
        mongo = run_check("mongo_reachable", ctx)
        self.post_message(ConnectionsChecked(self._connection_line(
            f"{'✓' if pg.ok else '✗'} {pg.detail}", f"{'✓' if mongo.ok else '✗'} {mongo.detail}")))

    @work(thread=True, exclusive=True, group="engine", exit_on_error=False)
    def run_migration(self) -> None:
        settings = MigrationSettings(self.config.postgres_url or "", self.config.run_dir,
                                     self.config.batch_size, self.config.workers,
                                     follow=self.config.follow)
        source = self.config.context.source()
        try:
            outcome = Migration(source, settings, [self._engine_sink], self.control,
                                self.mapping).run()
            if self.config.follow and isinstance(source, MongoSource) and outcome in (
                    Outcome.FINISHED, Outcome.FINISHED_WITH_QUARANTINE, Outcome.FINISHED_SHORT):
                Follower(source, settings, None, [self._engine_sink], self.control,
                         self.mapping).run()
        finally:
            source.close()
        self.post_message(MigrationEnded(outcome.value))

    @work(thread=True, exclusive=True, group="engine", exit_on_error=False)
    def run_retry(self, ids: tuple[str, ...]) -> None:
        source = self.config.context.source()
        try:
            RetryQuarantined(source, MigrationSettings(self.config.postgres_url or "",
                                                       self.config.run_dir),
                             RetryFilters(ids=ids), [self._engine_sink], self.control,
                             self.mapping).run()
        except MigrationError as exc:
            self.post_message(EngineReported(events.Notice("error", f"{exc} {exc.hint}")))
        finally:
            source.close()
            self.post_message(MigrationEnded("retried"))

    def _engine_sink(self, event: events.Event) -> None:
        self.post_message(EngineReported(event))  # thread-safe

    @work(thread=True, exclusive=True, group="validate", exit_on_error=False)
    def run_validation(self) -> None:
        self._report_of(lambda source: Validator(source, ValidationSettings(
            self.config.postgres_url or "", self.config.run_dir,
            workers=self.config.workers), [self._engine_sink], self.mapping).run(),
            ValidationEnded)

    def _report_of(self, stage: Callable[[Source], dict], ended: type[ReportEnded]) -> None:
        """In a worker: a stage that ends in a report, on a source of its own;
        its report, or its error, is posted for the lead."""
        source = self.config.context.source()
        try:
            report = stage(source)
        except Exception as exc:  # shown to the lead, not swallowed
            self.post_message(ended(None, redact_text(str(exc))))
            return
        finally:
            source.close()
        self.post_message(ended(report))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one place worker failures surface: shown, logged, never silent."""
        if event.state is WorkerState.ERROR:
            error = redact_text(str(event.worker.error))
            self.log.error(f"worker {event.worker.group} failed: {error}")
            self.notify(f"{event.worker.group}: {error}", title="Error", severity="error",
                        timeout=10)
            if event.worker.group == "engine":
                self.engine_running = False
                self.model.state = "failed"
                self.model.message = error

    # -- messages from workers ---------------------------------------------------------

    def on_engine_reported(self, message: EngineReported) -> None:
        event = message.event
        if not isinstance(event, events.DocumentQuarantined):
            self.recorded.append(event)
        self.model.apply(event)
        self.dirty = True
        match event:
            case events.DocumentQuarantined():
                self.errors_pane.add(event)
            case events.TableFinished():
                t = self.model.tables[event.table]
                speed = (event.rows + event.quarantined) / event.seconds if event.seconds else 0
                self._metrics_row(event.table, t.done_documents, t.expected, speed,
                                  event.quarantined, "✓ Complete")
            case events.MigrationPaused():
                self.notify(self.model.message + ". Press p to resume.", title="Paused")
            case events.MigrationFinished():
                self.notify(self.model.message, title="Migration finished",
                            severity="warning" if event.quarantined else "information")
            case events.MigrationFailed():
                self.notify(f"{event.message}\n{event.hint}", title="Migration failed",
                            severity="error", timeout=15)
            case events.Notice() if event.level != "info":
                self.notify(event.text, severity="warning")
            case events.PlanReady() if not event.resumed:
                self.errors_pane.reset([])  # a new run: the files start empty too
            case events.QuarantineLeft():
                self.errors_pane.left(event.table, event.object_id)
            case events.RetryProgress():
                self.errors_pane.say_retrying(
                    f"Retrying: {event.done:,}/{event.total:,}, {event.migrated:,} migrated, "
                    f"{event.still_quarantined:,} still quarantined")
            case events.RetryFinished():
                self.errors_pane.load(self.config.run_dir / JSONL_FILE)
                s = event.summary
                self.notify(f"{s['migrated']:,} of {s['retried']:,} migrated; "
                            f"{s['quarantineNow']:,} still quarantined", title="Retry "
                            + ("paused" if event.paused else "finished"))

    def start_cutover(self) -> None:
        """Runbook production.2: writes stopped when the lead ticked it; the
        follower (if running) stops, then the cutover runs in the engine's worker."""
        entry = self.runbook_state.items.get(WRITES_STOPPED_ITEM, {})
        if not entry.get("ticked") or not entry.get("at"):
            self.notify("Tick 'Application writes to MongoDB stopped' first, when they have.",
                        severity="warning")
            return
        stopped = dt.datetime.fromisoformat(entry["at"])
        if self.engine_running:
            self.cutover_after_stop = stopped
            self.control.stop()
            self.notify("Stopping the follower; the cutover begins when it has.")
            return
        self.engine_running = True
        self.control = MigrationControl()
        self.notify("Cutover: catching up, then validating every row…")
        self.run_cutover(stopped)

    @work(thread=True, exclusive=True, group="engine", exit_on_error=False)
    def run_cutover(self, stopped: dt.datetime) -> None:
        def cutover(source: Source) -> dict:
            if not isinstance(source, MongoSource):
                raise MigrationError("the cutover follows a live MongoDB (--mongo)")
            return Cutover(source, CutoverSettings(
                self.config.postgres_url or "", self.config.run_dir, stopped),
                [self._engine_sink], self.control, self.mapping).run()

        self._report_of(cutover, CutoverEnded)

    def on_cutover_ended(self, message: CutoverEnded) -> None:
        self.recorded.append(message)
        self.engine_running = False
        self.model.follow_stopped()
        self.dirty = True
        self.runbook_pane.recheck_step("production.2")
        if message.report is None:
            self.notify(message.error or "cutover failed", title="Cutover", severity="error")
            return
        self.model.cut_over(message.report)
        out = io.StringIO()
        print_cutover(message.report, out)
        self.push_screen(ReportScreen("Cutover", out.getvalue()))

    def on_migration_ended(self, message: MigrationEnded) -> None:
        self.recorded.append(message)
        self.engine_running = False
        self.model.follow_stopped()
        self.dirty = True
        if self.cutover_after_stop is not None:
            stopped, self.cutover_after_stop = self.cutover_after_stop, None
            self.engine_running = True
            self.control = MigrationControl()
            self.run_cutover(stopped)
            return
        if self.quit_after_stop:
            self.exit(0)

    def on_validation_ended(self, message: ValidationEnded) -> None:
        self.recorded.append(message)
        if message.report is None:
            self.notify(message.error or "validation failed", title="Validation error",
                        severity="error")
            return
        out = io.StringIO()
        print_validation(message.report, out)
        passed = message.report["status"] == "PASS"
        self.notify("VALIDATION PASSED" if passed else "VALIDATION FAILED",
                    severity="information" if passed else "error")
        self.push_screen(ReportScreen("Validation report", out.getvalue()))

    def on_connections_checked(self, message: ConnectionsChecked) -> None:
        self.connections.update(message.text)

    @on(ErrorsPane.RecordOpened)
    def open_record(self, message: ErrorsPane.RecordOpened) -> None:
        self.recorded.append(message)
        self.push_screen(RecordScreen(message.record))

    @on(ErrorsPane.RetryWanted)
    def retry(self, message: ErrorsPane.RetryWanted) -> None:
        if self.engine_running:
            self.notify("Retry once the migration has finished.", severity="warning")
            return
        if not self.config.postgres_url or not (self.config.mongo_url or self.config.dump):
            self.notify("Give --postgres and --mongo or --dump to retry.", severity="error")
            return
        self.control = MigrationControl()
        self.engine_running = True
        self.notify(f"Retrying {len(message.ids) or 'every'} quarantined document"
                    f"{'' if len(message.ids) == 1 else 's'} from the source as it is now…")
        self.run_retry(message.ids)

    @on(RunbookPane.ActionWanted)
    def runbook_action(self, message: RunbookPane.ActionWanted) -> None:
        if message.item.action == "cutover":
            self.start_cutover()
        elif message.item.action == "migrate":
            self.action_start()
            self.runbook_pane.record(message.item.id, True, "migration started from the cockpit")
        else:
            self.action_validate()

    # -- timers --------------------------------------------------------------------

    def repaint(self) -> None:
        if self.dirty:
            self.dirty = False
            self.progress_pane.show(self.model)
        now = time.monotonic()
        if self.engine_running and now - self.last_metrics >= self.config.metrics_interval:
            self.last_metrics = now
            for t in self.model.tables.values():
                if t.status == "running":
                    self._metrics_row(t.table, t.done_documents, t.expected, t.rate,
                                      t.quarantined, "In progress")

    def _metrics_row(self, table: str, done: int, expected: int, speed: float, errors: int,
                     notes: str) -> None:
        system = self.system_pane.last
        rss = system.memory_used if system else None
        row = self.metrics.add(table, done, expected, speed, errors, rss, notes)
        self.progress_pane.add_metrics(row)

    def evaluate_alerts(self) -> None:
        system = self.system_pane.last
        memory = system.memory_percent if system else None
        running = self.engine_running and self.model.state == "running"
        now = time.monotonic()
        f = self.model.following
        for alert in self.signs.evaluate(
                now=now, running=running, last_progress=self.model.last_progress,
                documents=self.model.documents, quarantined=self.model.quarantined,
                memory_percent=memory, checkpoint_age=self.checkpoint_pane.age,
                postgres_error=self.postgres_pane.error,
                lag=f.lag_seconds if f else None,
                lag_before=self.model.lag_at(now - self.signs.limits.lag_growing_seconds),
                history_seconds=f.history_seconds if f else None):
            self.recorded.append(alert)
            self.errors_pane.add_alert(alert)
            self.notify(alert.text, title="Warning sign", severity="warning", timeout=10)

    # -- actions -------------------------------------------------------------------

    def action_start(self) -> None:
        if self.engine_running:
            self.notify("The migration is already running.")
            return
        if not self.config.postgres_url or not (self.config.mongo_url or self.config.dump):
            self.notify("Give --postgres and --mongo or --dump to migrate.", severity="error")
            return
        self.control = MigrationControl()
        self.model = ProgressModel()
        self.engine_running = True
        self.last_metrics = time.monotonic()
        self.signs.active.clear()
        self.notify("Migration started.")
        self.run_migration()

    def action_pause(self) -> None:
        if not self.engine_running:
            self.notify("No migration is running (s starts one).")
        elif self.control.paused:
            self.control.resume()
            self.model.state = "running"
            self.model.message = ""
            self.model.last_progress = time.monotonic()
            self.dirty = True
            self.notify("Resumed.")
        else:
            self.control.pause()
            self.notify("Pausing after the batch in flight…")

    def action_validate(self) -> None:
        if self.engine_running:
            self.notify("Validate once the migration has finished or is paused and quit.",
                        severity="warning")
            return
        self.notify("Validating every row…")
        self.run_validation()

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.HELP))

    def action_request_quit(self) -> None:
        def decided(yes: bool | None) -> None:
            if not yes:
                return
            if self.engine_running:
                self.quit_after_stop = True
                self.control.stop()
                self.notify("Pausing safely and saving the checkpoint…")
            else:
                self.exit(0)

        self.push_screen(ConfirmQuitScreen(self.engine_running), decided)

    def _pane(self, index: int) -> Widget:
        return self.panes[index]

    def action_show_pane(self, index: int) -> None:
        self.active = index
        for i, pane in enumerate(self.panes):
            pane.set_class(i != index, "inactive")
        self._pane(index).focus()
        self.panebar.update("  ".join(
            f"[reverse] {i + 1} {n} [/]" if i == index else f" {i + 1} {n} "
            for i, n in enumerate(PANES)))

    def action_cycle_pane(self, step: int) -> None:
        self.action_show_pane((self.active + step) % len(PANES))

    def action_fullscreen(self) -> None:
        if self.screen.maximized is not None:
            self.screen.minimize()
        else:
            self.screen.maximize(self._pane(self.active), container=False)

    def on_resize(self, event: object) -> None:
        size = getattr(event, "size", self.size)
        self._layout_for(size.width, size.height)

    def _layout_for(self, width: int, height: int) -> None:
        """Small terminals (80x24) show one pane at a time; number keys switch."""
        main = self.screen_stack[0]  # not a modal that happens to be on top
        main.set_class(width < COMPACT_WIDTH or height < COMPACT_HEIGHT, "compact")

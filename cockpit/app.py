"""The cockpit: one terminal that replaces the runbook's five monitoring
terminals and its paper checklists.

Long work runs in thread workers (cockpit.workers) that only post messages;
what they report is handled on the UI thread (cockpit.reactions); no widget
is touched from a thread. This module: the screen, the keys, the timers."""

from __future__ import annotations

import time
from collections import deque

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Container
from textual.widget import Widget
from textual.widgets import Footer, Static

from cockpit.alerts import WarningSigns
from cockpit.config import CockpitConfig
from cockpit.exit_summary import exit_summary, next_step
from cockpit.metrics_sheet import MetricsSheet
from cockpit.panes.checkpoint import CheckpointPane
from cockpit.panes.errors import ErrorsPane
from cockpit.panes.postgres import PostgresPane
from cockpit.panes.progress import ProgressPane
from cockpit.panes.runbook import RunbookBox, RunbookPane
from cockpit.panes.system import SystemPane
from cockpit.progress_model import ProgressModel
from cockpit.reactions import Reactions
from cockpit.refusals import Refusals
from cockpit.requests import Requests
from cockpit.rollback_actions import RollbackActions
from cockpit.screens import ConfirmQuitScreen, HelpScreen
from cockpit.status import Connections, StatusBar, connection_names
from cockpit.way_back import WayBackLine
from cockpit.workers import Workers
from engine.core.control import MigrationControl
from engine.core.mapping import nextcrm_with_rules
from engine.core.run_files import ALERTS_FILE, CHECKPOINT_FILE
from engine.postgres.rollback_state import CaptureStatus
from engine.runbook.model import RunbookState, load_runbook

__all__ = ["CockpitApp", "CockpitConfig"]

RECORDED = 2_000  # messages kept in CockpitApp.recorded
PANES = ["progress", "postgres", "checkpoint", "errors", "system", "runbook"]
COMPACT_WIDTH, COMPACT_HEIGHT = 120, 34
WIDE_WIDTH = 160  # narrower: the left column takes more, so no id or number is cut


class CockpitApp(Refusals, Requests, Reactions, RollbackActions, Workers, App[int]):
    CSS_PATH = "cockpit.tcss"
    TITLE = "Migration Cockpit"
    SUB_TITLE = "NextCRM MongoDB → PostgreSQL"
    BINDINGS = [
        # A key that cannot act now is not offered (check_action hides it); pressed
        # anyway, its second binding says why.
        Binding("s", "start", "Start"),
        Binding("s", "refuse('start')", "Start", show=False),
        Binding("p", "pause", "Pause"),
        Binding("p", "resume", "Resume"),
        Binding("p", "refuse('pause')", "Pause", show=False),
        Binding("v", "validate", "Validate"),
        Binding("v", "refuse('validate')", "Validate", show=False),
        Binding("u", "rollback", "Roll back"),  # after the cutover, until the deadline
        Binding("u", "refuse('rollback')", "Roll back", show=False),
        Binding("f", "fullscreen", "Full screen"),
        Binding("question_mark", "help", "Help"),
        Binding("q", "request_quit", "Quit"),
        Binding("ctrl+c", "request_quit", "Quit", priority=True, show=False),
        *[Binding(str(n), f"show_pane({n - 1})", PANES[n - 1], show=False)
          for n in range(1, 7)],
        # Priority: the screen's own Tab moves between widgets, not panes.
        Binding("tab", "cycle_pane(1)", "Next pane", show=False, priority=True),
        Binding("shift+tab", "cycle_pane(-1)", "Previous pane", show=False, priority=True),
    ]
    HELP = [("s", "start the migration (or resume it); not offered once it has finished"),
            ("p", "pause / resume (the batch in flight finishes; checkpoint saved)"),
            ("v", "validate (four layers, every row)"),
            ("u", "roll back to MongoDB, after the cutover while the capture is open (asks "
             "first)"),
            ("1-6, Tab", "go to a pane: 1 Progress 2 PostgreSQL 3 Checkpoint 4 Errors "
             "5 System 6 Runbook (Shift+Tab: back)"),
            ("f", "full screen for the current pane (again to return)"),
            ("/", "Errors pane: search; Enter opens a record"),
            ("r, R", "Errors pane: retry the selected record / all of them (after fixing "
             "them in the source); documents waiting for them follow"),
            ("Space", "Runbook pane: tick a manual item"),
            ("Enter", "Runbook pane: run an automatic check or an action"),
            ("n, b, e", "Runbook pane: note an item; record a step's start / end"),
            ("d", "Runbook pane: a step's objective, commands to copy, expected results, "
             "rollback"),
            ("?", "this help"),
            ("q, Ctrl+C", "quit: asks first, pauses safely, then prints where the run stands "
             "and the command to run next")]

    def __init__(self, config: CockpitConfig) -> None:
        super().__init__()
        self.config = config
        self.mapping = nextcrm_with_rules(config.rules_path)
        self.control = MigrationControl()
        self.cutover_control = MigrationControl()  # its own: the follower's stops apart
        self.rollback_control = MigrationControl()
        self.model = ProgressModel()
        self.metrics = MetricsSheet(config.run_dir)
        self.signs = WarningSigns(config.limits, config.run_dir / ALERTS_FILE)
        self.runbook = load_runbook(config.runbook_path)
        self.runbook_state = RunbookState.load(config.run_dir)
        self.engine_running = False
        self.cutover_running = False  # beside the engine's worker: it takes the follower over
        self.rollback_running = False
        self.capture: CaptureStatus | None = None  # the way back's, once a cutover is recorded
        self.target_known = not config.postgres_url  # no target: nothing to read first
        self.autostarted = False
        self.quit_after_stop = False
        self.validated: str | None = None  # this session's validation status
        self.runbook_waits: dict[str, str] = {}  # action (migrate, validate) -> runbook item
        self.exit_lines: list[str] = []  # printed by `cockpit` once the screen is gone
        self.active = 0
        self.offered: tuple[object, ...] = ()  # what the footer's keys were last fitted to
        self.dirty = True
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
                                        id="runbook-tree")
        self.runbook_box = RunbookBox(self.runbook_pane, id="runbook")
        self.errors_pane = ErrorsPane(id="errors")
        self.panes: list[Widget] = [self.progress_pane, self.postgres_pane,
                                    self.checkpoint_pane, self.errors_pane, self.system_pane,
                                    self.runbook_box]
        self.status = StatusBar(id="status")
        self.connections = Connections(*connection_names(config), id="connections")
        self.way_back = WayBackLine("", id="way-back")
        self.panebar = Static("", id="panebar")

    def compose(self) -> ComposeResult:
        yield self.status
        yield self.connections
        yield self.way_back
        yield self.panebar
        with Container(id="grid"):
            # Grid order (see cockpit.tcss): progress spans two rows, errors
            # sits below it; system and runbook span two rows on the right.
            yield self.progress_pane
            yield self.postgres_pane
            yield self.checkpoint_pane
            yield self.system_pane
            yield self.runbook_box
            yield self.errors_pane
        yield Footer()

    def on_mount(self) -> None:
        self.set_interval(self.config.alert_interval, self.evaluate_alerts)
        self.set_interval(0.25, self.repaint)
        self.check_connections()
        if self.config.postgres_url:  # the way back's figures, on pane 2's cadence
            self.set_interval(self.config.postgres_interval, self.read_capture)
            self.read_capture()
        self.action_show_pane(0)
        self._layout_for(self.size.width, self.size.height)
        if self.runbook_state.warning:
            self.notify(self.runbook_state.warning, title="Runbook state recovered",
                        severity="warning", timeout=30)
        if self.config.postgres_url:
            self.read_target()  # then on_target_read; autostart waits for it
        else:
            self.model.message = "No target: give --postgres (or set STAGING_POSTGRESQL_URL)."
            if self.config.autostart:
                self.action_start()
        self.repaint()

    # -- timers --------------------------------------------------------------------

    def repaint(self) -> None:
        self.status.show(self.model.pill, len(self.signs.active))
        offered = (self.model.pill, self.engine_running, self.control.paused, self.target_known,
                   self.capture is not None and self.capture.open, self.rollback_running)
        if offered != self.offered:
            self.offered = offered
            self.refresh_bindings()  # the footer offers what the new state allows
        if self.dirty or self.model.activity:
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
        if (why := self.refusal("start")) is not None:
            self.notify(why, severity="warning")
            return
        snapshot_done = self.model.finished  # with --follow: only following is left
        self.control = MigrationControl()
        if not snapshot_done:
            self.model = ProgressModel()
        self.model.begin()
        self.engine_running = True
        self.dirty = True
        self.last_metrics = time.monotonic()
        self.signs.active.clear()
        self.notify("Starting the migration…" if not snapshot_done else
                    "Following the source's changes again…")
        self.run_migration(snapshot_done)

    def action_pause(self) -> None:
        if self.control.paused:  # one key: p pauses, p again resumes
            self.action_resume()
        elif (why := self.refusal("pause")) is not None:
            self.notify(why)
        else:
            self.control.pause()
            self.notify("Pausing after the batch in flight…")

    def action_resume(self) -> None:
        if (why := self.refusal("resume")) is not None:
            self.notify(why)
            return
        self.control.resume()
        self.model.state = "following" if self.model.following else "running"
        self.model.message = ""
        self.model.last_progress = time.monotonic()
        self.dirty = True
        self.notify("Resumed.")

    def action_validate(self) -> None:
        if (why := self.refusal("validate")) is not None:
            self.notify(why, severity="warning")
            return
        self.model.begin_activity("validating")
        self.dirty = True
        self.notify("Validating every row…")
        self.run_validation()

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.HELP))

    async def action_quit(self) -> None:
        """The command palette's Quit, and any other: the same question, the same safe pause."""
        self.action_request_quit()

    def action_request_quit(self) -> None:
        if isinstance(self.screen, ConfirmQuitScreen):
            return

        def decided(yes: bool | None) -> None:
            if not yes:
                return
            if self.busy:
                self.quit_after_stop = True
                self.control.stop()
                self.cutover_control.stop()
                self.rollback_control.stop()
                self.notify("Pausing safely and saving the checkpoint…", timeout=30)
            else:
                self.leave()

        why, command = next_step(self.model, self.config, self.validated)
        self.push_screen(ConfirmQuitScreen(self.busy, f"{command}  ({why})"), decided)

    @property
    def busy(self) -> bool:
        """Work that pauses safely before the cockpit exits."""
        return self.engine_running or self.cutover_running or self.rollback_running

    def leave_if_asked(self) -> bool:
        """A quit waiting for the work to stop: answered once nothing runs,
        however the work ended (a worker that raised too)."""
        if self.quit_after_stop and not self.busy:
            self.leave()
            return True
        return False

    def leave(self) -> None:
        """Exit, leaving the summary `cockpit` prints once the screen is gone."""
        self.exit_lines = exit_summary(self.model, self.config, self.errors_pane.counts,
                                       self.validated)
        self.exit(0)

    def action_show_pane(self, index: int) -> None:
        """Show the pane and focus its main widget, so its keys work at once."""
        self.active = index
        for i, pane in enumerate(self.panes):
            pane.set_class(i != index, "inactive")
        pane = self.panes[index]
        target = getattr(pane, "main", pane)
        (target if target.focusable else pane).focus()
        self.panebar.update("  ".join(
            f"[reverse] {i + 1} {n} [/]" if i == index else f" {i + 1} {n} "
            for i, n in enumerate(PANES)))

    def action_cycle_pane(self, step: int) -> None:
        self.action_show_pane((self.active + step) % len(PANES))

    def action_fullscreen(self) -> None:
        if self.screen.maximized is not None:
            self.screen.minimize()
        else:
            self.screen.maximize(self.panes[self.active], container=False)

    def on_resize(self, event: object) -> None:
        size = getattr(event, "size", self.size)
        self._layout_for(size.width, size.height)

    def _layout_for(self, width: int, height: int) -> None:
        """Small terminals (80x24) show one pane at a time; number keys switch."""
        main = self.screen_stack[0]  # not a modal that happens to be on top
        compact = width < COMPACT_WIDTH or height < COMPACT_HEIGHT
        main.set_class(compact, "compact")
        main.set_class(not compact and width < WIDE_WIDTH, "narrow")

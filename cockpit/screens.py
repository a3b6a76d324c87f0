"""Modal screens: help, the quit and rollback confirmations, a quarantined
record, a report, the performance tests' table, a note."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Input, Label, Static

from cockpit.plain import plain_document, without_emoji
from engine.core import events
from engine.perftest.text import metrics_rows, performance_notes


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "Close")]

    def __init__(self, keys: list[tuple[str, str]]) -> None:
        super().__init__()
        self.keys = keys

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog"):
            yield Label("[b]Keys[/b]  (Esc closes)")
            yield Static("\n".join(f"  [b]{k:<14}[/b] {d}" for k, d in self.keys))


class _YesNo(ModalScreen[bool]):
    """A question answered by its buttons (#yes, #no) or y / n / Esc."""

    BINDINGS = [Binding("escape,n", "cancel", "No"), Binding("y", "confirm", "Yes")]

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_confirm(self) -> None:
        self.dismiss(True)

    def action_cancel(self) -> None:
        self.dismiss(False)


class ConfirmQuitScreen(_YesNo):
    """Every way out asks first; running work pauses safely before the exit."""

    def __init__(self, running: bool, then: str = "") -> None:
        super().__init__()
        self.running = running
        self.then = then  # what to run next, said again when the cockpit exits

    def compose(self) -> ComposeResult:
        text = ("Quit? The work in progress pauses safely first: the batch in flight "
                "commits or rolls back and the checkpoint is saved."
                if self.running else "Quit the cockpit?")
        with Vertical(id="dialog"):
            yield Static(text, id="question")
            if self.then:
                yield Static(f"Next: {self.then}", id="then", markup=False)
            with Horizontal(id="buttons"):
                yield Button("Yes, pause and quit (y)" if self.running else "Quit (y)",
                             variant="warning", id="yes")
                yield Button("Stay (n)", id="no")


class RecordScreen(ModalScreen[None]):
    """One quarantined document: why, and the original document."""

    BINDINGS = [Binding("escape,enter,q", "dismiss", "Close")]

    def __init__(self, record: events.DocumentQuarantined) -> None:
        super().__init__()
        self.record = record

    def compose(self) -> ComposeResult:
        r = self.record
        with VerticalScroll(id="dialog"):
            # Text, not markup: a table name or a message may hold [brackets].
            yield Static(Text.assemble((r.table, "bold"), f"   ObjectId {r.object_id}   "
                                       f"quarantined {r.at[:19].replace('T', ' ')} UTC"),
                         id="title")
            yield Static(Text.assemble((r.reason_code, "bold red"), f": {r.message}"),
                         id="reason")
            yield Static(Text("The document, as the source holds it (Esc closes):",
                              style="dim"))
            yield Static(plain_document(r.document), id="document", markup=False)


class ReportScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,enter,q", "dismiss", "Close")]

    def __init__(self, title: str, text: str) -> None:
        super().__init__()
        self.title_text = title
        self.text = text

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog"):
            yield Label(f"[b]{self.title_text}[/b]  (Esc closes)")
            yield Static(without_emoji(self.text), markup=False)


class PerformanceScreen(ModalScreen[None]):
    """cockpit perftest's result: the runbook's Performance Metrics Tracking table,
    then what was adapted and the indexes to add."""

    BINDINGS = [Binding("escape,enter,q", "dismiss", "Close")]

    def __init__(self, report: dict) -> None:
        super().__init__()
        self.report = report

    def compose(self) -> ComposeResult:
        passed = self.report["status"] == "PASS"
        with VerticalScroll(id="dialog", classes="wide"):
            yield Label(f"[b]Performance tests: "
                        f"{'every target met' if passed else 'targets missed'}[/b]  (Esc closes)")
            table: DataTable[str] = DataTable(id="performance", zebra_stripes=True,
                                              cursor_type="row")
            table.add_columns("Query Type", "Target", "Actual", "Status", "Notes")
            for row in metrics_rows(self.report):
                table.add_row(*row)
            yield table
            yield Static("\n".join(performance_notes(self.report)), markup=False, id="notes")


class NoteScreen(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, item_text: str, current: str) -> None:
        super().__init__()
        self.item_text = item_text
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(f"Note for: {self.item_text}")
            yield Input(value=self.current, id="note")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ConfirmRollbackScreen(_YesNo):
    """The way back asks first, saying what it will write where."""

    def __init__(self, changes: int, mongo: str) -> None:
        super().__init__()
        self.changes = changes
        self.mongo = mongo  # redacted

    def compose(self) -> ComposeResult:
        n = f"{self.changes:,} captured change{'' if self.changes == 1 else 's'}"
        with Vertical(id="dialog"):
            yield Static(Text.assemble(("Roll back to MongoDB?", "bold")), id="question")
            yield Static(f"This applies {n} to MongoDB {self.mongo}: the application's writes "
                         "to PostgreSQL since the cutover, in their order and in MongoDB's "
                         "shape (rows become documents, junction rows ids in arrays, deleted "
                         "rows deleted documents).", id="what", markup=False)
            yield Static("First stop the application's writes to PostgreSQL: the rollback "
                         "refuses while a session writes there. Then point the application "
                         "at MongoDB, and prove it: cockpit rollback --verify. q pauses the "
                         "rollback between batches; running it again goes on.",
                         id="then", markup=False)
            with Horizontal(id="buttons"):
                yield Button(f"Roll back {n} (y)", variant="error", id="yes")
                yield Button("Cancel (n)", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()  # Enter alone never writes to MongoDB


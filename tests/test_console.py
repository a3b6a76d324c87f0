"""The headless renderer: the runbook's console shapes, from engine events."""

import io

from engine.console import ConsoleRenderer
from engine.core import events


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_line_per_table_with_rate_and_eta() -> None:
    out = Terminal()
    render = ConsoleRenderer(out)
    render(events.TableStarted("Users", 1000, 0, 0))
    render(events.TableStarted("Tasks", 500, 0, 0))  # loading side by side
    render(events.BatchCommitted("Users", 400, 0, 1000, 400, 0, 400))
    line = out.getvalue().rsplit("\r", 1)[-1]
    assert "Users" in line and "40%" in line and "(400/1,000)" in line
    assert "rec/s" in line and "ETA:" in line


def test_summary_never_says_plain_success_with_quarantined_records() -> None:
    out = io.StringIO()
    render = ConsoleRenderer(out)
    render(events.MigrationFinished(total_records=1190, quarantined=10, seconds=2.0,
                                    documents=1000, report_path="migration-report.json",
                                    junction_rows=200))
    text = out.getvalue()
    assert "Migration completed with quarantined records" in text
    assert "Migration Complete!" not in text
    assert "Total records: 1,190 (990 from documents + 200 junction rows)" in text
    assert "Errors: 10 of 1,000 documents (1.00%) quarantined" in text
    assert "Speed: 500 documents/second" in text


def test_pause_message_tells_how_to_resume() -> None:
    out = io.StringIO()
    ConsoleRenderer(out)(events.MigrationPaused(45.0, 15, 39, 125_430,
                                                "migration-checkpoint.json"))
    text = out.getvalue()
    assert "⏸️  Migration paused" in text
    assert "45% complete (15/39 tables, 125,430 records migrated)" in text
    assert "To resume, run: cockpit migrate" in text

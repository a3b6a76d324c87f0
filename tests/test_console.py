"""The headless renderer: the runbook's console shapes, from engine events."""

import io
import re
from pathlib import Path

from engine.cli import main
from engine.console import ConsoleRenderer
from engine.core import events
from engine.migrate.run import Migration, MigrationSettings, Outcome
from engine.source.mongo import MongoSource
from nextcrm_lab.generate import Generator


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


def test_not_a_terminal_gets_plain_progress_lines_every_few_seconds() -> None:
    """Piped through tee (the runbook's way), a line every progress_every_s
    with table, records, rate and ETA: as a log would, never redrawn."""
    out = io.StringIO()  # not a TTY
    render = ConsoleRenderer(out, progress_every_s=0.0)
    render(events.TableStarted("Users", 1000, 0, 0))
    render(events.BatchCommitted("Users", 400, 0, 1000, 400, 0, 400))
    render(events.BatchCommitted("Users", 800, 0, 1000, 400, 0, 400))
    lines = out.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert "Users" in lines[0] and "40%" in lines[0] and "(400/1,000)" in lines[0]
    assert "rec/s" in lines[1] and "ETA:" in lines[1] and "(800/1,000)" in lines[1]
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()

    quiet = io.StringIO()
    render = ConsoleRenderer(quiet, progress_every_s=3600.0)  # not every batch: every interval
    render(events.TableStarted("Users", 1000, 0, 0))
    render(events.BatchCommitted("Users", 400, 0, 1000, 400, 0, 400))
    render(events.TableFinished("Users", 1000, 0, 1.0))
    assert quiet.getvalue().splitlines() == ["   ✓ Users (1,000 records) - 1.0s (1,000 rec/s)"]


def test_a_real_migration_piped_shows_progress_before_each_large_table_ends(
        pg_url: str, mongo_db: tuple[str, str], run_dir: Path) -> None:
    url, db = mongo_db
    Generator(scale=0.01, seed=9, dirt_rate=0.0).write_mongo(url, db)
    assert main(["schema", "deploy", "--postgres", pg_url]) == 0
    out = io.StringIO()
    outcome = Migration(MongoSource(url, db), MigrationSettings(pg_url, run_dir, batch_size=50,
                                                                workers=1),
                        [ConsoleRenderer(out, progress_every_s=0.0)]).run()
    assert outcome is Outcome.FINISHED
    lines = out.getvalue().splitlines()
    progress = [n for n, line in enumerate(lines)
                if re.match(r"   🔄 \w+ +\d+% \([\d,]+/[\d,]+\) \| [\d,]+ rec/s \| ETA: ", line)]
    assert progress, out.getvalue()
    table = lines[progress[0]].split()[1]
    finished = next(n for n, line in enumerate(lines) if line.startswith(f"   ✓ {table} ("))
    assert progress[0] < finished

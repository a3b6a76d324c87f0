"""The runbook's checks of the way back (production group): the capture of
the application's writes until the rollback deadline, and the rehearsal's
proof (cockpit rollback --verify). Registered in engine.runbook.checks'
CHECKS."""

from __future__ import annotations

from engine.core.mapping import nextcrm
from engine.postgres import change_log, rollback_state
from engine.runbook.context import CheckResult, RunContext, pg

NO_CAPTURE = ("no capture of the application's writes on this target: it starts when the "
              "cutover is recorded (cockpit cutover)")


def rollback_capture(ctx: RunContext) -> CheckResult:
    """Until the rollback deadline, every write of the application is captured
    (triggers present, enabled, recording rows); after it, closed and recorded."""
    with pg(ctx) as conn:
        status = rollback_state.capture_status(conn)
        if status is None:
            return CheckResult(False, NO_CAPTURE)
        if status.closed_at is not None:
            return CheckResult(True, f"closed {status.closed_at:%Y-%m-%d %H:%M:%S} by "
                               f"{status.closed_by} after {status.captured:,} change(s): the "
                               "rollback deadline has passed")
        broken = [s.table for s in change_log.trigger_states(conn, nextcrm())
                  if not (s.sound and s.rows)]
    if broken:
        return CheckResult(False, f"the capture is off on {len(broken)} table(s) "
                           f"({', '.join(broken[:3])}): writes there would be lost by a "
                           "rollback. Re-enable its triggers (ALTER TABLE ... ENABLE TRIGGER "
                           f"{change_log.ROW_TRIGGER}), or roll back now")
    return CheckResult(True, f"capturing since {status.started_at:%Y-%m-%d %H:%M:%S}: "
                       f"{status.captured:,} change(s); at the rollback deadline: "
                       "cockpit rollback --close")


def rollback_rehearsed(ctx: RunContext) -> CheckResult:
    """The last proof: a fresh migration of the rolled-back MongoDB equals the target."""
    with pg(ctx) as conn:
        state = rollback_state.load(conn)
    if state is None:
        return CheckResult(False, NO_CAPTURE)
    v = state.verify
    if not v:
        return CheckResult(False, "no rollback proven yet: after application-like writes, "
                           "cockpit rollback, then cockpit rollback --verify")
    if v["status"] != "PASS":
        tables = ", ".join(sorted(v["differences"])[:3])
        return CheckResult(False, f"the proof of {v['at'][:19]} FAILED: {tables} differ; "
                           "see cockpit rollback --verify")
    return CheckResult(True, f"proven {v['at'][:19]}: {v['tables']} tables, {v['rows']:,} rows "
                       "equal after the round trip")

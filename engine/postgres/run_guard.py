"""Every stage that writes a target's tables is that target's run's, or it
refuses: one check, asked first by each of them (migrate, --follow,
--retry-quarantined, cutover), against what the target recorded of its run.

- the source is the run's source, and the rules are the rules it began with
  (every row follows one source and one set of rules);
- following and the cutover need the snapshot and its post-load complete,
  and a snapshot taken with --follow (the changes since it began are known);
- once a cutover is recorded the application owns PostgreSQL: no stage
  writes its tables again (WRITES_AFTER_CUTOVER names the exceptions).
"""

from __future__ import annotations

import enum
from typing import NamedTuple

import psycopg

from engine.postgres.checkpoint import RunState, load_state
from engine.postgres.follow_state import FollowState, load_follow

NEW_TARGET_HINT = ("Use a new, empty target database for a new run (cockpit schema deploy "
                   "--postgres URL), never this one: it is the application's now.")


class Stage(enum.Enum):
    MIGRATE = "cockpit migrate"
    FOLLOW = "cockpit migrate --follow"
    RETRY = "cockpit migrate --retry-quarantined"
    CUTOVER = "cockpit cutover"
    ROLLBACK = "cockpit rollback"


# After a recorded cutover, only these may write the application's tables.
# The way back: the rollback writes the captured changes to MongoDB and its
# own record in cockpit_migration (engine/rollback/).
WRITES_AFTER_CUTOVER: frozenset[Stage] = frozenset({Stage.ROLLBACK})


class Refusal(NamedTuple):
    """Why a stage may not run on this target, and what to do: the stage
    raises it as its own error (MigrationError(*refusal))."""

    message: str
    hint: str


def refusal(conn: psycopg.Connection, stage: Stage, source: str,
            rules_digest: str) -> Refusal | None:
    """None when `stage`, reading `source` (its redacted description) with
    the rules of sha256 `rules_digest`, may write this target; else why not.
    A target with no run yet refuses every stage but the migration."""
    state = load_state(conn)
    if state is None:
        if stage is Stage.MIGRATE:
            return None
        return Refusal("this target holds no migration",
                       "Run cockpit migrate (with --follow to follow the source after) first.")
    follow = load_follow(conn)
    return (_cut_over(stage, follow) or _other_source(state, source)
            or _other_rules(state, rules_digest) or _unfinished(stage, state, follow))


def cutover_time(follow: FollowState | None) -> str | None:
    """When this target's cutover was recorded (validated), if it was."""
    if follow is None or not follow.cutover:
        return None
    at = str(follow.cutover.get("validatedAt") or follow.cutover.get("writesStoppedAt")
             or "an unknown time")
    return at[:19].replace("T", " ")


def _cut_over(stage: Stage, follow: FollowState | None) -> Refusal | None:
    at = cutover_time(follow)
    if at is None or stage in WRITES_AFTER_CUTOVER:
        return None
    return Refusal(
        f"this target was cut over at {at}: the application owns "
        f"PostgreSQL since then, and {stage.value} would overwrite what it wrote; refused",
        "Nothing is left to migrate into it. " + NEW_TARGET_HINT)


def _other_source(state: RunState, source: str) -> Refusal | None:
    if state.source == source:
        return None
    return Refusal(f"the run on this target is for source {state.source}, not {source}",
                   "Give the run's own source (the same --mongo/--dump and --db), or start "
                   "over with cockpit schema deploy --force.")


def _other_rules(state: RunState, rules_digest: str) -> Refusal | None:
    if not state.rules_digest or state.rules_digest == rules_digest:
        return None
    return Refusal(f"the run on this target began with other rules (sha256 "
                   f"{state.rules_digest[:12]}, these are {rules_digest[:12]})",
                   "Give the rules file it began with (--rules), so every row follows one "
                   "set of rules, or start over with cockpit schema deploy --force.")


def _unfinished(stage: Stage, state: RunState, follow: FollowState | None) -> Refusal | None:
    if stage is Stage.MIGRATE:
        return None
    if state.finished_at is None:
        pending = [t.table for t in state.tables.values() if t.status != "done"]
        where = (f"{len(pending)} table(s) not loaded yet ({', '.join(pending[:3])})" if pending
                 else "its post-load steps (integrity, indexes, foreign keys) not done yet")
        finish = "cockpit migrate --follow" if follow is not None else "cockpit migrate"
        return Refusal(f"the snapshot on this target is not complete: {where}; "
                       f"{stage.value} would write to a half-loaded target",
                       f"Finish it first: {finish} (it resumes from the checkpoint).")
    if stage in (Stage.FOLLOW, Stage.CUTOVER) and follow is None:
        return Refusal("this target's snapshot was taken without --follow: the changes since "
                       "it began are unknown",
                       "Start over to follow: cockpit schema deploy --force, then cockpit "
                       "migrate --follow.")
    return None

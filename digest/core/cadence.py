"""When things happen, as pure date maths: a schedule's fire times, the week a fire is for, and
each reader zone's local send time under local-time delivery.

No database and no clock: `now` always comes in, so every answer can be checked by hand.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger

from digest.config import Settings
from digest.model.schedule import parse_schedule
from digest.model.weeks import IsoWeek, current_week

__all__ = [
    "TICK_MINUTES",
    "LocalSend",
    "ZoneSlot",
    "due_fire_time",
    "due_week",
    "job_trigger",
    "local_send_time",
    "next_fire_time",
    "plan_local_sends",
    "scheduled_week",
    "week_fire",
    "zone_name",
    "zone_slots",
]

# Every zone's offset from UTC is a whole number of quarter hours (India +5:30, Nepal +5:45), so a
# tick every 15 minutes on the schedule's own minute lands exactly on each zone's send time.
TICK_MINUTES = 15


def next_fire_time(trigger: CronTrigger, now: datetime) -> datetime | None:
    """The first fire time at or after `now` (aware, in the trigger's zone)."""
    fire: datetime | None = trigger.get_next_fire_time(None, now)
    return fire


def due_fire_time(trigger: CronTrigger, now: datetime, window: timedelta) -> datetime | None:
    """The latest fire time in `[now - window, now]`, or None.

    APScheduler does not tell a job which fire time it runs for; with coalescing it is the
    latest one that came due, and the executor only runs it within the grace window, so this
    recovers it from the trigger. A minute of slack covers the delay between due and running.
    """
    fire = trigger.get_next_fire_time(None, now - window - timedelta(minutes=1))
    latest = None
    while fire is not None and fire <= now:
        latest = fire
        fire = trigger.get_next_fire_time(fire, fire)
    return latest


def due_week(settings: Settings, now: datetime) -> IsoWeek | None:
    """The week of the schedule's fire that is due at `now` (within `misfire_grace_time`), or
    None when no fire is: what a job, or a restart resuming one, may still send."""
    trigger = parse_schedule(settings.schedule, settings.zone)
    fired = due_fire_time(trigger, now, timedelta(seconds=settings.misfire_grace_time))
    return current_week(fired, settings.zone) if fired is not None else None


def scheduled_week(settings: Settings, now: datetime) -> IsoWeek:
    """The week the job running at `now` is for: that of its fire time in the configured zone.

    A machine that was down at Monday 09:00 and runs the job at 11:00 sends Monday's issue;
    a job run by hand outside any window (`digest run --now` on a Wednesday) sends this week's.
    """
    return due_week(settings, now) or current_week(now, settings.zone)


# --------------------------------------------------------------------------- local-time delivery


@dataclass(frozen=True, slots=True)
class ZoneSlot:
    """When the readers with one stored time zone get a week's issue (local-time delivery)."""

    zone: str | None  # subscribers.timezone as stored; None: not set, DIGEST_TIMEZONE applies
    tz_name: str  # the IANA zone the time is read in (DIGEST_TIMEZONE for unknown names)
    send_at: datetime  # aware, in that zone


@dataclass(frozen=True, slots=True)
class LocalSend:
    """One week's local-time send seen at one moment: its zones, earliest first, and the due ones."""

    week: IsoWeek
    slots: tuple[ZoneSlot, ...]
    due: frozenset[str | None]  # stored zone values whose send time has come

    @property
    def final(self) -> bool:
        """Every zone's time has come: this send may finish the issue."""
        return len(self.due) == len(self.slots)


def job_trigger(settings: Settings) -> CronTrigger:
    """The stored job's trigger: the schedule, or with local-time delivery a 15-minute tick.

    The tick runs on the schedule's minute modulo 15 (09:10 → :10, :25, :40, :55 UTC), so no
    zone waits for its time to be noticed.
    """
    trigger = parse_schedule(settings.schedule, settings.zone)
    if not settings.local_time_delivery:
        return trigger
    sample = trigger.get_next_fire_time(None, datetime(2000, 1, 3, tzinfo=UTC))
    offset = sample.minute % TICK_MINUTES if sample is not None else 0
    return CronTrigger(minute=f"{offset}-59/{TICK_MINUTES}", timezone=UTC)


def week_fire(settings: Settings, week: IsoWeek) -> datetime | None:
    """The schedule's first fire inside `week` (in DIGEST_TIMEZONE): when its issue is due.

    A schedule firing on several days still sends one issue a week, at the first of them; a
    monthly crontab has weeks without any (None).
    """
    trigger = parse_schedule(settings.schedule, settings.zone)
    fire = trigger.get_next_fire_time(None, week.starts_at(settings.zone))
    if fire is None or fire >= (week + 1).starts_at(settings.zone):
        return None
    return fire  # type: ignore[no-any-return]


def local_send_time(fire: datetime, zone: ZoneInfo) -> datetime:
    """`fire`'s wall-clock date and time read in `zone`: Monday 09:00 in Amsterdam becomes
    Monday 09:00 in Tokyo. A time that a DST change skips falls just after the gap, once."""
    return datetime.combine(fire.date(), fire.time(), tzinfo=zone)


def zone_slots(
    settings: Settings, fire: datetime, zones: Iterable[str | None]
) -> tuple[ZoneSlot, ...]:
    """Each stored zone's send time for the week of `fire`, earliest first."""
    slots = []
    for stored in set(zones):
        name = zone_name(stored, settings)
        slots.append(ZoneSlot(stored, name, local_send_time(fire, ZoneInfo(name))))
    return tuple(sorted(slots, key=lambda s: (s.send_at, s.zone or "")))


def plan_local_sends(
    settings: Settings, zones: Iterable[str | None], now: datetime
) -> list[LocalSend]:
    """The weeks that have a zone due at `now`, with which zones: what one tick should do.

    A week's send times span at most 26 hours (UTC-12 to UTC+14) around its fire in
    DIGEST_TIMEZONE, so only last week, this week and next week can have a zone due now (the
    earliest zones start next week's issue while it is still Sunday in DIGEST_TIMEZONE). With
    no readers at all the configured zone stands in, so the issue is still sent and archived.
    """
    audience = set(zones) or {None}
    this_week = current_week(now, settings.zone)
    plans: list[LocalSend] = []
    for week in (this_week - 1, this_week, this_week + 1):
        fire = week_fire(settings, week)
        if fire is None:
            continue
        slots = zone_slots(settings, fire, audience)
        due = frozenset(s.zone for s in slots if s.send_at <= now)
        if due:
            plans.append(LocalSend(week, slots, due))
    return plans


def zone_name(stored: str | None, settings: Settings) -> str:
    """The IANA zone a stored value means; an empty or unknown one means DIGEST_TIMEZONE."""
    if stored:
        try:
            ZoneInfo(stored)
            return stored
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return settings.timezone

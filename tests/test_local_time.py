"""Local-time delivery (DIGEST_LOCAL_TIME_DELIVERY): the weekly issue reaches every reader at the
schedule's weekday and hour in their own time zone, once, driven by a 15-minute tick.

The tick is driven with explicit `now` values across the week, so each send is stamped with the
moment its zone came due; mail lands in the real outbox and the ledger on both backends.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import policy
from email.parser import BytesHeaderParser
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from digest.campaign.lifecycle import local_time_tick
from digest.campaign.status import gather_status
from digest.config import Settings, get_settings
from digest.core.cadence import (
    TICK_MINUTES,
    job_trigger,
    local_send_time,
    plan_local_sends,
    week_fire,
    zone_slots,
)
from digest.model.schedule import parse_schedule
from digest.model.subscriber import Subscriber
from digest.model.weeks import IsoWeek
from digest.readers.preferences import pause, update_profile
from digest.store.db import deliveries
from digest.store.issues import get_issue
from digest.store.subscribers import add_confirmed

WEEK = IsoWeek(2026, 10)  # Monday 2 March 2026: no daylight-saving change anywhere near
JOINED = datetime(2026, 2, 1, tzinfo=UTC)
LA, AMS, TOKYO = "America/Los_Angeles", "Europe/Amsterdam", "Asia/Tokyo"
# 09:00 on Monday 2 March in each zone, in UTC.
TOKYO_9 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
AMS_9 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
LA_9 = datetime(2026, 3, 2, 17, 0, tzinfo=UTC)


@pytest.fixture
def settings(settings_env: dict[str, str]) -> Settings:
    return get_settings().model_copy(
        update={"schedule": "mon 09:00", "timezone": AMS, "local_time_delivery": True}
    )


@pytest.fixture
def readers(engine) -> dict[str, Subscriber]:  # type: ignore[no-untyped-def]
    return {
        zone: add_confirmed(
            engine, f"{zone.split('/')[1].lower()}@example.org", timezone=zone, now=JOINED
        )[0]
        for zone in (LA, AMS, TOKYO)
    }


def ticks(start: datetime, end: datetime) -> Iterator[datetime]:
    at = start
    while at <= end:
        yield at
        at += timedelta(minutes=TICK_MINUTES)


def outbox_counts(settings: Settings) -> Counter[str]:
    folder = Path(settings.outbox_dir)
    files = folder.glob("*.eml") if folder.exists() else []
    # Headers only: `drive` reads the whole outbox at every tick, and To is all it needs.
    headers = BytesHeaderParser(policy=policy.default)
    return Counter(
        headers.parsebytes(f.read_bytes())["To"].addresses[0].addr_spec  # type: ignore[union-attr]
        for f in files
    )


def sent_at(engine) -> dict[int, datetime]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        rows = conn.execute(
            select(deliveries.c.subscriber_id, deliveries.c.sent_at).where(
                deliveries.c.status == "sent"
            )
        ).all()
    return dict(rows)  # type: ignore[arg-type]


def drive(settings: Settings, start: datetime, end: datetime) -> dict[str, datetime]:
    """Tick from `start` to `end`; return when each address first appeared in the outbox."""
    first_seen: dict[str, datetime] = {}
    for now in ticks(start, end):
        local_time_tick(settings, now)
        for address in outbox_counts(settings):
            first_seen.setdefault(address, now)
    return first_seen


# --------------------------------------------------------------------------- three zones, one week


def test_readers_in_three_zones_each_get_the_issue_once_at_nine_local(settings, engine, readers):
    seen: dict[str, datetime] = {}
    states: dict[datetime, str | None] = {}
    for now in ticks(
        datetime(2026, 3, 1, 12, 0, tzinfo=UTC), datetime(2026, 3, 3, 12, 0, tzinfo=UTC)
    ):
        local_time_tick(settings, now)
        issue = get_issue(engine, WEEK)
        states[now] = issue.status if issue else None
        for address in outbox_counts(settings):
            seen.setdefault(address, now)

    # Each reader: one mail, first seen at the tick of 09:00 on Monday in their own zone.
    assert outbox_counts(settings) == {r.email: 1 for r in readers.values()}
    assert seen == {
        readers[TOKYO].email: TOKYO_9,
        readers[AMS].email: AMS_9,
        readers[LA].email: LA_9,
    }
    stamped = sent_at(engine)
    for zone, reader in readers.items():
        local = stamped[reader.id].astimezone(ZoneInfo(zone))
        assert (local.weekday(), local.hour, local.minute) == (0, 9, 0), zone
        assert local.date() == WEEK.monday()

    # Built once, at the first zone's time; "sent" only when the last zone's time has come.
    assert {s for t, s in states.items() if t < TOKYO_9} == {None}
    assert {s for t, s in states.items() if TOKYO_9 <= t < LA_9} == {"sending"}
    assert {s for t, s in states.items() if t >= LA_9} == {"sent"}
    issue = get_issue(engine, WEEK)
    assert issue.built_at == TOKYO_9
    assert issue.send_started_at == TOKYO_9
    assert issue.sent_at == LA_9
    assert str(issue.week) == "2026-W10"


def test_a_reader_who_moves_zone_mid_week_gets_the_issue_once(settings, engine, readers):
    drive(settings, TOKYO_9 - timedelta(hours=1), TOKYO_9 + timedelta(hours=3))
    assert outbox_counts(settings) == {readers[TOKYO].email: 1}
    # Tokyo's reader flies to Los Angeles (already has it); Amsterdam's moves to Tokyo, whose
    # time has passed (gets it at the next tick, not again at 09:00 in Amsterdam).
    moved_at = TOKYO_9 + timedelta(hours=3, minutes=5)
    update_profile(engine, readers[TOKYO].id, name=None, timezone=LA, now=moved_at)
    update_profile(engine, readers[AMS].id, name=None, timezone=TOKYO, now=moved_at)
    seen = drive(settings, TOKYO_9 + timedelta(hours=3, minutes=15), LA_9 + timedelta(hours=1))

    assert outbox_counts(settings) == {r.email: 1 for r in readers.values()}
    assert seen[readers[AMS].email] == TOKYO_9 + timedelta(hours=3, minutes=15)
    assert seen[readers[LA].email] == LA_9
    assert get_issue(engine, WEEK).status == "sent"


def test_readers_without_a_zone_get_it_at_the_newsletters_own_zone(settings, engine, readers):
    nobody, _ = add_confirmed(engine, "nozone@example.org", now=JOINED)
    assert nobody.timezone is None
    seen = drive(settings, AMS_9 - timedelta(minutes=30), AMS_9 + timedelta(minutes=30))
    assert seen[nobody.email] == AMS_9
    assert sent_at(engine)[nobody.id] == AMS_9


def test_a_paused_reader_is_skipped_when_their_zone_comes_due(settings, engine, readers):
    pause(engine, readers[AMS].id, 1, now=JOINED + timedelta(days=25))
    drive(settings, TOKYO_9, LA_9)
    assert outbox_counts(settings) == {readers[TOKYO].email: 1, readers[LA].email: 1}
    with engine.connect() as conn:
        status = conn.execute(
            select(deliveries.c.status).where(deliveries.c.subscriber_id == readers[AMS].id)
        ).scalar_one()
    assert status == "skipped"
    assert get_issue(engine, WEEK).status == "sent"


def test_with_no_readers_the_issue_is_still_sent_at_the_newsletters_time(settings, engine):
    drive(settings, AMS_9 - timedelta(minutes=15), AMS_9)
    issue = get_issue(engine, WEEK)
    assert (issue.status, issue.sent_at) == ("sent", AMS_9)


def test_a_week_missed_by_more_than_the_grace_time_is_not_started_late(settings, engine, readers):
    late = LA_9 + timedelta(seconds=settings.misfire_grace_time) + timedelta(minutes=15)
    drive(settings, late, late + timedelta(hours=2))
    assert get_issue(engine, WEEK) is None
    assert outbox_counts(settings) == {}


def test_a_started_week_is_finished_after_downtime(settings, engine, readers):
    drive(settings, TOKYO_9, TOKYO_9)  # then the machine is off until Tuesday noon
    drive(
        settings, datetime(2026, 3, 3, 12, 0, tzinfo=UTC), datetime(2026, 3, 3, 12, 0, tzinfo=UTC)
    )
    assert outbox_counts(settings) == {r.email: 1 for r in readers.values()}
    assert get_issue(engine, WEEK).status == "sent"


def test_status_shows_progress_per_time_zone(settings, engine, readers):
    drive(settings, TOKYO_9, AMS_9)
    report = gather_status(engine, settings, AMS_9 + timedelta(minutes=5))
    progress = [(z.zone, z.send_at.astimezone(UTC), z.readers, z.sent) for z in report.zones]
    assert progress == [(TOKYO, TOKYO_9, 1, 1), (AMS, AMS_9, 1, 1), (LA, LA_9, 1, 0)]
    assert [z.send_at.hour for z in report.zones] == [9, 9, 9]  # local times
    assert report.issue is not None and report.issue.issue.status == "sending"

    off = settings.model_copy(update={"local_time_delivery": False})
    assert gather_status(engine, off, AMS_9).zones == []


# --------------------------------------------------------------------------- send times (pure)


def test_send_times_follow_the_wall_clock_in_every_zone(settings):
    fire = week_fire(settings, WEEK)
    assert fire == datetime(2026, 3, 2, 9, 0, tzinfo=ZoneInfo(AMS))
    zones = [
        "Pacific/Kiritimati",
        "Asia/Kathmandu",
        AMS,
        None,
        LA,
        "Pacific/Pago_Pago",
        "Mars/Base",
    ]
    slots = zone_slots(settings, fire, zones)
    utc = {s.zone: s.send_at.astimezone(UTC) for s in slots}
    assert slots[0].zone == "Pacific/Kiritimati"  # UTC+14: Sunday 19:00 UTC
    assert utc["Pacific/Kiritimati"] == datetime(2026, 3, 1, 19, 0, tzinfo=UTC)
    assert utc["Asia/Kathmandu"] == datetime(2026, 3, 2, 3, 15, tzinfo=UTC)  # UTC+5:45
    assert utc[None] == utc["Mars/Base"] == utc[AMS] == AMS_9  # unset or unknown: DIGEST_TIMEZONE
    assert slots[-1].zone == "Pacific/Pago_Pago"  # UTC-11: Monday 20:00 UTC
    assert all(s.send_at.hour == 9 and s.send_at.minute == 0 for s in slots)


def test_the_earliest_zone_starts_next_weeks_issue_while_it_is_still_sunday_here(settings):
    sunday_evening = datetime(2026, 3, 1, 19, 0, tzinfo=UTC)  # 20:00 Sunday in Amsterdam (W09)
    zones = ["Pacific/Kiritimati", AMS]

    def plans(now: datetime) -> dict[IsoWeek, tuple[frozenset[str | None], bool]]:
        return {p.week: (p.due, p.final) for p in plan_local_sends(settings, zones, now)}

    # Next week's issue is due in Kiritimati: the week of the fire in DIGEST_TIMEZONE, not of
    # the moment. (Past weeks are in the plan too, all due; the tick passes over sent ones.)
    now = plans(sunday_evening)
    assert now[WEEK] == (frozenset({"Pacific/Kiritimati"}), False)
    assert now[WEEK - 1] == (frozenset(zones), True)
    assert WEEK not in plans(sunday_evening - timedelta(minutes=1))
    assert plans(AMS_9)[WEEK] == (frozenset(zones), True)


def test_a_send_time_in_a_skipped_dst_hour_still_comes_once(settings):
    spring = settings.model_copy(update={"schedule": "sun 02:30"})
    fire = week_fire(spring, IsoWeek(2026, 13))  # Sunday 29 March 2026: 02:00 → 03:00 in Europe
    assert fire is not None and fire.date().isoformat() == "2026-03-29"
    at = local_send_time(fire, ZoneInfo(AMS))
    assert at.astimezone(UTC) == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # 03:30 summer time


def test_a_schedule_with_several_days_sends_one_issue_a_week_at_the_first(settings):
    twice = settings.model_copy(update={"schedule": "mon,thu 07:30"})
    assert week_fire(twice, WEEK) == datetime(2026, 3, 2, 7, 30, tzinfo=ZoneInfo(AMS))
    monthly = settings.model_copy(update={"schedule": "30 6 1 * *"})
    assert week_fire(monthly, WEEK) is None  # no 1st of the month in that week


# --------------------------------------------------------------------------- the job's trigger


def fires(trigger, start: datetime, count: int) -> list[datetime]:  # type: ignore[no-untyped-def]
    out, fire = [], None
    for _ in range(count):
        fire = trigger.get_next_fire_time(fire, fire or start)
        out.append(fire.astimezone(UTC))
    return out


def test_off_by_default_the_job_fires_at_the_schedules_time(settings_env):
    conf = get_settings()
    assert conf.local_time_delivery is False
    start = datetime(2026, 3, 1, tzinfo=UTC)
    expected = fires(parse_schedule(conf.schedule, conf.zone), start, 3)
    assert fires(job_trigger(conf), start, 3) == expected
    assert [f.weekday() for f in expected] == [0, 0, 0]


@pytest.mark.parametrize(
    ("schedule", "minutes"), [("mon 09:00", [0, 15, 30]), ("mon 09:10", [10, 25, 40])]
)
def test_with_local_time_on_the_job_ticks_every_15_minutes_on_the_schedules_minute(
    settings, schedule, minutes
):
    conf = settings.model_copy(update={"schedule": schedule})
    got = fires(job_trigger(conf), datetime(2026, 3, 1, 0, 0, tzinfo=UTC), 3)
    assert [f.minute for f in got] == minutes
    assert all(f.hour == 0 and f.date().day == 1 for f in got)


def test_the_weekly_job_reads_the_setting_from_the_environment(settings_env, monkeypatch):
    monkeypatch.setenv("DIGEST_LOCAL_TIME_DELIVERY", "true")
    get_settings.cache_clear()
    assert get_settings().local_time_delivery is True


def test_the_scheduled_job_runs_the_tick_when_local_time_delivery_is_on(
    settings_env, engine, monkeypatch
):
    from digest.model.weeks import current_week
    from digest.scheduler import weekly_job

    # A weekly crontab whose fire was an hour ago: its zone (the newsletter's) is due now.
    fired = datetime.now(UTC) - timedelta(hours=1)
    schedule = f"{fired.minute} {fired.hour} * * {(fired.weekday() + 1) % 7}"
    monkeypatch.setenv("DIGEST_SCHEDULE", schedule)
    monkeypatch.setenv("DIGEST_LOCAL_TIME_DELIVERY", "true")
    get_settings.cache_clear()
    reader, _ = add_confirmed(engine, "utc@example.org", now=fired - timedelta(days=1))
    # Los Angeles is eight hours behind UTC: its readers' time has not come yet.
    later, _ = add_confirmed(engine, "la@example.org", timezone=LA, now=JOINED)

    weekly_job()

    issue = get_issue(engine, current_week(fired))
    assert issue is not None and issue.status == "sending"
    assert set(sent_at(engine)) == {reader.id}
    assert outbox_counts(get_settings()) == {reader.email: 1}
    assert later.email not in outbox_counts(get_settings())


def test_digest_status_lists_each_zone_with_its_local_time_and_progress(
    settings, engine, readers, monkeypatch
):
    from typer.testing import CliRunner

    from digest.cli import app

    drive(settings, TOKYO_9, AMS_9)
    monkeypatch.setenv("DIGEST_TIMEZONE", AMS)
    monkeypatch.setenv("DIGEST_LOCAL_TIME_DELIVERY", "1")
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    lines = [line.strip() for line in result.output.splitlines()]
    start = lines.index("zones        Asia/Tokyo  Mon 09:00 (Mon 00:00 UTC)  1/1 sent")
    assert lines[start + 1 : start + 3] == [
        "Europe/Amsterdam  Mon 09:00 (Mon 08:00 UTC)  1/1 sent",
        "America/Los_Angeles  Mon 09:00 (Mon 17:00 UTC)  0/1 sent",
    ]

"""Cron expressions: NCRONTAB (6 fields, with seconds) as the Functions timer uses, and the
classic 5-field form, both in UTC.

Small and dependency-free because two places need it: the local host runs timer triggers on
their schedules, and scheduled rebuilds evaluate each target's ``schedule``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

_NAMES = {
    "month": {
        n: i
        for i, n in enumerate(
            ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], start=1
        )
    },
    "dow": {n: i for i, n in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])},
}
_RANGES = {
    "second": (0, 59),
    "minute": (0, 59),
    "hour": (0, 23),
    "day": (1, 31),
    "month": (1, 12),
    "dow": (0, 6),
}


class CronError(ValueError):
    pass


def _value(text: str, field: str) -> int:
    lowered = text.lower()
    names = _NAMES.get(field, {})
    if lowered in names:
        return names[lowered]
    if not lowered.isdigit():
        raise CronError(f"{field}: {text!r} is not a number")
    number = int(lowered)
    if field == "dow" and number == 7:
        return 0
    return number


def _parse_field(text: str, field: str) -> frozenset[int]:
    low, high = _RANGES[field]
    values: set[int] = set()
    for part in text.split(","):
        step = 1
        if "/" in part:
            part, step_text = part.split("/", 1)
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"{field}: bad step {step_text!r}")
            step = int(step_text)
        if part in ("*", "?"):
            start, end = low, high
        elif "-" in part:
            a, b = part.split("-", 1)
            start, end = _value(a, field), _value(b, field)
        else:
            start = _value(part, field)
            end = high if step > 1 else start
        if field == "dow" and end == 0 and start > 0:
            end = 7
        if not (low <= start <= high or (field == "dow" and start == 7)) or end < start:
            raise CronError(f"{field}: {part!r} is out of range {low}-{high}")
        values.update(v % 7 if field == "dow" else v for v in range(start, end + 1, step))
    if any(not low <= v <= high for v in values):
        raise CronError(f"{field}: value out of range {low}-{high}")
    return frozenset(values)


@dataclass(frozen=True)
class Cron:
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    day_restricted: bool
    weekday_restricted: bool

    @classmethod
    def parse(cls, expression: str) -> Cron:
        fields = expression.split()
        if len(fields) == 5:
            fields = ["0", *fields]
        if len(fields) != 6:
            raise CronError(
                f"{expression!r}: expected 5 fields (minute hour day month weekday) or 6 (with seconds)"
            )
        names = ["second", "minute", "hour", "day", "month", "dow"]
        second, minute, hour, day, month, dow = (
            _parse_field(text, name) for text, name in zip(fields, names, strict=True)
        )
        return cls(
            seconds=second,
            minutes=minute,
            hours=hour,
            days=day,
            months=month,
            weekdays=dow,
            day_restricted=fields[3] not in ("*", "?"),
            weekday_restricted=fields[5] not in ("*", "?"),
        )

    def _day_matches(self, moment: datetime) -> bool:
        day_ok = moment.day in self.days
        dow_ok = (moment.isoweekday() % 7) in self.weekdays
        if self.day_restricted and self.weekday_restricted:
            return day_ok or dow_ok  # classic cron: either restriction matches
        return day_ok and dow_ok

    def next_after(self, moment: datetime) -> datetime:
        """The first firing time strictly after ``moment`` (same tz as ``moment``)."""
        candidate = moment.replace(microsecond=0) + timedelta(seconds=1)
        limit = moment + timedelta(days=366 * 5)
        while candidate <= limit:
            if candidate.month not in self.months:
                candidate = (
                    candidate.replace(day=1, hour=0, minute=0, second=0) + timedelta(days=32)
                ).replace(day=1)
                continue
            if not self._day_matches(candidate):
                candidate = candidate.replace(hour=0, minute=0, second=0) + timedelta(days=1)
                continue
            if candidate.hour not in self.hours:
                candidate = candidate.replace(minute=0, second=0) + timedelta(hours=1)
                continue
            if candidate.minute not in self.minutes:
                candidate = candidate.replace(second=0) + timedelta(minutes=1)
                continue
            if candidate.second not in self.seconds:
                candidate += timedelta(seconds=1)
                continue
            return candidate
        raise CronError("the expression never fires")

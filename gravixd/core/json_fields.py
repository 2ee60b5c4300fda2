"""Field values JSON emitters send that proto3 JSON alone would refuse (DESIGN.md section 2).

Sans-I/O and stateless: each function takes one value and returns what is stored, or raises
`FieldValueError` with the "Expected ..., got ..." half of a message (the caller adds where).
The protobuf path never comes here: its fields are typed on the wire.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Final

from ..schema import MAX_INT64, SEVERITY_ALIASES, SEVERITY_NAMES, severity_number_of_name

__all__ = [
    "MIN_UNIX_NANO",
    "FieldValueError",
    "echo",
    "int64_of",
    "rfc3339_unix_nano",
    "severity_number_of",
    "severity_of",
    "unix_nano_of",
]

MIN_INT64: Final = -(2**63)
# A non-zero timestamp_unix_nano below this (1973-03-03) is a unit mistake: seconds,
# milliseconds or microseconds sent where nanoseconds belong.
MIN_UNIX_NANO: Final = 10**17


class FieldValueError(ValueError):
    """`message` is "Expected ..., got ..." for one field's value."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# Only ASCII digits and a sign: Python's int() would also take "١٢", "1_000" and " 12 ".
_DECIMAL: Final = re.compile(r"[+-]?[0-9]+")


def int64_of(value: int | str | None, minimum: int) -> int:
    """A 64-bit integer field: a number (msgspec checked its range) or a decimal string."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    if not _DECIMAL.fullmatch(value):
        raise FieldValueError(f"Expected `int` or decimal string, got {echo(value)}")
    try:
        number = int(value, 10)
    except ValueError:  # more digits than Python converts (4300): far out of range anyway
        number = MAX_INT64 + 1
    if not minimum <= number <= MAX_INT64:
        raise FieldValueError(f"Expected `int` >= {minimum} and <= {MAX_INT64}, got {echo(value)}")
    return number


def unix_nano_of(value: int | str | None) -> int:
    """timestamp_unix_nano: 0 (time of receipt) or nanoseconds after 1973-03-03."""
    nanos = int64_of(value, MIN_INT64)
    if nanos and nanos < MIN_UNIX_NANO:
        raise FieldValueError(
            "Expected Unix time in nanoseconds (>= 10^17, after 1973-03-03) or 0, "
            f"got `{nanos}`{_likely_unit(nanos)}"
        )
    return nanos


def _likely_unit(nanos: int) -> str:
    if nanos < 10**8:  # negative, or too small to be any unit of a recent time
        return ""
    if nanos < 10**11:
        unit, factor = "seconds", "10^9"
    elif nanos < 10**14:
        unit, factor = "milliseconds", "10^6"
    else:
        unit, factor = "microseconds", "10^3"
    return f", which looks like {unit} (times {factor} is nanoseconds)"


# A value echoed in an error shows this many characters at most, then its length: a 202 lists
# up to 20 errors, and 20 echoes of a 300 KB value made a 6 MB answer (and as much log).
ECHO_MAX_CHARS: Final = 64


def echo(value: object) -> str:
    """`value` for an error message, in backticks: whole when short, else an excerpt and its
    length in characters (`"2026-12-01T07...` (307200 characters)`)."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= ECHO_MAX_CHARS:
        return f"`{text}`"
    return f"`{text[:ECHO_MAX_CHARS]}...` ({len(text)} characters)"


# RFC 3339 section 5.6 date-time; "T" may be "t" or a space (as its note allows). [0-9], not
# \d, which matches other scripts' digits.
_RFC3339: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]+))?(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))"
)
_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
_EXAMPLE: Final = "`2026-12-01T07:40:00.123456789+02:00`"


def rfc3339_unix_nano(value: object) -> int:
    """`timestamp`: an RFC 3339 string, any offset, up to 9 fractional digits."""
    if not isinstance(value, str):
        got = "`null`" if value is None else echo(repr(value))
        raise FieldValueError(
            f"Expected an RFC 3339 time such as {_EXAMPLE} (Unix time goes in "
            f"`timestamp_unix_nano`, in nanoseconds), got {got}"
        )
    # A shipper's batch repeats its date, time to the second and offset: those are parsed
    # and checked once (`_parse`), and only the fraction per value (3 µs -> ~0.5 µs).
    tail = _FRACTION_AND_ZONE.fullmatch(value, 19)
    if tail is None:
        return _not_the_epoch(_parse(value), value)  # not the usual shape: full parse or error
    whole_seconds = value[:19] + tail[2]
    nanos = _WHOLE_SECONDS.get(whole_seconds)
    if nanos is None:
        nanos = _parse(whole_seconds)
        if len(_WHOLE_SECONDS) >= _CACHED_WHOLE_SECONDS:
            _WHOLE_SECONDS.clear()
        _WHOLE_SECONDS[whole_seconds] = nanos
    fraction = tail[1]
    if fraction:
        nanos += int(fraction.ljust(9, "0"))
        if nanos > MAX_INT64:
            raise FieldValueError(_out_of_range(value))
    return _not_the_epoch(nanos, value)


def _not_the_epoch(nanos: int, value: str) -> int:
    """The Unix epoch itself can't be stored: 0 nanoseconds means "time of receipt" (proto3's
    default), so it would silently become another instant. Refused instead of replaced."""
    if nanos == 0:
        raise FieldValueError(
            f'Expected a time other than the Unix epoch, got {echo(value)}: 0 means "no time,'
            ' use the time of receipt" here; leave `timestamp` out for that'
        )
    return nanos


_FRACTION_AND_ZONE: Final = re.compile(r"(?:\.([0-9]{1,9}))?([Zz]|[+-][0-9]{2}:[0-9]{2})")
# Distinct seconds of the recent past are few; a hostile stream of distinct ones only makes
# the cache start over.
_CACHED_WHOLE_SECONDS: Final = 4096
_WHOLE_SECONDS: dict[str, int] = {}


def _out_of_range(value: str) -> str:
    return (
        f"Expected a time between 1677-09-21 and 2262-04-11 (int64 nanoseconds), got {echo(value)}"
    )


def _parse(value: str) -> int:
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise FieldValueError(f"Expected an RFC 3339 time such as {_EXAMPLE}, got {echo(value)}")
    year, month, day, hour, minute, second = (int(match[i]) for i in range(1, 7))
    fraction, sign, offset_hours, offset_minutes = match[7] or "", match[8], match[9], match[10]
    if len(fraction) > 9:
        raise FieldValueError(f"Expected at most 9 fractional digits, got {echo(value)}")
    try:
        days = date(year, month, day).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        raise FieldValueError(f"Expected a valid calendar date, got {echo(value)}") from None
    if hour > 23 or minute > 59 or second > 60:
        raise FieldValueError(f"Expected a valid time of day, got {echo(value)}")
    offset = 0
    if sign is not None:
        if int(offset_hours) > 23 or int(offset_minutes) > 59:
            raise FieldValueError(f"Expected a UTC offset within ±23:59, got {echo(value)}")
        offset = int(offset_hours) * 3600 + int(offset_minutes) * 60
        offset = offset if sign == "+" else -offset
    # Second 60 exists only in a leap second, the last minute of a UTC day (23:59:60Z, or
    # 15:59:60-08:00 as RFC 3339 section 5.7 shows); POSIX time, like gravixd, counts it as
    # the next day's first second. Any other :60 is a typo or a broken clock: refused.
    if second == 60 and (hour * 3600 + minute * 60 - offset) % 86400 != 86400 - 60:
        raise FieldValueError(
            f"Expected seconds 00..59 (60 only in a leap second, 23:59:60 UTC), got {echo(value)}"
        )
    seconds = days * 86400 + hour * 3600 + minute * 60 + second - offset
    nanos = seconds * 10**9 + int(fraction.ljust(9, "0"))
    if not MIN_INT64 <= nanos <= MAX_INT64:
        raise FieldValueError(_out_of_range(value))
    return nanos


_SEVERITY_EXPECTED: Final = (
    "Expected a severity number or name (any case, with or without SEVERITY_; "
    + "; ".join(
        f"{stored}: {', '.join(n for n, v in SEVERITY_ALIASES.items() if v == number)}"
        for number, stored in enumerate(SEVERITY_NAMES)
        if number
    )
    + ")"
)


def severity_of(value: int | str | None) -> int:
    """The enum number of a severity given as a number or a name (`schema.SEVERITY_ALIASES`)."""
    if value is None:
        return 0
    if isinstance(value, int):
        if not 0 <= value <= 2**31 - 1:
            raise FieldValueError(f"Expected a severity number 0..2147483647, got {echo(value)}")
        return value
    number = severity_number_of(value)
    if number is None:
        raise FieldValueError(f"{_SEVERITY_EXPECTED}, got {echo(value)}")
    return number


# The spellings shippers send (`warning`, `WARNING`, `Warning`, `SEVERITY_WARNING`), found as
# they are before any case folding.
_SEVERITY_BY_SPELLING: Final = {
    spelling: number
    for name, number in SEVERITY_ALIASES.items()
    for spelling in (name, name.upper(), name.capitalize(), f"SEVERITY_{name.upper()}")
}


def severity_number_of(name: str) -> int | None:
    """`schema.severity_number_of_name`, the common spellings by one lookup."""
    number = _SEVERITY_BY_SPELLING.get(name)
    return number if number is not None else severity_number_of_name(name)

"""Structured logs: one JSON object a line (or plain text), with a stable `event` name.

Call sites log with `extra={"event": "spool_torn_tail_truncated", ...}`: the event name is
what alerts and tests match on; the message is for people.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import sys
from typing import Any

import msgspec

# Attributes every LogRecord has; anything else came from `extra=` and is emitted as a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
_encode = msgspec.json.Encoder(enc_hook=repr).encode


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, "event", record.name),
            "msg": record.getMessage(),
        }
        entry.update(_fields(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _encode(entry).decode()


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields a call site passed with `extra=`, in the order given."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and k != "event"}


# A value that needs no quoting in `key=value`: no spaces, quotes, `=` or control characters.
_BARE = re.compile(r"[^\s\"'=\\]+")


def _text_value(value: Any) -> str:
    """Strings as they are when bare, else JSON-quoted; anything else as JSON (true, null,
    3, [5170,5171]), as the JSON format writes it."""
    text = value if isinstance(value, str) else _encode(value).decode()
    return text if _BARE.fullmatch(text) else _encode(text).decode()


class TextFormatter(logging.Formatter):
    """`2026-12-01 09:00:00,123 INFO gravixd: gravixd serving event=serving http_port=8088 ...`:
    the message for people, then every structured field as `key=value` (values with spaces
    or quotes JSON-quoted), so the text format drops nothing the JSON format has."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        pairs = _fields(record)
        if hasattr(record, "event"):
            pairs = {"event": record.event, **pairs}
        extra = " ".join(f"{key}={_text_value(value)}" for key, value in pairs.items())
        if not extra:
            return line
        head, newline, rest = line.partition("\n")  # keep a traceback below the fields
        return f"{head} {extra}{newline}{rest}"


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())

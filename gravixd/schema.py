"""The Arrow schemas of the two streams, in one place (DESIGN.md section 1).

Every decoder (msgspec JSON, pure protobuf, the native C path) must produce record batches
with exactly these schemas; segments, rollups and queries rely on them. Columns are named
after the proto fields; types are ones Trino's Hive connector, DuckDB and pandas all read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

import pyarrow as pa

from .proto.gravix.v1 import events_pb2

TIMESTAMP_TYPE: Final = pa.timestamp("ns", tz="UTC")
ATTRIBUTES_TYPE: Final = pa.map_(pa.string(), pa.string())

FACTS_SCHEMA: Final = pa.schema(
    [
        pa.field("timestamp", TIMESTAMP_TYPE),
        pa.field("service", pa.string()),
        pa.field("route", pa.string()),
        pa.field("method", pa.string()),
        pa.field("status_code", pa.int32()),
        pa.field("duration_ms", pa.float64()),
        pa.field("bytes_in", pa.int64()),
        pa.field("bytes_out", pa.int64()),
        pa.field("trace_id", pa.string()),
        pa.field("attributes", ATTRIBUTES_TYPE),
    ]
)

EVENTS_SCHEMA: Final = pa.schema(
    [
        pa.field("timestamp", TIMESTAMP_TYPE),
        pa.field("service", pa.string()),
        pa.field("kind", pa.string()),
        pa.field("severity", pa.string()),
        pa.field("message", pa.string()),
        pa.field("trace_id", pa.string()),
        pa.field("attributes", ATTRIBUTES_TYPE),
    ]
)

STREAMS: Final[dict[str, pa.Schema]] = {"facts": FACTS_SCHEMA, "events": EVENTS_SCHEMA}


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a stream, as every builder lays it out.

    Attributes:
        field: the Arrow field (name and type) of the schema above.
        kind: "fixed" (one value buffer), "string" (offsets and UTF-8 data) or "map"
            (map<string,string>: entry offsets, key and value strings).
        proto_number: the field number of the column in the stream's proto message.
    """

    field: pa.Field
    kind: Literal["fixed", "string", "map"]
    proto_number: int


def _columns(schema: pa.Schema, message: Any) -> tuple[Column, ...]:
    # Column names are the proto field names, but for the timestamp (`timestamp_unix_nano`).
    numbers = {f.name.removesuffix("_unix_nano"): f.number for f in message.DESCRIPTOR.fields}
    return tuple(
        Column(
            field,
            "map"
            if pa.types.is_map(field.type)
            else "string"
            if pa.types.is_string(field.type)
            else "fixed",
            numbers[field.name],
        )
        for field in schema
    )


# The column table of each stream: the Python builders iterate it, and the C decoder's
# X-macro table (native/gravix_columns.h) is held to it by tests/unit/test_native.py.
COLUMNS: Final[dict[str, tuple[Column, ...]]] = {
    "facts": _columns(FACTS_SCHEMA, events_pb2.RequestFact),
    "events": _columns(EVENTS_SCHEMA, events_pb2.ServiceEvent),
}

# A rollup batch's commit record, as a table query engines read beside the data
# (`rollup-commits/{stream}/dt=…/hour=…/batch-NNNNN.parquet`, written by gravixd.rollup): one row
# per source segment the batch consumed (role "source") and per part that holds their rows
# (role "part"); `file` is the object's name within its dt=/hour= folder. A reader of the Hive
# files that wants every event once takes parts a record names and segments none names.
COMMITS_SCHEMA: Final = pa.schema(
    [
        pa.field("batch", pa.int32()),
        pa.field("role", pa.string()),
        pa.field("file", pa.string()),
    ]
)

# Severity is stored by name, the proto enum name without its SEVERITY_ prefix, so that
# `WHERE severity = 'ERROR'` reads naturally in SQL. Index = proto enum number.
SEVERITY_NAMES: Final = ("UNSPECIFIED", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")

# status_code is a proto uint32 but the contract bounds it to 0..999.
MAX_STATUS_CODE: Final = 999
# bytes_in/bytes_out are proto uint64 stored as signed int64 (what every engine reads):
# values above this are rejected rather than wrapped.
MAX_INT64: Final = 2**63 - 1


def severity_name(number: int) -> str:
    """The stored name of a severity number; unknown numbers (a newer emitter's enum
    values, which proto3 keeps as open enums) are stored as their decimal number."""
    if 0 <= number < len(SEVERITY_NAMES):
        return SEVERITY_NAMES[number]
    return str(number)


# The attributes map is stored with its entries sorted by key, keys unique (the last of
# duplicate keys wins, as in protobuf and JSON): one canonical form whatever the wire order,
# so that every decoder yields identical tables.


# Severity names as emitters spell them, matched case-insensitively, with or without the
# SEVERITY_ prefix (DESIGN.md section 2): syslog's, OpenTelemetry's and the common logging
# libraries' (.NET/Serilog `Verbose`/`Information`, log4j, Go's slog) names included.
SEVERITY_ALIASES: Final = {
    "unspecified": 0,
    "trace": 1,
    "verbose": 1,
    "debug": 1,
    "info": 2,
    "information": 2,
    "informational": 2,
    "notice": 2,
    "warn": 3,
    "warning": 3,
    "err": 4,
    "error": 4,
    "crit": 5,
    "critical": 5,
    "alert": 5,
    "emerg": 5,
    "emergency": 5,
    "fatal": 5,
    "panic": 5,
}


def severity_number_of_name(name: str) -> int | None:
    """The severity number a name stands for (`"warning"`, `"SEVERITY_ERROR"`), or None."""
    return SEVERITY_ALIASES.get(name.strip().lower().removeprefix("severity_"))

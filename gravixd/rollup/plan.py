"""What a rollup does, decided from listings alone: sans-I/O, no store, no trio.

The layout (keys are relative to the store URL's prefix):

    {stream}/dt=YYYY-MM-DD/hour=HH/{segment_id}.arrow|.parquet       sources (the daemon's)
    rollup/{stream}/dt=YYYY-MM-DD/hour=HH/part-NNNNN.parquet         output (zstd Parquet)
    rollup/{stream}/dt=YYYY-MM-DD/hour=HH/_manifest-NNNNN.json       commit records
    rollup-commits/{stream}/dt=YYYY-MM-DD/hour=HH/batch-NNNNN.parquet the same, as a table

Every name is deterministic (batch and part numbers follow the last committed ones), so a
run that crashed is finished by the next one, never duplicated. `plan_hour` turns an hour's
listing and manifests into the steps `run.rollup_hour` carries out; this module never reads
or writes anything.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from ..schema import COMMITS_SCHEMA

ROLLUP_PREFIX = "rollup"
COMMITS_PREFIX = "rollup-commits"
# An empty object at rollup/{stream}/ and rollup-commits/{stream}/ so that those locations
# exist before the first commit: Trino's CREATE TABLE refuses an external location that does
# not exist. Names starting with "_" are hidden from Trino, Hive, pyarrow and *.parquet globs.
LAYOUT_MARKER = "_gravixd"
LAYOUT_MARKER_BODY = b"gravixd rollup: keeps this table location in existence for query engines\n"
MANIFEST_VERSION = 1

SOURCE_KEY = re.compile(
    r"^(?P<stream>[a-z]+)/dt=(?P<dt>\d{4}-\d{2}-\d{2})/hour=(?P<hour>\d{2})/"
    r"(?P<segment_id>[^/]+)\.(?P<ext>arrow|parquet)$"
)
PART_NAME = re.compile(r"^part-(\d{5,})\.parquet$")
MANIFEST_NAME = re.compile(r"^_manifest-(\d{5,})\.json$")
MANIFEST_KEY = re.compile(
    r"^" + ROLLUP_PREFIX + r"/(?P<stream>[a-z]+)/dt=(?P<dt>\d{4}-\d{2}-\d{2})/hour=(?P<hour>\d{2})/"
    r"_manifest-(?P<batch>\d{5,})\.json$"
)


class PartEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    key: str
    rows: int
    bytes: int
    sha256: str


class Manifest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: int
    stream: str
    dt: str
    hour: int
    batch: int
    sources: list[str]
    source_rows: int
    parts: list[PartEntry]


@dataclass(frozen=True, order=True)
class Hour:
    """One partition: a stream and a UTC hour."""

    stream: str
    start: datetime

    @property
    def partition(self) -> str:
        return f"dt={self.start:%Y-%m-%d}/hour={self.start:%H}"

    @property
    def source_prefix(self) -> str:
        return f"{self.stream}/{self.partition}/"

    @property
    def rollup_prefix(self) -> str:
        return f"{ROLLUP_PREFIX}/{self.stream}/{self.partition}/"

    @property
    def commits_prefix(self) -> str:
        return f"{COMMITS_PREFIX}/{self.stream}/{self.partition}/"

    def manifest_key(self, batch: int) -> str:
        return f"{self.rollup_prefix}_manifest-{batch:05d}.json"

    def commit_record_key(self, batch: int) -> str:
        return f"{self.commits_prefix}batch-{batch:05d}.parquet"


def hour_floor(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _hour_start(dt: str, hour: str) -> datetime | None:
    try:
        return datetime.strptime(f"{dt} {hour}", "%Y-%m-%d %H").replace(tzinfo=UTC)
    except ValueError:
        return None


def source_hours(stream: str, keys: Iterable[str]) -> tuple[set[Hour], list[str]]:
    """Hours holding source segments of `stream`, and keys skipped for a bad date."""
    hours: set[Hour] = set()
    bad: list[str] = []
    for key in keys:
        match = SOURCE_KEY.match(key)
        if match is None or match["stream"] != stream:
            continue
        start = _hour_start(match["dt"], match["hour"])
        if start is None:
            bad.append(key)
            continue
        hours.add(Hour(stream, start))
    return hours, bad


def hours_missing_commit_records(
    stream: str, rollup_keys: Iterable[str], commit_keys: Iterable[str]
) -> set[Hour]:
    """Hours with a manifest whose commit record is missing: a run crashed between the
    manifest and its record, or the hour was rolled up before commit records existed."""
    recorded = set(commit_keys)
    hours: set[Hour] = set()
    for key in rollup_keys:
        match = MANIFEST_KEY.match(key)
        if match is None or match["stream"] != stream:
            continue
        start = _hour_start(match["dt"], match["hour"])
        if start is None:
            continue
        hour = Hour(stream, start)
        if hour.commit_record_key(int(match["batch"])) not in recorded:
            hours.add(hour)
    return hours


def select_hours(
    hours: Iterable[Hour],
    *,
    now: datetime,
    since: datetime | None,
    until: datetime | None,
    include_current_hour: bool,
) -> tuple[list[Hour], int]:
    """The hours to roll up, in order, and how many were skipped because still open."""
    open_hour_start = hour_floor(now)
    chosen, skipped_open = [], 0
    for hour in sorted(hours):
        if since is not None and hour.start < hour_floor(since):
            continue
        if until is not None and hour.start >= until:
            continue
        if hour.start >= open_hour_start and not include_current_hour:
            skipped_open += 1
            continue
        chosen.append(hour)
    return chosen, skipped_open


def manifest_keys(existing: Iterable[str]) -> list[str]:
    return [k for k in existing if MANIFEST_NAME.match(k.rsplit("/", 1)[-1])]


def part_number(key: str) -> int:
    match = PART_NAME.match(key.rsplit("/", 1)[-1])
    assert match is not None, key
    return int(match[1])


@dataclass(frozen=True)
class HourPlan:
    """The steps of one hour's rollup, in the order `run.rollup_hour` takes them."""

    missing_commit_records: list[Manifest]  # earlier batches whose record is missing
    orphan_parts: list[str]  # parts no manifest names: a run crashed before its manifest
    covered_sources: list[str]  # sources an earlier batch holds: delete (unless kept)
    new_sources: list[str]  # the next batch, in segment-id order
    batch: int  # the next batch's number
    first_part: int  # its first part's number


def plan_hour(
    hour: Hour,
    existing: Iterable[str],
    manifests: list[Manifest],
    commit_keys: Iterable[str],
    source_keys: Iterable[str],
) -> HourPlan:
    """Decide an hour's rollup from its `rollup/` listing (`existing`), the manifests found
    there, its `rollup-commits/` listing and its source listing."""
    covered = {source for m in manifests for source in m.sources}
    committed = {part.key for m in manifests for part in m.parts}
    recorded = set(commit_keys)
    sources = [k for k in source_keys if SOURCE_KEY.match(k) and k.startswith(hour.source_prefix)]
    return HourPlan(
        missing_commit_records=[
            m for m in manifests if hour.commit_record_key(m.batch) not in recorded
        ],
        orphan_parts=[
            k for k in existing if PART_NAME.match(k.rsplit("/", 1)[-1]) and k not in committed
        ],
        covered_sources=[k for k in sources if k in covered],
        new_sources=sorted(k for k in sources if k not in covered),
        batch=max((m.batch for m in manifests), default=-1) + 1,
        first_part=max((part_number(k) for k in committed), default=-1) + 1,
    )


def commit_record_bytes(manifest: Manifest) -> bytes:
    """The manifest as rows of COMMITS_SCHEMA, zstd Parquet (a few KiB)."""
    names = [key.rsplit("/", 1)[-1] for key in manifest.sources]
    parts = [part.key.rsplit("/", 1)[-1] for part in manifest.parts]
    table = pa.table(
        {
            "batch": [manifest.batch] * (len(names) + len(parts)),
            "role": ["source"] * len(names) + ["part"] * len(parts),
            "file": names + parts,
        },
        schema=COMMITS_SCHEMA,
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return bytes(sink.getvalue().to_pybytes())


# --- Iceberg tables: what to compact, what to name it, how old a file is -----------------

SECONDS_PER_HOUR = 3600
_COMPACTED_NAME = re.compile(r"^part-(?P<unix>\d{10})-[0-9a-f]{16}-\d{5}\.parquet$")
_SPLIT_NAME = re.compile(r"^(?P<segment_id>[0-9A-HJKMNP-TV-Z]{26})-\d{10}\.parquet$")


@dataclass(frozen=True, order=True)
class TableFile:
    """A data file of a table's current snapshot."""

    hour: int  # partition: hours since the epoch
    location: str
    size_bytes: int
    rows: int


def plan_compaction(
    files: Iterable[TableFile], *, now_unix_seconds: float, min_files: int = 2
) -> dict[int, list[TableFile]]:
    """Closed hours (the current one is still written to) holding `min_files` files or
    more: each becomes one atomic replace of those files by a few large ones."""
    current_hour = int(now_unix_seconds // SECONDS_PER_HOUR)
    by_hour: dict[int, list[TableFile]] = {}
    for file in files:
        if file.hour < current_hour:
            by_hour.setdefault(file.hour, []).append(file)
    return {h: sorted(fs) for h, fs in sorted(by_hour.items()) if len(fs) >= min_files}


def compacted_part_name(run_unix_seconds: int, inputs: Iterable[str], number: int) -> str:
    """`part-{run time}-{digest of the inputs}-{n}.parquet`: the time lets orphan removal
    tell the age of a part a crashed run left; the digest keeps names unique per input set."""
    import hashlib

    digest = hashlib.sha256("\n".join(sorted(inputs)).encode()).hexdigest()[:16]
    return f"part-{run_unix_seconds:010d}-{digest}-{number:05d}.parquet"


def written_at_unix_seconds(name: str) -> float | None:
    """When gravixd wrote a table file, from its name (a compacted part, or a segment's
    split); None for a name it does not know (never removed as an orphan then)."""
    from ..core.segment import segment_created_at

    if match := _COMPACTED_NAME.match(name):
        return float(match["unix"])
    if match := _SPLIT_NAME.match(name):
        try:
            return segment_created_at(match["segment_id"]).timestamp()
        except ValueError:
            return None
    return None


def orphans(
    keys: Iterable[str],
    referenced_keys: set[str],
    *,
    now_unix_seconds: float,
    retention_seconds: float,
) -> list[str]:
    """Table data files no kept snapshot references, written longer ago than the retention
    (a younger one may belong to a commit in progress)."""
    found = []
    for key in keys:
        if key in referenced_keys:
            continue
        written = written_at_unix_seconds(key.rsplit("/", 1)[-1])
        if written is not None and now_unix_seconds - written > retention_seconds:
            found.append(key)
    return found

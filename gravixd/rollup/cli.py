"""`gravixd rollup [flags]`: the command line of the rollup (argparse), nothing else.

`gravixd.cli` hands `rollup ...` here; the daemon's schedule imports `rollup.run`, never
this module.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NoReturn

import trio

from ..errors import GravixdError, StoreError
from ..schema import STREAMS
from .run import RollupReport, rollup


def _parse_time(text: str) -> datetime:
    """ISO 8601 date or date-time; no offset means UTC."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"Expected an ISO 8601 time like 2026-11-25T20:00Z, got {text!r}"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# The settings rollup reads: where the store is and how to reach it, and its file size.
ROLLUP_KEYS = (
    "store_url",
    "s3_endpoint_url",
    "s3_region",
    "s3_path_style",
    "s3_access_key_id",
    "s3_secret_access_key",
    "s3_sse",
    "s3_sse_kms_key_id",
    "rollup_target_file_bytes",
    "iceberg_catalog_uri",
    "iceberg_catalog_name",
    "iceberg_namespace",
    "iceberg_commit",
    "iceberg_catalog_token",
    "iceberg_catalog_warehouse",
    "iceberg_catalog_password",
    "iceberg_snapshot_retention_seconds",
)


class UsageError(Exception):
    """A bad command line; main() reports it as text or, with --json, as JSON."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    from .. import config

    parser = _Parser(
        prog="gravixd rollup",
        description="Compact each closed hour's segments into large Parquet files at "
        "rollup/{stream}/dt=YYYY-MM-DD/hour=HH/part-NNNNN.parquet; idempotent.",
    )
    rollup_args = parser.add_argument_group("rollup")
    rollup_args.add_argument(
        "--stream",
        action="append",
        choices=sorted(STREAMS),
        help="stream (repeatable; default all)",
    )
    rollup_args.add_argument("--since", type=_parse_time, help="first hour (ISO 8601, UTC)")
    rollup_args.add_argument("--until", type=_parse_time, help="end, exclusive (ISO 8601, UTC)")
    rollup_args.add_argument("--keep-sources", action="store_true", help="do not delete segments")
    rollup_args.add_argument(
        "--include-current-hour", action="store_true", help="also roll up the open hour"
    )
    rollup_args.add_argument(
        "--json", action="store_true", help="print the report (or the error) as JSON"
    )
    config.add_arguments(parser, keys=ROLLUP_KEYS)
    return parser


def store_options(cfg: Any) -> dict[str, Any]:
    """The `s3_*` keys of a config, for `open_store` (other schemes take none)."""
    if not str(cfg.store_url).startswith("s3://"):
        return {}
    return {name: getattr(cfg, name) for name in ROLLUP_KEYS if name.startswith("s3_")}


def main(argv: list[str]) -> int:
    """`gravixd rollup [flags]`. Returns 0 when every hour succeeded, 1 when some failed,
    2 on a usage or configuration error."""
    from .. import config
    from ..stores import open_store

    as_json = "--json" in argv  # known before parsing, so that usage errors obey it too

    def fail(message: str, code: int) -> int:
        if as_json:
            print(json.dumps({"ok": False, "error": message, "exit_code": code}))
        else:
            print(f"gravixd rollup: {message}", file=sys.stderr)
        return code

    parser = build_parser()
    try:
        ns = parser.parse_args(argv)
    except UsageError as exc:
        if not as_json:
            parser.print_usage(sys.stderr)
        return fail(str(exc), 2)
    if ns.since is not None and ns.until is not None and ns.since >= ns.until:
        return fail(
            f"--since must be before --until (--until is exclusive), got --since"
            f" {ns.since.isoformat()} and --until {ns.until.isoformat()}",
            2,
        )
    try:
        cfg = config.load(vars(ns), os.environ).config
        store = open_store(cfg.store_url, **store_options(cfg))
    except (GravixdError, ValueError) as exc:
        return fail(str(exc), 2)

    if cfg.iceberg_catalog_uri:
        return _tables_main(cfg, store, ns, fail)

    async def run() -> RollupReport:
        try:
            return await rollup(
                store,
                streams=tuple(ns.stream or ("facts", "events")),
                since=ns.since,
                until=ns.until,
                target_file_bytes=cfg.rollup_target_file_bytes,
                keep_sources=ns.keep_sources,
                include_current_hour=ns.include_current_hour,
                now=datetime.now(UTC),
            )
        finally:
            await store.aclose()

    try:
        report = trio.run(run)
    except StoreError as exc:  # listing failed: the store itself is unreachable
        return fail(str(exc), 1)
    if ns.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_report(report))
        if report.hours_skipped_open and not ns.include_current_hour:
            print(
                f"hint: {report.hours_skipped_open} open hour(s) skipped: an hour is rolled up"
                " once it has closed; --include-current-hour rolls it up now",
                file=sys.stderr,
            )
    return 0 if report.ok else 1


def format_report(report: RollupReport) -> str:
    lines = [
        f"{'stream':<7} {'dt':<10} {'hour':>4} {'status':<10} {'segments':>8} "
        f"{'rows':>10} {'parts':>5} {'bytes':>12} {'deleted':>7}"
    ]
    for h in report.hours:
        lines.append(
            f"{h.stream:<7} {h.dt:<10} {h.hour:>4} {h.status:<10} {h.segments_rolled:>8} "
            f"{h.rows:>10} {len(h.parts_written):>5} {h.bytes_written:>12} {h.sources_deleted:>7}"
        )
    lines.append(
        f"total: {report.rows} rows, {report.parts_written} parts, {report.bytes_written} bytes, "
        f"{report.sources_deleted} sources deleted, {report.hours_skipped_open} open hours "
        f"skipped, {len(report.errors)} errors"
    )
    lines += [f"error: {e}" for e in report.errors]
    return "\n".join(lines)


def _tables_main(
    cfg: Any, store: Any, ns: argparse.Namespace, fail: Callable[[str, int], int]
) -> int:
    """With a catalog: the Iceberg upkeep (commit in "rollup" mode, compaction, expiry,
    orphans) instead of the Hive-layout rollup, whose deletes would pull files from under
    the tables."""
    import time

    from ..iceberg.catalog import check_settings, settings_from_config
    from .tables import TablesReport, upkeep_tables

    try:
        settings = settings_from_config(cfg)
        check_settings(settings)
    except GravixdError as exc:
        return fail(str(exc), 2)
    # --include-current-hour: plan as if the current hour had closed.
    now = time.time() + (3600 if ns.include_current_hour else 0)

    async def run() -> TablesReport:
        try:
            return await upkeep_tables(
                store,
                settings,
                streams=tuple(ns.stream or ("facts", "events")),
                commit_new=cfg.iceberg_commit == "rollup",
                now_unix_seconds=now,
                retention_seconds=cfg.iceberg_snapshot_retention_seconds,
                target_file_bytes=cfg.rollup_target_file_bytes,
            )
        finally:
            await store.aclose()

    try:
        report = trio.run(run)
    except Exception as exc:  # noqa: BLE001 - the catalog or the store is unreachable
        return fail(f"{type(exc).__name__}: {exc}", 1)
    if ns.json:
        print(json.dumps({"ok": report.ok, "tables": [t.to_dict() for t in report.tables]}))
    else:
        for t in report.tables:
            print(
                f"{t.table}: {t.segments_committed} segments ({t.rows_committed} rows) committed,"
                f" {t.hours_compacted} hours compacted ({t.files_replaced} files into"
                f" {t.files_written}), {t.snapshots_expired} snapshots expired,"
                f" {t.files_removed} files removed" + (f"; error: {t.error}" if t.error else "")
            )
    return 0 if report.ok else 1

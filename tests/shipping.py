"""A gravixd that a real shipper can keep sending to across a restart, and the checks the
shipper tests share: every record in the store, exactly once.

The daemon listens on fixed free ports (a restarted gravixd must be found where the shipper
left it) and seals segments every second, so the test can poll the store for what arrived
instead of guessing from counters that a restart resets. Never a latency bound: the waits
are generous deadlines on a shared box, not measurements.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
from daemon import Daemon, free_port, read_store, wait_for

# How long a test waits for a shipper to deliver everything (a deadline, not a figure):
# the box is shared by many test runs, and a shipper retries on its own schedule.
DELIVERY_TIMEOUT_SECONDS = 180.0


def restartable_gravixd(workdir: Path, toml: str = "", *args: str) -> Daemon:
    """gravixd on a fixed HTTP port (and fixed ports in `toml`), sealing every second.

    `toml` is more configuration (say, a `[[tcp_listeners]]` table with a fixed port)."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "gravixd.toml"
    config.write_text("segment_max_age_seconds = 1.0\n" + toml)
    http = f"127.0.0.1:{free_port()}"
    return Daemon(workdir, "--config", str(config), "--http-listen", http, *args)


def restart(d: Daemon) -> None:
    """SIGTERM (drain: seal and upload), then the same daemon on the same ports and spool."""
    assert d.stop() == 0, d.log_text()[-2000:]
    d.start()


def restart_when(d: Daemon, ready: Callable[[], bool], what: str) -> None:
    """Restarts `d` once `ready()` is true: mid-stream, while the shipper still sends."""
    wait_for(ready, timeout=DELIVERY_TIMEOUT_SECONDS, interval=0.05, what=what)
    restart(d)


def stored_rows(d: Daemon, stream: str) -> list[dict[str, Any]]:
    """Every stored row of `stream`, its `timestamp` in Unix nanoseconds (an int: Python's
    datetime has no nanoseconds)."""
    table = read_store(d.store_dir, stream)
    at = table.schema.get_field_index("timestamp")
    rows: list[dict[str, Any]] = table.set_column(
        at, "timestamp", table.column(at).cast(pa.int64())
    ).to_pylist()
    return rows


def stored_values(d: Daemon, stream: str, key: str) -> set[Any]:
    return set(read_store(d.store_dir, stream).column(key).to_pylist())


def wait_stored(
    d: Daemon,
    stream: str,
    key: str,
    expected: Iterable[str],
    timeout: float = DELIVERY_TIMEOUT_SECONDS,
) -> None:
    """Polls the store until a row with each `expected` value of `key` is in it."""
    wanted = set(expected)

    def arrived() -> bool:
        assert d.proc is not None and d.proc.poll() is None, d.log_text()[-2000:]
        return wanted <= stored_values(d, stream, key)

    try:
        wait_for(arrived, timeout, 0.5, f"{len(wanted)} {stream} stored")
    except AssertionError as timeout:
        missing = wanted - stored_values(d, stream, key)
        raise AssertionError(
            f"{len(missing)} of {len(wanted)} never stored: {sorted(missing)[:10]}"
        ) from timeout


def assert_once(rows: Sequence[dict[str, Any]], key: str, expected: Iterable[str]) -> None:
    """Every expected `key` value is in exactly one row, and no row is unexpected."""
    wanted = set(expected)
    counts = Counter(row[key] for row in rows)
    duplicated = {value: n for value, n in counts.items() if n > 1}
    assert not duplicated, f"stored more than once: {duplicated}"
    missing = wanted - set(counts)
    assert not missing, f"{len(missing)} never stored: {sorted(missing)[:10]}"
    extra = set(counts) - wanted
    assert not extra, f"unexpected rows: {sorted(extra)[:10]}"


@contextmanager
def paced(
    send: Callable[[Any], None], items: Sequence[Any], every: int, pause: float
) -> Iterator[None]:
    """Sends `items` from a thread, `every` at a time with `pause` seconds between, so that a
    restart in the body of the `with` falls while they are still flowing; joins on exit."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            for start in range(0, len(items), every):
                send(items[start : start + every])
                time.sleep(pause)
        except BaseException as exc:  # reported in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=run, name="paced-sender", daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join(DELIVERY_TIMEOUT_SECONDS)
    assert not thread.is_alive(), "the sender did not finish"
    if errors:
        raise errors[0]

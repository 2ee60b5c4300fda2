"""Real syslog-ng and rsyslog ship to a real gravixd with the recipes of docs/shippers.md.

Each test starts gravixd, then its own shipper in the foreground on loopback (own config,
pid, persist and work files under tmp_path; no system log source, never the machine's
logger), feeds it RFC 5424 lines of every syslog severity in several RFC 3339 offsets (and,
for rsyslog, the lines its recipe must repair), restarts gravixd while lines are still
flowing, waits until every line is in the store, stops the shipper by its PID, stops gravixd
(SIGTERM: seal and upload) and reads the stored Arrow objects: every event is there exactly
once, with its severity mapped and its time equal to the line's. The shipper configurations
are the blocks of docs/shippers.md themselves (only ports replaced), so the recipes cannot
rot.

syslog-ng (with syslog-ng-mod-http) is installed by scripts/install-tools; rsyslog conflicts
with it as a Debian package, so install-tools unpacks its .deb into RSYSLOG_ROOT and the test
runs rsyslogd from there with its own module path.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from daemon import Daemon, free_port, wait_for
from shipping import (
    DELIVERY_TIMEOUT_SECONDS,
    assert_once,
    paced,
    restart_when,
    restartable_gravixd,
    stored_rows,
    wait_stored,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "shippers.md"
RSYSLOG_ROOT = Path("/opt/gravixd-tools/rsyslog")


def _installed(package: str) -> bool:
    """Whether dpkg has `package` installed (the http() module's path holds syslog-ng's version)."""
    query = ["dpkg-query", "-W", "-f=${Status}", package]
    status = subprocess.run(query, capture_output=True, text=True, check=False).stdout
    return status == "install ok installed"


_INSTALL_HINT = "run `bash scripts/install-tools` (as root), which installs it"

# Syslog severities by number (RFC 5424), as syslog-ng's ${LEVEL} and rsyslog's
# syslogseverity-text name them, and the severity gravixd stores for each (DESIGN §2).
SEVERITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
STORED = {
    "emerg": "FATAL",
    "alert": "FATAL",
    "crit": "FATAL",
    "err": "ERROR",
    "warning": "WARN",
    "notice": "INFO",
    "info": "INFO",
    "debug": "DEBUG",
}
OFFSETS = ("+02:00", "-05:30", "Z", "+05:45", "-09:00", "+14:00", "+00:00", "-03:30")
FACILITIES = ("local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
UNKNOWN_SERVICE = "unknown_service"  # the recipes' service for a line without an app name
# Lines streamed through each shipper while gravixd restarts (the rsyslog run lost
# 580 of 988 without the action queue), sent 20 at a time every 50 ms: about 2.5 s of flow.
STREAMED = 1000


@dataclass(frozen=True)
class Line:
    text: bytes  # the syslog line fed to the shipper
    message: str  # unique: how the stored row is found
    service: str
    severity: str  # as gravixd stores it
    timestamp_ns: int | None  # None: the line's format carries no year or offset
    facility: str = ""
    host: str = ""


def _ns(stamp: str) -> int:
    return (dt.datetime.fromisoformat(stamp) - _EPOCH) // dt.timedelta(microseconds=1) * 1000


def syslog_lines(run: str, count: int = 64) -> list[Line]:
    """Every severity in every offset (the first 64 lines cover them all), each line with its
    own time and message."""
    lines = []
    base = dt.datetime(2026, 12, 1, 7, 40, 0)
    for n in range(count):
        i = n // len(OFFSETS) % len(SEVERITIES)
        name, offset = SEVERITIES[i], OFFSETS[n % len(OFFSETS)]
        micros = (n * 104_729) % 1_000_000
        local = base + dt.timedelta(minutes=n, microseconds=micros)
        stamp = local.isoformat(timespec="microseconds") + offset
        facility = FACILITIES[n % len(FACILITIES)]
        pri = (16 + FACILITIES.index(facility)) * 8 + i
        service = f"app{n % 3}"
        message = f'{run} line {n}: {name} "quoted" back\\slash'
        lines.append(
            Line(
                text=f"<{pri}>1 {stamp} host{n % 2} {service} {1000 + n} - - {message}\n".encode(),
                host=f"host{n % 2}",
                message=message,
                service=service,
                severity=STORED[name],
                timestamp_ns=_ns(stamp),
                facility=facility,
            )
        )
    return lines


def nameless_line(run: str) -> Line:
    """RFC 5424's nil APP-NAME `-`: stored under the recipes' fallback service."""
    stamp = "2026-12-01T07:39:59.000001+01:00"
    message = f"{run} no app name"
    return Line(
        text=f"<11>1 {stamp} host0 - - - - {message}\n".encode(),
        message=message,
        service=UNKNOWN_SERVICE,
        severity="ERROR",
        timestamp_ns=_ns(stamp),
        facility="user",
        host="host0",
    )


def repaired_lines(run: str) -> list[Line]:
    """Lines rsyslog's recipe must repair: an RFC 3164 message (stored without the space
    after its tag), bytes that are not UTF-8 (stored as spaces) and a 20,000-byte message
    (past rsyslog's 8 KiB default, stored whole)."""
    stamp = "2026-12-01T07:41:00.5+02:00"
    long_message = f"{run} long " + "x" * 20_000
    return [
        Line(
            text=f"<14>Dec  1 07:40:00 host0 legacy[42]: {run} rfc3164 text\n".encode(),
            message=f"{run} rfc3164 text",
            service="legacy",
            severity="INFO",
            timestamp_ns=None,  # RFC 3164 has no year and no offset
        ),
        Line(
            text=f"<14>1 {stamp} host0 app0 1 - - {run} not".encode() + b"\xff\xfe utf-8\n",
            message=f"{run} not   utf-8",
            service="app0",
            severity="INFO",
            timestamp_ns=_ns(stamp),
        ),
        Line(
            text=f"<14>1 {stamp} host0 app0 2 - - {long_message}\n".encode(),
            message=long_message,
            service="app0",
            severity="INFO",
            timestamp_ns=_ns(stamp),
        ),
    ]


def recipe(name: str) -> str:
    """The fenced block after `<!-- recipe: NAME -->` in docs/shippers.md."""
    text = DOCS.read_text()
    match = re.search(rf"<!-- recipe: {re.escape(name)} -->\n```[a-z]*\n(.*?)```", text, re.S)
    assert match, f"docs/shippers.md has no recipe block `{name}`"
    return match.group(1)


def substitute(text: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        assert old in text, f"expected `{old}` in the recipe:\n{text}"
        text = text.replace(old, new)
    return text


@contextmanager
def foreground(cmd: list[str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Runs a shipper in the foreground; stops it by the PID started here."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_listening(port: int, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"shipper exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"shipper not listening on {port} after 30 s:\n{log_path.read_text()}")


@contextmanager
def streaming(port: int, lines: list[Line]) -> Iterator[None]:
    """Feeds `lines` to the shipper on one connection, paced (see STREAMED)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:

        def send(chunk: list[Line]) -> None:
            sock.sendall(b"".join(line.text for line in chunk))

        with paced(send, lines, every=20, pause=0.05):
            yield


def gravixd(tmp_path: Path) -> Daemon:
    """gravixd with the docs' events ndjson listener (on a fixed free port, so that a
    restarted gravixd is where the shipper left it) as its only TCP listener."""
    events = substitute(recipe("gravixd-toml"), {"127.0.0.1:5171": f"127.0.0.1:{free_port()}"})
    return restartable_gravixd(tmp_path / "gravixd", events, "--tcp-listen", "")


def accepted(d: Daemon, source: str) -> float:
    return d.metric("ingestion_events_accepted_total", stream="events", source=source)


def http_codes(d: Daemon) -> dict[str, float]:
    """`/v1/events` requests by status code."""
    return {
        dict(labels)["code"]: value
        for (name, labels), value in d.metrics().items()
        if name == "ingestion_requests_total" and ("endpoint", "/v1/events") in labels
    }


def ship_across_restart(
    d: Daemon,
    shipper: subprocess.Popen[bytes],
    port: int,
    lines: list[Line],
    source: str,
    timeout: float = DELIVERY_TIMEOUT_SECONDS,
) -> None:
    """Streams `lines` into the shipper, restarts gravixd once some arrived, and waits up to
    `timeout` seconds after the restart until every line is stored (the shipper must not
    have died meanwhile)."""
    with streaming(port, lines):
        restart_when(d, lambda: accepted(d, source) >= 100, f"100 events over {source}")
    assert shipper.poll() is None, f"the shipper exited with {shipper.returncode}"
    wait_stored(d, "events", "message", [line.message for line in lines], timeout)


def ship_across_raw_tcp_restart(
    d: Daemon, shipper: subprocess.Popen[bytes], port: int, lines: list[Line]
) -> None:
    """Like ship_across_restart, for raw TCP, which has no acknowledgement: a line the
    shipper writes while gravixd drains is in no one's hands (docs/shippers.md says so).
    So gravixd stops once it has read the first lines, and the rest flow into the shipper
    while gravixd is down and while it starts again: the shipper must notice the closed
    connection, hold what comes meanwhile and resend it to the new gravixd."""
    first, rest = lines[: len(lines) // 5], lines[len(lines) // 5 :]
    with streaming(port, first):
        pass
    wait_for(
        lambda: accepted(d, "tcp") >= len(first),
        timeout=DELIVERY_TIMEOUT_SECONDS,
        what=f"the first {len(first)} lines accepted",
    )
    assert d.stop() == 0, d.log_text()[-2000:]
    with streaming(port, rest):
        d.start()
    assert shipper.poll() is None, f"the shipper exited with {shipper.returncode}"
    wait_stored(d, "events", "message", [line.message for line in lines])


def assert_stored_once(d: Daemon, lines: list[Line], *, with_attributes: bool) -> None:
    rows = stored_rows(d, "events")
    assert_once(rows, "message", [line.message for line in lines])
    by_message = {row["message"]: row for row in rows}
    for line in lines:
        row = by_message[line.message]
        got = (row["service"], row["kind"], row["severity"])
        want = (line.service, "syslog", line.severity)
        assert got == want, f"{line.text[:200]!r}: stored {got}, expected {want}"
        if line.timestamp_ns is not None:
            assert row["timestamp"] == line.timestamp_ns, (line.text[:200], row["timestamp"])
        if with_attributes:
            attributes = dict(row["attributes"])
            assert attributes.get("facility") == line.facility, (line.text, attributes)
            assert attributes.get("host") == line.host, (line.text, attributes)


# --- syslog-ng ---------------------------------------------------------------------------

# How long the http() test waits for everything after the restart: shorter than syslog-ng's
# default time-reopen (60 s), which a failed batch waits out, and 20x what the recipe's 1 s
# needs here. It tells the recipe's setting from the default, it measures no speed.
SYSLOG_NG_DEADLINE_SECONDS = 50.0


def _syslog_ng() -> str:
    path = shutil.which("syslog-ng")
    assert path, f"syslog-ng is not installed: {_INSTALL_HINT}"
    assert _installed("syslog-ng-mod-http"), f"syslog-ng-mod-http is not installed: {_INSTALL_HINT}"
    return path


def _run_syslog_ng(tmp_path: Path, destination: str, listen_port: int) -> list[str]:
    name = re.search(r"destination (\w+)", destination)
    assert name, destination
    conf = tmp_path / "syslog-ng.conf"
    # Only a loopback network() source of this test: no system() or internal() source.
    conf.write_text(
        "@version: 3.38\n"
        # keep-hostname(yes): ${HOST} is the host the line names, not the relay's peer.
        "options { stats-freq(0); keep-hostname(yes); };\n"
        f'source s_test {{ network(transport("tcp") ip("127.0.0.1") port({listen_port})'
        " flags(syslog-protocol)); };\n"
        f"{destination}\n"
        f"log {{ source(s_test); destination({name.group(1)}); }};\n"
    )
    return [
        _syslog_ng(),
        "-F",
        "-e",
        "-f",
        str(conf),
        f"--persist-file={tmp_path / 'syslog-ng.persist'}",
        f"--pidfile={tmp_path / 'syslog-ng.pid'}",
        f"--control={tmp_path / 'syslog-ng.ctl'}",
    ]


def test_syslog_ng_http_delivers_everything_across_a_gravixd_restart(tmp_path: Path) -> None:
    """The http() recipe: batched NDJSON with `${LEVEL}` names, `${ISODATE}` times and an
    explicit Content-Type. gravixd restarts mid-stream: with the recipe's short
    `time-reopen()` syslog-ng resends the batches it could not deliver (its 60 s default
    would outlast this test's deadline), and every line is stored exactly once. A line
    without an app name is stored under the fallback service, not refused."""
    lines = [nameless_line("sng-http"), *syslog_lines("sng-http", STREAMED)]
    with gravixd(tmp_path) as d:
        destination = substitute(
            recipe("syslog-ng-http"), {"127.0.0.1:8088": f"127.0.0.1:{d.http_port}"}
        )
        port = free_port()
        log_path = tmp_path / "syslog-ng.log"
        with foreground(_run_syslog_ng(tmp_path, destination, port), log_path) as p:
            wait_listening(port, p, log_path)
            ship_across_restart(d, p, port, lines, "http", SYSLOG_NG_DEADLINE_SECONDS)
        # Every request the restarted gravixd saw was taken: no 415, no 400 to retry forever.
        assert set(http_codes(d)) <= {"202", "503"}, http_codes(d)
        assert d.stop() == 0
    assert_stored_once(d, lines, with_attributes=True)


def test_syslog_ng_network_to_raw_tcp_lands_once_with_severity_and_time(tmp_path: Path) -> None:
    """The network() recipe: one JSON object a line to the events ndjson listener, the
    nameless line under the fallback service. No restart here: raw TCP has no
    acknowledgement, so lines written as gravixd stops can be lost (docs/shippers.md says
    so and points at http())."""
    lines = [nameless_line("sng-tcp"), *syslog_lines("sng-tcp")]
    with gravixd(tmp_path) as d:
        (events_port,) = d.tcp_ports
        destination = substitute(
            recipe("syslog-ng-network"), {"port(5171)": f"port({events_port})"}
        )
        port = free_port()
        log_path = tmp_path / "syslog-ng.log"
        with foreground(_run_syslog_ng(tmp_path, destination, port), log_path) as p:
            wait_listening(port, p, log_path)
            with streaming(port, lines):
                pass
            wait_stored(d, "events", "message", [line.message for line in lines])
        assert d.stop() == 0
    assert_stored_once(d, lines, with_attributes=True)


# --- rsyslog -----------------------------------------------------------------------------


def _rsyslogd() -> tuple[Path, Path]:
    binary = RSYSLOG_ROOT / "usr" / "sbin" / "rsyslogd"
    assert binary.exists(), f"rsyslog is not unpacked in {RSYSLOG_ROOT}: {_INSTALL_HINT}"
    modules = next(RSYSLOG_ROOT.glob("usr/lib/*/rsyslog/imtcp.so"), None)
    assert modules is not None, f"rsyslog's modules are missing under {RSYSLOG_ROOT}"
    return binary, modules.parent


def test_rsyslog_omfwd_delivers_everything_across_a_gravixd_restart(tmp_path: Path) -> None:
    """The omfwd recipe: a jsonf list template with `syslogseverity-text` and the reported
    time as RFC 3339 (its own offset and sub-second digits), one object a line over TCP.
    gravixd restarts mid-stream: the recipe's action queue holds and resends what it could
    not deliver, and every line is stored exactly once. The lines the recipe repairs (RFC
    3164's leading space, bytes that are not UTF-8, a line past 8 KiB, a nil app name) are
    stored as the user reads them."""
    binary, modules = _rsyslogd()
    lines = [
        nameless_line("rsyslog"),
        *repaired_lines("rsyslog"),
        *syslog_lines("rsyslog", STREAMED),
    ]
    with gravixd(tmp_path) as d:
        (events_port,) = d.tcp_ports
        recipe_text = substitute(recipe("rsyslog-omfwd"), {'port="5171"': f'port="{events_port}"'})
        port = free_port()
        workdir = tmp_path / "rsyslog-work"
        workdir.mkdir()
        conf = tmp_path / "rsyslog.conf"
        # The recipe first (its global() must precede any input), then only a loopback
        # imtcp input of this test bound to its ruleset: no imuxsock/imklog, no system log.
        conf.write_text(
            f"{recipe_text}\n"
            f'global(workDirectory="{workdir}")\n'
            'module(load="imtcp")\n'
            f'input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="gravixd")\n'
        )
        cmd = [str(binary), "-n", "-f", str(conf), "-i", str(tmp_path / "rsyslog.pid")]
        cmd += ["-M", str(modules)]
        log_path = tmp_path / "rsyslog.log"
        with foreground(cmd, log_path) as p:
            wait_listening(port, p, log_path)
            ship_across_raw_tcp_restart(d, p, port, lines)
        assert d.stop() == 0
    assert_stored_once(d, lines, with_attributes=False)

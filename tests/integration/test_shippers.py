"""Real syslog-ng and rsyslog ship to a real gravixd with the recipes of docs/shippers.md.

Each test starts gravixd, then its own shipper in the foreground on loopback (own config,
pid, persist and work files under tmp_path; no system log source, never the machine's
logger), feeds it one RFC 5424 line of every syslog severity in several RFC 3339 offsets,
waits until gravixd has accepted them, stops the shipper by its PID, stops gravixd (SIGTERM:
seal and upload) and reads the stored Arrow objects: every event is there exactly once, with
its severity mapped and its time equal to the line's. The shipper configurations are the
blocks of docs/shippers.md themselves (only ports replaced), so the recipes cannot rot.

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
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from daemon import Daemon, free_port, read_store, wait_for

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


@dataclass(frozen=True)
class Line:
    text: str  # the RFC 5424 line fed to the shipper
    message: str  # unique: how the stored row is found
    service: str
    severity: str  # as gravixd stores it
    timestamp_ns: int
    facility: str
    host: str


def syslog_lines(run: str) -> list[Line]:
    """Every severity in every offset: 64 lines, each with its own time and message."""
    lines = []
    base = dt.datetime(2026, 12, 1, 7, 40, 0)
    for i, name in enumerate(SEVERITIES):
        for j, offset in enumerate(OFFSETS):
            n = i * len(OFFSETS) + j
            micros = (n * 104_729) % 1_000_000
            local = base + dt.timedelta(minutes=n, microseconds=micros)
            stamp = local.isoformat(timespec="microseconds") + offset
            facility = FACILITIES[n % len(FACILITIES)]
            pri = (16 + FACILITIES.index(facility)) * 8 + i
            service = f"app{n % 3}"
            message = f'{run} line {n}: {name} "quoted" back\\slash'
            when = dt.datetime.fromisoformat(stamp)
            lines.append(
                Line(
                    text=f"<{pri}>1 {stamp} host{n % 2} {service} {1000 + n} - - {message}\n",
                    host=f"host{n % 2}",
                    message=message,
                    service=service,
                    severity=STORED[name],
                    timestamp_ns=(when - _EPOCH) // dt.timedelta(microseconds=1) * 1000,
                    facility=facility,
                )
            )
    return lines


def bad_line(run: str) -> str:
    """A line without an APP-NAME: the event has an empty `service`, which gravixd refuses."""
    return f"<11>1 2026-12-01T07:39:59.000001+01:00 host0 - - - - {run} no app name\n"


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
def foreground(cmd: list[str], log_path: Path, what: str) -> Iterator[subprocess.Popen[bytes]]:
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


def feed(port: int, lines: list[str]) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall("".join(lines).encode())


def gravixd(tmp_path: Path) -> Daemon:
    """gravixd with the docs' events ndjson listener (on port 0) as its only TCP listener."""
    toml = tmp_path / "gravixd.toml"
    toml.write_text(substitute(recipe("gravixd-toml"), {"127.0.0.1:5171": "127.0.0.1:0"}))
    return Daemon(tmp_path / "gravixd", "--config", str(toml), "--tcp-listen", "")


def accepted(d: Daemon, source: str) -> float:
    return d.metric("ingestion_events_accepted_total", stream="events", source=source)


def rejected(d: Daemon, source: str) -> float:
    return sum(
        value
        for (name, labels), value in d.metrics().items()
        if name == "ingestion_events_rejected_total"
        and ("stream", "events") in labels
        and ("source", source) in labels
    )


def http_codes(d: Daemon) -> dict[str, float]:
    """`/v1/events` requests by status code."""
    return {
        dict(labels)["code"]: value
        for (name, labels), value in d.metrics().items()
        if name == "ingestion_requests_total" and ("endpoint", "/v1/events") in labels
    }


def deliver(
    d: Daemon, source: str, expected: int, proc: subprocess.Popen[bytes], rejections: int = 0
) -> None:
    """Waits until gravixd accepted `expected` events (generous: the box is shared); fails
    at once, with gravixd's words, when it rejected more than the `rejections` expected."""

    def done() -> bool:
        assert proc.poll() is None, f"the shipper exited with {proc.returncode}"
        if rejected(d, source) > rejections:
            said = [e for e in d.log_events() if e.get("level") in ("warning", "error")]
            raise AssertionError(
                f"gravixd rejected events; HTTP answers {http_codes(d)}, logs {said[:5]}"
            )
        return accepted(d, source) >= expected

    wait_for(done, timeout=120, interval=0.2, what=f"{expected} events accepted over {source}")


def assert_stored_once(store_dir: Path, lines: list[Line], *, with_attributes: bool) -> None:
    table = read_store(store_dir, "events")
    rows = table.to_pylist()
    counts = Counter(row["message"] for row in rows)
    duplicated = {m: n for m, n in counts.items() if n > 1}
    assert not duplicated, f"events stored more than once: {duplicated}"
    by_message = {row["message"]: row for row in rows}
    missing = [line.message for line in lines if line.message not in by_message]
    assert not missing, f"events not stored: {missing}"
    assert len(rows) == len(lines), (
        f"unexpected extra rows: {set(by_message) - {x.message for x in lines}}"
    )
    for line in lines:
        row = by_message[line.message]
        stored_ns = (row["timestamp"] - _EPOCH) // dt.timedelta(microseconds=1) * 1000
        got = (row["service"], row["kind"], row["severity"], stored_ns)
        want = (line.service, "syslog", line.severity, line.timestamp_ns)
        assert got == want, f"{line.text!r}: stored {got}, expected {want}"
        if with_attributes:
            attributes = dict(row["attributes"])
            assert attributes.get("facility") == line.facility, (line.text, attributes)
            assert attributes.get("host") == line.host, (line.text, attributes)


# --- syslog-ng ---------------------------------------------------------------------------


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


def test_syslog_ng_http_batches_land_once_with_severity_and_time(tmp_path: Path) -> None:
    """The http() recipe: batched NDJSON with `${LEVEL}` names, `${ISODATE}` times and an
    explicit Content-Type. A line without an app name (an invalid event) comes first, in the
    same batch as good ones: `?invalid=skip` stores the rest instead of a 400 that syslog-ng
    would retry forever."""
    lines = syslog_lines("sng-http")
    with gravixd(tmp_path) as d:
        destination = substitute(
            recipe("syslog-ng-http"), {"127.0.0.1:8088": f"127.0.0.1:{d.http_port}"}
        )
        port = free_port()
        log_path = tmp_path / "syslog-ng.log"
        with foreground(_run_syslog_ng(tmp_path, destination, port), log_path, "syslog-ng") as p:
            wait_listening(port, p, log_path)
            feed(port, [bad_line("sng-http"), *(line.text for line in lines)])
            deliver(d, "http", len(lines), p, rejections=1)
        assert rejected(d, "http") == 1
        # Every request was taken: no 415 (Content-Type) and no 400 for syslog-ng to retry.
        assert set(http_codes(d)) == {"202"}, http_codes(d)
        assert d.stop() == 0
    assert_stored_once(d.store_dir, lines, with_attributes=True)


def test_syslog_ng_network_to_raw_tcp_lands_once_with_severity_and_time(tmp_path: Path) -> None:
    """The network() recipe: one JSON object a line to the events ndjson listener. The
    invalid line is skipped and counted; the stream goes on."""
    lines = syslog_lines("sng-tcp")
    with gravixd(tmp_path) as d:
        (events_port,) = d.tcp_ports
        destination = substitute(
            recipe("syslog-ng-network"), {"port(5171)": f"port({events_port})"}
        )
        port = free_port()
        log_path = tmp_path / "syslog-ng.log"
        with foreground(_run_syslog_ng(tmp_path, destination, port), log_path, "syslog-ng") as p:
            wait_listening(port, p, log_path)
            feed(port, [bad_line("sng-tcp"), *(line.text for line in lines)])
            deliver(d, "tcp", len(lines), p, rejections=1)
        assert rejected(d, "tcp") == 1
        assert d.stop() == 0
    assert_stored_once(d.store_dir, lines, with_attributes=True)


# --- rsyslog -----------------------------------------------------------------------------


def _rsyslogd() -> tuple[Path, Path]:
    binary = RSYSLOG_ROOT / "usr" / "sbin" / "rsyslogd"
    assert binary.exists(), f"rsyslog is not unpacked in {RSYSLOG_ROOT}: {_INSTALL_HINT}"
    modules = next(RSYSLOG_ROOT.glob("usr/lib/*/rsyslog/imtcp.so"), None)
    assert modules is not None, f"rsyslog's modules are missing under {RSYSLOG_ROOT}"
    return binary, modules.parent


def test_rsyslog_omfwd_to_raw_tcp_lands_once_with_severity_and_time(tmp_path: Path) -> None:
    """The omfwd recipe: a jsonf list template with `syslogseverity-text` and the reported
    time as RFC 3339 (its own offset and sub-second digits), one object a line over TCP."""
    binary, modules = _rsyslogd()
    lines = syslog_lines("rsyslog")
    with gravixd(tmp_path) as d:
        (events_port,) = d.tcp_ports
        action = substitute(recipe("rsyslog-omfwd"), {'port="5171"': f'port="{events_port}"'})
        port = free_port()
        workdir = tmp_path / "rsyslog-work"
        workdir.mkdir()
        conf = tmp_path / "rsyslog.conf"
        # Only a loopback imtcp input of this test: no imuxsock/imklog, no system log.
        conf.write_text(
            f'global(workDirectory="{workdir}")\n'
            'module(load="imtcp")\n'
            f'input(type="imtcp" address="127.0.0.1" port="{port}")\n'
            f"{action}\n"
        )
        cmd = [str(binary), "-n", "-f", str(conf), "-i", str(tmp_path / "rsyslog.pid")]
        cmd += ["-M", str(modules)]
        log_path = tmp_path / "rsyslog.log"
        with foreground(cmd, log_path, "rsyslogd") as p:
            wait_listening(port, p, log_path)
            feed(port, [line.text for line in lines])
            deliver(d, "tcp", len(lines), p)
        assert d.stop() == 0
    assert_stored_once(d.store_dir, lines, with_attributes=False)

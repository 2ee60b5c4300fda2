"""The first hour of a new user with the `gravixd` command line (issue 12 §6): what each
subcommand prints when things go wrong, what its --help lists, and the text log format."""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio
from rollup_data import arrow_file_bytes, facts_table, segment_id, segment_key

from gravixd import __version__, cli, emit, rollup
from gravixd.logs import setup_logging

REPO = Path(__file__).resolve().parents[2]


def gravixd(*args: str, stdout: int = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    """`python -m gravixd ARGS` with this checkout's code and no GRAVIXD_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRAVIXD_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "gravixd", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def no_gravixd_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("GRAVIXD_")]:
        monkeypatch.delenv(name)


# --- a closed pipe ---------------------------------------------------------------------


def test_config_into_a_closed_pipe_exits_quietly() -> None:
    """`gravixd config --format json | head -c 100`: no BrokenPipeError traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written: EPIPE for sure
    try:
        result = gravixd("config", "--format", "json", stdout=write_end)
    finally:
        os.close(write_end)
    assert result.stderr == ""
    assert result.returncode == 141  # 128 + SIGPIPE, as a CLI killed by SIGPIPE exits


# --- emit: what happened, in the user's words ------------------------------------------


@pytest.mark.parametrize("transport", ["--tcp", "--url"])
def test_emit_to_a_closed_port_says_connection_refused_and_no_negative_rate(
    transport: str,
) -> None:
    port = closed_port()
    target = f"127.0.0.1:{port}" if transport == "--tcp" else f"http://127.0.0.1:{port}"
    result = gravixd("emit", transport, target, "--count", "10", "--json")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["events_per_second"] == 0
    assert (report["sent"], report["failed"]) == (0, 10)
    assert list(report["errors"]) == [
        f"connection refused by 127.0.0.1:{port} (is gravixd listening there?)"
    ]
    text = gravixd("emit", transport, target, "--count", "10").stdout
    assert re.search(r"^elapsed +[0-9.]+ s, 0 events/s$", text, re.M), text


async def test_emit_over_http_when_the_server_closes_before_answering() -> None:
    """What a SIGTERM'd daemon looks like to emit: said plainly, no h11 internals
    (`can't handle event type ConnectionClosed when role=SERVER`)."""

    async def hang_up(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, hang_up, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        args = cli.build_parser().parse_args(
            ["emit", "--url", f"http://127.0.0.1:{port}", "--count", "10", "--concurrency", "1"]
        )
        plan = emit.plan_from_args(args)
        stats = emit.Stats()
        await emit.run(plan, stats)
        nursery.cancel_scope.cancel()
    assert stats.failed == 10 and stats.acknowledged == 0
    assert list(stats.errors) == [
        f"the server at 127.0.0.1:{port} closed the connection before answering"
        " (the events may or may not be stored)"
    ]


async def test_emit_over_tcp_when_the_server_resets_says_so() -> None:
    async def reset(stream: trio.SocketStream) -> None:
        # SO_LINGER 0: close with a RST, as a killed peer does.
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, reset, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        args = cli.build_parser().parse_args(
            ["emit", "--tcp", f"127.0.0.1:{port}", "--count", "100000", "--concurrency", "1"]
        )
        stats = emit.Stats()
        await emit.run(emit.plan_from_args(args), stats)
        nursery.cancel_scope.cancel()
    (error,) = stats.errors
    assert error in (
        f"the server at 127.0.0.1:{port} reset the connection",
        f"the server at 127.0.0.1:{port} closed the connection",
    )
    report = emit.report(emit.plan_from_args(args), stats)
    assert report["events_per_second"] >= 0


# --- --help lists what each subcommand uses, with defaults -----------------------------


def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        if argv[0] == "rollup":
            rollup.main(argv[1:])
        else:
            cli.build_parser().parse_args(argv)
    assert exit_info.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


def test_emit_help_has_every_option_explained_with_its_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = _help(["emit", "--help"], capsys)
    assert "--stream {facts,events} what to send" in text
    for flag, default in (
        ("--batch-size", "(default 100)"),
        ("--concurrency", "(default 4)"),
        ("--timeout", "(default 30)"),
        ("--duration", "(default: no limit"),
    ):
        after = text.split(f"{flag} ", 2)[-1]
        assert default in after.split(" --")[0], (flag, after[:200])


@pytest.mark.parametrize("argv", [["config", "--help"], ["spool", "check", "--help"]])
def test_format_options_have_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(argv, capsys)
    assert "--format {text,json} a " in text


def test_spool_check_help_lists_only_what_it_uses(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(["spool", "check", "--help"], capsys)
    assert "--spool-dir" in text and "--config" in text
    for serve_only in ("--http-listen", "--tls-cert-file", "--max-body-bytes", "--store-url"):
        assert serve_only not in text


def test_rollup_help_lists_only_what_it_uses(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(["rollup", "--help"], capsys)
    for used in ("--store-url", "--s3-endpoint-url", "--rollup-target-file-bytes", "--config"):
        assert used in text
    for serve_only in ("--http-listen", "--tls-cert-file", "--spool-dir", "--max-connections"):
        assert serve_only not in text


def test_serve_help_still_lists_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(["serve", "--help"], capsys)
    for flag in ("--http-listen", "--tls-cert-file", "--spool-dir", "--store-url"):
        assert flag in text


# --- text logs keep the structured fields ----------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


@pytest.mark.usefixtures("restore_logging")
def test_text_log_format_keeps_structured_fields(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info", "text")
    logging.getLogger("gravixd").info(
        "gravixd serving",
        extra={
            "event": "serving",
            "http_port": 8088,
            "tcp_ports": [5170, 5171],
            "store": "file://./gravixd data",
            "deadline_hit": False,
        },
    )
    line = capsys.readouterr().err.strip()
    assert line.endswith(
        "INFO gravixd: gravixd serving event=serving http_port=8088 tcp_ports=[5170,5171]"
        ' store="file://./gravixd data" deadline_hit=false'
    ), line


# --- rollup: hints and errors ----------------------------------------------------------


def _open_hour_segment(store_dir: Path) -> None:
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    path = store_dir / segment_key("facts", hour, segment_id(hour, 1))
    path.parent.mkdir(parents=True)
    path.write_bytes(arrow_file_bytes(facts_table(hour, 0, 5)))


@pytest.mark.usefixtures("no_gravixd_env")
def test_rollup_of_only_open_hours_hints_at_include_current_hour(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _open_hour_segment(tmp_path)
    assert rollup.main(["--store-url", f"file://{tmp_path}"]) == 0
    captured = capsys.readouterr()
    assert "0 rows" in captured.out and "1 open hours skipped" in captured.out
    assert "--include-current-hour" in captured.err


@pytest.mark.usefixtures("no_gravixd_env")
def test_rollup_since_after_until_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--store-url", f"file://{tmp_path}", "--since", "2026-12-02", "--until", "2026-12-01"]
    assert rollup.main(argv) == 2
    assert "--since must be before --until" in capsys.readouterr().err


@pytest.mark.usefixtures("no_gravixd_env")
@pytest.mark.parametrize(
    ("argv", "code", "words"),
    [
        (["--since", "2026-12-02", "--until", "2026-12-01"], 2, "--since must be before"),
        (["--store-url", "gopher://x"], 2, "gopher://x"),
        (["--no-such-flag"], 2, "unrecognized arguments: --no-such-flag"),
    ],
)
def test_rollup_json_failures_are_json(
    argv: list[str], code: int, words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert rollup.main([*argv, "--json"]) == code
    captured = capsys.readouterr()
    error = json.loads(captured.out)
    assert (error["ok"], error["exit_code"]) == (False, code)
    assert words in error["error"]
    assert captured.err == ""


# --- python -m gravixd from the clone's parent -----------------------------------------


def test_python_m_gravixd_runs_from_the_clone_parent_directory(tmp_path: Path) -> None:
    """A clone named `gravixd`, run from the folder that holds it: Python takes the clone
    for a namespace package `gravixd`; the clone's __main__.py repairs that."""
    (tmp_path / "gravixd").symlink_to(REPO, target_is_directory=True)
    env = {
        k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("GRAVIXD_")
    }
    result = subprocess.run(
        [sys.executable, "-m", "gravixd", "--version"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"gravixd {__version__}"


@pytest.mark.parametrize(
    ("argv", "usage", "suggestion"),
    [
        (["serve", "--http-listn", "x"], "gravixd serve", "did you mean --http-listen?"),
        (["spool", "check", "--spool-dri", "x"], "gravixd spool check", "--spool-dir?"),
        (["emit", "--tcpp", "x"], "gravixd emit", "did you mean --tcp?"),
    ],
)
def test_a_mistyped_flag_gets_its_subcommand_usage_and_a_suggestion(
    argv: list[str], usage: str, suggestion: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A typo in a flag names the flag meant (as config errors do) and shows the usage of
    the subcommand, not the top-level one that lists no flags at all."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: {usage} ")
    assert f"unrecognized arguments: {' '.join(argv[-2:])}" in err
    assert suggestion in err

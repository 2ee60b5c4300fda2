"""The shell examples of README.md ("Sending events") and docs/emit-and-tcp.md run as written
against a real daemon: curl, bash's /dev/tcp and `gravixd emit`, in an empty directory (the
files they read, they make: a fresh machine has no others). Only the ports
(the docs' 8088/5170/5171/5172/9108 become the daemon's), a few counts and durations (so that
the run stays short) and the one line that follows a log forever are changed. Each block is
one bash script under `set -e -o pipefail`; `# -> STATUS BODY` comments in a block are what
its output must hold; and afterwards the daemon must have refused nothing but the documented
bad payload, so an example that quietly gets a 4xx fails here. Also: every gravixd TOML
example of the docs loads, and none installs gravixd from the package index."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
from daemon import Daemon, wait_for

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
EMIT_AND_TCP = ROOT / "docs" / "emit-and-tcp.md"

_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
# Shorter runs of the same commands; the options stay as documented.
_SHORTER = {
    "--duration 30": "--duration 1",
    "--duration 60": "--duration 1",
    "--count 1000000": "--count 3000",
    "--count 100000": "--count 3000",
    "--count 50000": "--count 3000",
}
# Follows a log file forever: the only example that cannot end by itself.
_ENDLESS = re.compile(r"^tail -F .*$", re.MULTILINE)
_EXPECTED = re.compile(r"^# -> (\d{3}) (\{.*\})$", re.MULTILINE)


def blocks(path: Path, language: str, section: str | None = None) -> list[str]:
    text = path.read_text()
    if section is not None:
        start = text.index(section)
        end = text.find("\n## ", start + len(section))
        text = text[start : end if end != -1 else len(text)]
    return [body for lang, body in _BLOCK.findall(text) if lang == language]


SHELL_BLOCKS = [
    pytest.param(block, id=f"README-{i}")
    for i, block in enumerate(blocks(README, "sh", "## Sending events"))
] + [
    pytest.param(block, id=f"emit-and-tcp-{i}")
    for i, block in enumerate(blocks(EMIT_AND_TCP, "sh"))
]


def as_run_here(block: str, daemon: Daemon) -> str:
    """The block with the daemon's ports, shorter runs and no endless line."""
    tcp, tcp_events, tcp_protobuf = daemon.tcp_ports  # the order of the docs' TOML
    ports = {
        "8088": daemon.http_port,
        "9108": daemon.metrics_port,
        "5170": tcp,
        "5171": tcp_events,
        "5172": tcp_protobuf,
    }
    block = re.sub(r"\b(8088|9108|5170|5171|5172)\b", lambda m: str(ports[m[1]]), block)
    for long, short in _SHORTER.items():
        block = block.replace(long, short)
    # `gravixd emit` without a target sends to the default 127.0.0.1:8088.
    block = re.sub(
        r"gravixd emit(?![^\n]*(--url|--tcp))",
        f"gravixd emit --url http://127.0.0.1:{daemon.http_port}",
        block,
    )
    return _ENDLESS.sub("", block)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Daemon:
    workdir = tmp_path_factory.mktemp("doc-shell")
    (toml,) = blocks(EMIT_AND_TCP, "toml")  # the documented extra listeners, on port 0
    config = workdir / "gravixd.toml"
    config.write_text(re.sub(r'listen = "127\.0\.0\.1:\d+"', 'listen = "127.0.0.1:0"', toml))
    with Daemon(workdir / "d", "--config", str(config)) as running:
        yield running


@pytest.fixture
def example_files(tmp_path: Path) -> Path:
    """The directory the examples run in: empty, as on a fresh machine (an example that
    reads a file it did not make fails)."""
    return tmp_path


def refusals(daemon: Daemon) -> dict[str, float]:
    """HTTP answers other than 202 by code, and raw TCP lines or frames skipped ("tcp")."""
    counts: dict[str, float] = {}
    for (name, labels), value in daemon.metrics().items():
        label = dict(labels)
        if name == "ingestion_requests_total" and label["code"] != "202":
            counts[label["code"]] = counts.get(label["code"], 0) + value
        elif name == "ingestion_events_rejected_total" and label.get("source") == "tcp":
            counts["tcp"] = counts.get("tcp", 0) + value
    return {code: n for code, n in counts.items() if n}


@pytest.mark.parametrize("block", SHELL_BLOCKS)
def test_shell_example_runs_as_written(daemon: Daemon, example_files: Path, block: str) -> None:
    # `python3` and `gravixd` are this interpreter with the code under test, as after
    # `pip install -e .`.
    prelude = (
        "set -e -o pipefail\n"
        f'python3() {{ "{sys.executable}" "$@"; }}\n'
        f'gravixd() {{ "{sys.executable}" -m gravixd "$@"; }}\n'
    )
    script = prelude + as_run_here(block, daemon)
    before = refusals(daemon)
    done = subprocess.run(
        ["bash", "-c", script], cwd=example_files, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{script}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    documented: dict[str, float] = {}
    for status, body in _EXPECTED.findall(block):
        assert body in done.stdout, f"expected {status} {body} from:\n{script}\n{done.stdout}"
        if status != "202":
            documented[status] = documented.get(status, 0) + 1
    # Only the documented refusals: an example that quietly got a 4xx (curl exits 0 on
    # one) or a TCP line gravixd skipped fails here. TCP is counted as it is read.
    expected = {code: before.get(code, 0) + documented.get(code, 0) for code in before | documented}
    with contextlib.suppress(AssertionError):  # TCP lines are counted once gravixd reads them
        wait_for(lambda: refusals(daemon) == expected, timeout=10)
    assert refusals(daemon) == expected, script


def test_no_example_installs_gravixd_from_the_package_index() -> None:
    """gravixd is installed from its clone or a wheel built from it: it is not on PyPI, and
    `pip install gravixd` would install nothing, or a stranger's package under that name."""
    from_index = re.compile(r"pip3? install (?:-[-\w=]+ )*gravixd(?![\w./-])")
    for path in (README, *sorted((ROOT / "docs").glob("*.md"))):
        for _lang, body in _BLOCK.findall(path.read_text()):
            code = "\n".join(line.split("#")[0] for line in body.splitlines())
            assert not from_index.search(code), f"{path.name}: {from_index.search(code)}"


def test_every_gravixd_toml_of_the_docs_loads(tmp_path: Path) -> None:
    """Each TOML example of README.md and docs/ that configures gravixd (Vector's, with its
    sources/transforms/sinks tables, aside) is valid for the current config loader."""
    from gravixd.config import load

    tokens = tmp_path / "tokens"
    tokens.write_text("doc-example-token\n")
    vector = re.compile(r"^\[(sources|transforms|sinks)\.", re.MULTILINE)
    loaded = 0
    for path in (README, *sorted((ROOT / "docs").glob("*.md"))):
        for lang, body in _BLOCK.findall(path.read_text()):
            if lang != "toml" or vector.search(body):
                continue
            config = tmp_path / f"{path.stem}-{loaded}.toml"
            config.write_text(body.replace("/etc/gravixd/tokens", str(tokens)))
            load({"config": str(config)}, {})
            loaded += 1
    assert loaded >= 5

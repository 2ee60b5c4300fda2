"""The project's docs (README.md, docs/) are all a user has: they cite nothing outside the
repository, agree with each other on the example listeners, and say what the test command
does to the machine before a newcomer runs it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_TOML_BLOCK = re.compile(r"^```toml\n(.*?)^```$", re.MULTILINE | re.DOTALL)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_docs_cite_nothing_outside_the_repository(path: Path) -> None:
    """The design notes the code was written from are not shipped: a doc that sends the
    reader to them sends them nowhere."""
    text = path.read_text()
    for outside in ("DESIGN.md", "DESIGN §", "DESIGN section", "where DESIGN", "../shared"):
        assert outside not in text, f"{path.name} cites {outside!r}"


def test_every_doc_gives_the_example_tcp_listeners_the_same_stream_and_framing() -> None:
    """One set of example listeners across the docs: following one page's 5171 with another
    page's sender must not put events into the wrong stream or framing."""
    seen: dict[str, tuple[str, str, str]] = {}
    for path in DOCS:
        for body in _TOML_BLOCK.findall(path.read_text()):
            try:
                listeners = tomllib.loads(body).get("tcp_listeners", [])
            except tomllib.TOMLDecodeError:
                continue  # not gravixd's (test_doc_shell_examples loads gravixd's)
            for listener in listeners:
                port = listener["listen"].rsplit(":", 1)[1]
                meaning = (listener.get("stream", "facts"), listener.get("framing", "ndjson"))
                if port in seen:
                    assert meaning == seen[port][:2], (
                        f"{path.name}: port {port} is {meaning}, "
                        f"{seen[port][2]} says {seen[port][:2]}"
                    )
                else:
                    seen[port] = (*meaning, path.name)
    assert len(seen) >= 2  # configuration.md's and emit-and-tcp.md's listeners were read


def test_readme_says_the_test_command_installs_debian_packages_as_root() -> None:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("bash scripts/test")
    around = readme[start : start + 1200]
    for word in ("install-tools", "root", "apt-get", "Debian packages"):
        assert word in around, f"the README's test command does not say {word!r}"

"""A bad `iceberg_catalog_uri`, or the extra not installed, is one line at start and exit 2;
the base install imports and serves without pyiceberg."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# Runs gravixd with pyiceberg made unimportable, as in a base install without the extra.
WITHOUT_PYICEBERG = (
    "import sys; sys.modules['pyiceberg'] = None; from gravixd.cli import main; "
    "sys.exit(main(sys.argv[1:]))"
)


def _serve(
    tmp_path: Path, *args: str, without_pyiceberg: bool = False
) -> subprocess.CompletedProcess[str]:
    prefix = ["-c", WITHOUT_PYICEBERG] if without_pyiceberg else ["-m", "gravixd"]
    return subprocess.run(
        [
            sys.executable, *prefix, "serve",
            "--http-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--tcp-listen", "",
            "--spool-dir", str(tmp_path / "spool"), "--store-url", f"file://{tmp_path / 'store'}",
            *args,
        ],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("sqlite://relative.db", "sqlite:////absolute/path.db"),
        ("postgresql://user@/", "postgresql://user[:password]@host[:port]/database"),
        ("mysql://db/x", "Expected `str` matching regex"),
    ],
)
def test_a_malformed_catalog_uri_is_one_line_and_exit_2(
    tmp_path: Path, uri: str, says: str
) -> None:
    result = _serve(tmp_path, "--iceberg-catalog-uri", uri)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "iceberg_catalog_uri" in lines[0] and says in lines[0], lines
    assert not (tmp_path / "spool").exists()  # nothing touched


def test_without_the_extra_a_catalog_uri_says_what_to_install(tmp_path: Path) -> None:
    result = _serve(
        tmp_path, "--iceberg-catalog-uri", f"sqlite:///{tmp_path}/c.db", without_pyiceberg=True
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install -e '.[iceberg]'" in lines[0], lines


def test_the_base_install_imports_without_pyiceberg() -> None:
    code = (
        "import sys; sys.modules['pyiceberg'] = None\n"
        "import gravixd.runtime.app, gravixd.rollup, gravixd.iceberg, gravixd.cli\n"
        "assert 'sqlalchemy' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)

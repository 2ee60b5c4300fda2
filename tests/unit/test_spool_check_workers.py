"""`gravixd spool check` on the spool of an instance with workers sees every worker's spool."""

from __future__ import annotations

from pathlib import Path

import pytest

from gravixd.spool_check import check_spool, inspect_spool


def test_worker_spools_are_listed_under_their_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spool = tmp_path / "spool"
    kept = spool / "worker-1" / "quarantine" / "facts" / "01JEXAMPLE.arrows"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"kept for a human")
    (spool / "metrics-multiproc").mkdir()  # the supervisor's metric files are not segments

    (report,) = inspect_spool(spool)
    assert (report.area, report.stream, report.name) == (
        "quarantine",
        "facts",
        "worker-1/01JEXAMPLE.arrows",
    )
    assert check_spool(spool) == 0
    assert "worker-1/01JEXAMPLE.arrows" in capsys.readouterr().out

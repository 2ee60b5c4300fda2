"""Orphaned spools handed to a live one: every file moved once, none overwritten, none lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from gravixd.runtime.spool_adopt import adopt_orphans
from gravixd.runtime.spool_lock import SpoolLock

SEGMENT = "01JEXAMPLE0000000000000000"


def put(spool: Path, relative: str, content: bytes = b"segment bytes") -> Path:
    path = spool / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def files(spool: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(spool)): p.read_bytes()
        for p in sorted(spool.rglob("*"))
        if p.is_file() and p.name != "gravixd.lock"
    }


@pytest.mark.parametrize(
    ("orphan", "workers", "adopter"),
    [
        ("worker-2", 2, "worker-0"),  # fewer workers than before: j mod N
        ("worker-3", 2, "worker-1"),
        ("worker-1", 1, ""),  # back to a single process: into spool_dir itself
        ("", 3, "worker-0"),  # a single process's spool, now with workers
    ],
)
def test_every_file_moves_to_the_live_spool(
    tmp_path: Path, orphan: str, workers: int, adopter: str
) -> None:
    spool = tmp_path / "spool"
    layout = [
        f"open/facts/{SEGMENT}1.arrows",
        f"sealed/events/{SEGMENT}2.arrow",
        f"quarantine/facts/{SEGMENT}3.arrows.damaged",
    ]
    for i, relative in enumerate(layout):
        put(spool / orphan, relative, b"%d" % i)
    if workers > 1:  # a live worker's own segment stays as it is
        live = put(spool / "worker-1", f"sealed/facts/{SEGMENT}9.arrow", b"live")

    done = adopt_orphans(spool, workers)

    assert [(a.orphan, a.adopter, a.files, a.kept) for a in done] == [
        ((spool / orphan), spool / adopter, 3, 0)
    ]
    moved = files(spool / adopter)
    for i, relative in enumerate(layout):
        assert moved[relative] == b"%d" % i
    if orphan:
        assert not (spool / orphan).exists(), "the emptied orphan is removed"
    else:
        left = [p for d in ("open", "sealed", "quarantine") for p in (spool / d).rglob("*")]
        assert not [p for p in left if p.is_file()], "the top level keeps no segment"
    if workers > 1:
        assert live.read_bytes() == b"live"


def test_live_workers_spools_are_left_alone(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    put(spool / "worker-0", f"open/facts/{SEGMENT}1.arrows")
    put(spool / "worker-1", f"open/facts/{SEGMENT}2.arrows")
    assert adopt_orphans(spool, 2) == []
    assert files(spool / "worker-1") == {f"open/facts/{SEGMENT}2.arrows": b"segment bytes"}


def test_a_name_already_taken_is_never_overwritten(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    put(spool / "worker-1", f"sealed/facts/{SEGMENT}1.arrow", b"orphan's")
    put(spool / "worker-1", f"sealed/facts/{SEGMENT}2.arrow", b"moves")
    put(spool, f"sealed/facts/{SEGMENT}1.arrow", b"adopter's")

    (done,) = adopt_orphans(spool, 1)

    assert (done.files, done.kept) == (1, 1)
    assert (spool / f"sealed/facts/{SEGMENT}2.arrow").read_bytes() == b"moves"
    # The clash: both files kept, each in its own spool, and the orphan stays for later.
    assert (spool / f"sealed/facts/{SEGMENT}1.arrow").read_bytes() == b"adopter's"
    assert (spool / "worker-1" / f"sealed/facts/{SEGMENT}1.arrow").read_bytes() == b"orphan's"


def test_a_spool_whose_lock_is_held_is_not_touched(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    put(spool / "worker-3", f"open/facts/{SEGMENT}1.arrows")
    lock = SpoolLock.acquire(spool / "worker-3")  # a worker of an earlier run, still draining
    try:
        assert adopt_orphans(spool, 2) == []
    finally:
        lock.release()
    assert files(spool / "worker-3") == {f"open/facts/{SEGMENT}1.arrows": b"segment bytes"}
    (done,) = adopt_orphans(spool, 2)  # the next start takes it
    assert done.files == 1


def test_nothing_to_adopt(tmp_path: Path) -> None:
    assert adopt_orphans(tmp_path / "absent", 2) == []
    (tmp_path / "spool").mkdir()
    assert adopt_orphans(tmp_path / "spool", 1) == []


def test_a_failure_leaves_the_rest_in_place_and_is_not_fatal(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    put(spool / "worker-2", f"open/facts/{SEGMENT}1.arrows")
    # The adopter's stream folder is a file: nothing can be moved there.
    put(spool / "worker-0", "open/facts", b"not a folder")
    assert adopt_orphans(spool, 2) == []
    assert files(spool / "worker-2") == {f"open/facts/{SEGMENT}1.arrows": b"segment bytes"}

"""The side port keeps answering probes whatever idle connections others hold there.

A flood of idle connections, each re-opened as soon as the daemon closes it, more than the
side port's connection budget (32): before, they held every slot for 10 s at a time and 96%
of `/livez` probes failed (runs of 18.5 s; the chart restarts a pod after 3). Now the
connection that has waited longest for a request makes room for a new one, so a probe,
whose request comes with its connection, is answered.
"""

from __future__ import annotations

import http.client
import selectors
import socket
import threading
import time
from pathlib import Path

from daemon import Daemon

FLOOD_CONNECTIONS = 48  # above the side port's budget of 32
PROBES = 100


class Flood:
    """Idle connections to `port`, re-opened as the daemon closes them (one thread)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stop = threading.Event()
        self.reopened = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _open(self, selector: selectors.BaseSelector) -> None:
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", self.port))
        selector.register(sock, selectors.EVENT_READ)

    def _run(self) -> None:
        with selectors.DefaultSelector() as selector:
            for _ in range(FLOOD_CONNECTIONS):
                self._open(selector)
            while not self.stop.is_set():
                for key, _ in selector.select(timeout=0.05):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    try:
                        data = sock.recv(4096)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if not data:  # closed by the daemon: open another at once
                        selector.unregister(sock)
                        sock.close()
                        self._open(selector)
                        self.reopened += 1
            for key in list(selector.get_map().values()):
                key.fileobj.close()  # type: ignore[union-attr]


def probe(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)  # a kubelet's default
    try:
        conn.request("GET", "/livez")
        response = conn.getresponse()
        return response.status == 200 and response.read() == b"ok\n"
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def test_probes_answer_through_a_flood_of_idle_connections(tmp_path: Path) -> None:
    with Daemon(tmp_path, "--log-level=info") as d:
        flood = Flood(d.metrics_port)
        flood.thread.start()
        try:
            time.sleep(1)  # the flood holds the budget
            answered = 0
            for _ in range(PROBES):
                answered += probe(d.metrics_port)
                time.sleep(0.05)
        finally:
            flood.stop.set()
            flood.thread.join(10)
        print(f"/livez answered {answered}/{PROBES} under a flood of {FLOOD_CONNECTIONS} idle "
              f"connections ({flood.reopened} re-opened)")  # fmt: skip
        assert flood.reopened > 0  # the flood did take the budget and was made room of
        assert answered == PROBES

"""A revoked bearer token stops working on connections that are already open.

Every request is checked against the tokens in force now: after the tokens file is rotated
and SIGHUP reloads it, the next request on a keep-alive connection opened before the reload
gets 401 with the old token (it used to keep the token set its connection started with).
"""

from __future__ import annotations

import http.client
import json
import signal
from pathlib import Path

from daemon import Daemon, column, read_store, wait_for


def post(conn: http.client.HTTPConnection, token: str, trace_id: str) -> tuple[int, bool]:
    """One request on `conn`; returns the status and whether the server kept the connection."""
    body = json.dumps({"service": "revoke", "trace_id": trace_id})
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    conn.request("POST", "/v1/facts", body, headers)
    response = conn.getresponse()
    response.read()
    return response.status, not response.will_close


def test_revoked_token_is_refused_on_an_open_keep_alive_connection(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("old-token\n")
    with Daemon(tmp_path, f"--auth-tokens-file={tokens}", "--log-level=info") as d:
        conn = d.connection()
        sock_before = None
        try:
            assert post(conn, "old-token", "before") == (202, True)
            sock_before = conn.sock

            tokens.write_text("new-token\n")
            offset = d.log_path.stat().st_size
            d.signal(signal.SIGHUP)
            wait_for(
                lambda: any(e.get("event") == "reloaded" for e in d.log_events(offset)),
                timeout=10,
                what="the reloaded log event",
            )

            status, kept = post(conn, "old-token", "after-revocation")
            assert conn.sock is sock_before, "the test must reuse the same connection"
            assert status == 401
            # The refusal is an ordinary answer: the same connection goes on, with the new token.
            assert kept
            assert post(conn, "new-token", "new") == (202, True)
            assert conn.sock is sock_before
        finally:
            conn.close()
        assert (
            d.metric(
                "ingestion_events_rejected_total",
                stream="facts",
                source="http",
                reason="unauthorized",
            )
            == 1
        )
    assert sorted(column(read_store(d.store_dir, "facts"), "trace_id")) == ["before", "new"]

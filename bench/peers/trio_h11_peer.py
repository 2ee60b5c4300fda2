"""The bare framework ceiling: trio + h11 answering 202 after reading the body, doing no work.

gravixd is built on trio and h11; this server is what they cost alone, with keep-alive and
pipelining as h11 handles them. Whatever gravixd does beyond it (decode, Arrow, spool, fsync)
shows as the distance to this ceiling. It must never do more than read and answer.

Run: python -m bench.peers.trio_h11_peer --port P
"""

from __future__ import annotations

import argparse
from functools import partial

import h11
import trio

_MAX_RECV_BYTES = 64 * 1024
_BODY = b'{"accepted":1}'
_HEADERS = [("content-type", "application/json"), ("content-length", str(len(_BODY)))]


async def _handle(stream: trio.SocketStream) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(_MAX_RECV_BYTES)
                conn.receive_data(data)
                if not data and conn.their_state is not h11.DONE:
                    return
                continue
            if isinstance(event, h11.Request):
                status = 200 if event.method == b"GET" else 202
                continue_reading = True
                while continue_reading:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(await stream.receive_some(_MAX_RECV_BYTES))
                    elif isinstance(event, h11.EndOfMessage):
                        continue_reading = False
                    elif isinstance(event, h11.ConnectionClosed):
                        return
                out = conn.send(h11.Response(status_code=status, headers=_HEADERS))
                out += conn.send(h11.Data(data=_BODY)) + conn.send(h11.EndOfMessage())
                await stream.send_all(out)
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
            elif isinstance(event, h11.ConnectionClosed):
                return
    except (h11.RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
        return
    finally:
        await stream.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    trio.run(partial(trio.serve_tcp, _handle, args.port, host="127.0.0.1"))


if __name__ == "__main__":
    main()

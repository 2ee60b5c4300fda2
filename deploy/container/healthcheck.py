"""Docker HEALTHCHECK for the gravixd image: exit 0 if /livez answers 200, else 1.

The slim base image has no curl, so this uses the interpreter already there. It finds the
side port as gravixd does: GRAVIXD_METRICS_LISTEN, else `metrics_listen` in the file that
GRAVIXD_CONFIG names, else the default. It must stay dependency-free and quick.
"""

from __future__ import annotations

import os
import sys
import tomllib
import urllib.request

DEFAULT_METRICS_LISTEN = "127.0.0.1:9108"
TIMEOUT_SECONDS = 3


def metrics_listen() -> str:
    if listen := os.environ.get("GRAVIXD_METRICS_LISTEN"):
        return listen
    if path := os.environ.get("GRAVIXD_CONFIG"):
        with open(path, "rb") as file:
            return str(tomllib.load(file).get("metrics_listen") or DEFAULT_METRICS_LISTEN)
    return DEFAULT_METRICS_LISTEN


def livez_url(listen: str) -> str:
    host, _, port = listen.rpartition(":")
    # A wildcard bind is reachable on loopback from inside the container.
    if host in ("", "0.0.0.0", "[::]"):
        host = "127.0.0.1"
    return f"http://{host}:{port}/livez"


def main() -> int:
    url = livez_url(metrics_listen())
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
            status = response.status
    except OSError as exc:  # URLError, HTTPError (non-2xx), timeouts
        print(f"unhealthy: GET {url}: {exc}", file=sys.stderr)
        return 1
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())

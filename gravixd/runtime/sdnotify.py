"""The systemd notify protocol (sd_notify(3)), spoken by the daemon itself.

Under `Type=notify` systemd hands the service a datagram socket in `NOTIFY_SOCKET` and
waits for `READY=1`; with `WatchdogSec=` it also sets `WATCHDOG_USEC` and expects
`WATCHDOG=1` pings. Outside systemd (no `NOTIFY_SOCKET`) there is nothing to notify, so
`SdNotifier.from_environ` returns None and callers skip every call.

It must never block or raise into the daemon: a lost notification is logged and dropped
(systemd treats a missing READY as a start timeout, which is the right failure to surface),
and a datagram send on a non-blocking socket returns at once.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

__all__ = ["SdNotifier"]

log = logging.getLogger(__name__)


class SdNotifier:
    """Sends sd_notify messages to one socket address.

    Args:
        address: the `NOTIFY_SOCKET` value: a filesystem path, or `@name` for an abstract
            socket (Linux), as systemd passes it.
        watchdog_usec: `WATCHDOG_USEC`, when this process is the one watched.
    """

    def __init__(self, address: str, watchdog_usec: int | None = None) -> None:
        if not address or address[0] not in "/@":
            raise ValueError(
                f"Expected NOTIFY_SOCKET to be an absolute path or '@abstract-name', "
                f"got {address!r}"
            )
        # Abstract socket names start with a NUL byte; systemd spells it '@'.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._watchdog_usec = watchdog_usec
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.setblocking(False)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> SdNotifier | None:
        """The notifier systemd asked for, or None when not run under `Type=notify`.

        `WATCHDOG_PID`, when set, names the process the watchdog watches: another PID
        (a child inheriting the environment) means no watchdog for this one.
        """
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        if not address:
            return None
        return cls(address, watchdog_usec=_watchdog_usec(env))

    # --- the messages gravixd sends ------------------------------------------------------

    def ready(self) -> bool:
        """All listeners are bound: systemd may start units ordered after us."""
        return self.notify("READY=1")

    def status(self, text: str) -> bool:
        """A one-line summary shown by `systemctl status`."""
        return self.notify("STATUS=" + text.replace("\n", " "))

    def watchdog(self) -> bool:
        """A keep-alive ping; systemd restarts the unit if these stop coming."""
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        """Draining after SIGTERM: systemd shows 'deactivating' and waits."""
        return self.notify("STOPPING=1")

    def reloading(self) -> bool:
        """A reload (SIGHUP) began; `Type=notify-reload` wants MONOTONIC_USEC with it.

        Follow it with `ready()` once the reload is done.
        """
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify(f"RELOADING=1\nMONOTONIC_USEC={monotonic_usec}")

    def watchdog_interval_seconds(self) -> float | None:
        """How often to call `watchdog()`: half of `WATCHDOG_USEC` (sd_watchdog_enabled(3)
        recommends pinging at half the timeout), or None when no watchdog is armed."""
        if not self._watchdog_usec:
            return None
        return self._watchdog_usec / 2 / 1_000_000

    # --- plumbing ------------------------------------------------------------------------

    def notify(self, message: str) -> bool:
        """Send one datagram; True if it was handed to the kernel."""
        try:
            self._sock.sendto(message.encode(), self._address)
        except OSError as exc:  # gone, full or refused: never fatal for the daemon
            log.warning("sd_notify %r to %r failed: %s", message.split("=", 1)[0],
                        self._address.replace("\0", "@"), exc)  # fmt: skip
            return False
        return True

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> SdNotifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid.strip() != str(os.getpid()):
        return None
    raw = env.get("WATCHDOG_USEC", "")
    try:
        usec = int(raw)
    except ValueError:
        if raw:
            log.warning("ignoring WATCHDOG_USEC=%r: expected an integer of microseconds", raw)
        return None
    return usec if usec > 0 else None

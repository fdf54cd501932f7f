"""
systemd's notification protocol (C{sd_notify}), in a few lines of socket
code rather than a dependency: under a unit of C{Type=notify}, systemd sets
C{NOTIFY_SOCKET}, and the service sends it datagrams of C{KEY=value} lines.

The server tells systemd it is ready (C{READY=1}) once it serves, what it
is doing (C{STATUS=}), that its reactor still turns (C{WATCHDOG=1}, if the
unit has C{WatchdogSec=}: a reactor that stops turning stops sending, and
systemd restarts the service), and that it is stopping (C{STOPPING=1}).
"""

import os
import socket

from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

STATUS_INTERVAL = 5.0
"""Seconds between two updates of the status systemd shows."""


def notify_address(environ):
    """
    The address of systemd's notification socket that C{environ} names in
    C{NOTIFY_SOCKET}: a path, or an abstract socket (C{@name}); L{None} if
    it names none this module can use.
    """
    address = environ.get("NOTIFY_SOCKET", "")
    if address.startswith("@"):
        return "\0" + address[1:]
    if address.startswith("/"):
        return address
    return None


def watchdog_interval(environ, pid):
    """
    Seconds between two C{WATCHDOG=1} for the process C{pid}: half of
    C{WATCHDOG_USEC}, as systemd advises; L{None} if C{environ} asks for no
    watchdog, or asks it of another process (C{WATCHDOG_PID}).
    """
    asked_of = environ.get("WATCHDOG_PID")
    if asked_of and asked_of != str(pid):
        return None
    try:
        microseconds = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if microseconds <= 0:
        return None
    return microseconds / 2e6


class Notifier:
    """
    A datagram socket that sends notifications to systemd at C{address}
    (see L{notify_address}).  It never blocks: a notification that cannot
    be sent at once raises L{OSError}.
    """

    def __init__(self, address):
        self.address = address
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._socket.setblocking(False)

    def send(self, *assignments):
        """Send C{assignments} (C{"READY=1"}...) as one notification."""
        self._socket.sendto("\n".join(assignments).encode("utf-8"), self.address)

    def close(self):
        self._socket.close()


class NotifyService(Service):
    """
    Keep systemd told about a server: C{READY=1} with a status when this
    service starts (after the chat service: the port is served, the state
    open), the status every L{STATUS_INTERVAL} seconds, C{WATCHDOG=1} from
    the reactor if C{environ} asks for it, and C{STOPPING=1} as the
    services stop (this one first).

    @param address: systemd's socket, from L{notify_address}.
    @param environ: the environment, read for the watchdog as the service
        starts (twistd may have forked since it was built).
    @param protocol: the L{udpchat.server.ChatServerProtocol} whose members
        and requests the status counts.
    @param clock: an L{IReactorTime} to send from.
    @param getpid: returns the process id, compared with C{WATCHDOG_PID}.
    """

    log = Logger()

    def __init__(self, address, environ, protocol, clock, getpid=os.getpid):
        self._address = address
        self._environ = environ
        self._protocol = protocol
        self._clock = clock
        self._getpid = getpid
        self._notifier = None
        self._loops = []
        self._failing = False
        self._counted = None  # (time, requests handled) at the last status

    def startService(self):
        Service.startService(self)
        self._notifier = Notifier(self._address)
        self._counted = (self._clock.seconds(), self._handled())
        self._send("READY=1", "STATUS=" + self.status())
        interval = watchdog_interval(self._environ, self._getpid())
        work = [(STATUS_INTERVAL, self._update, False)]
        if interval is not None:
            work.append((interval, lambda: self._send("WATCHDOG=1"), True))
        for seconds, function, now in work:
            loop = LoopingCall(function)
            loop.clock = self._clock
            loop.start(seconds, now=now)
            self._loops.append(loop)

    def stopService(self):
        Service.stopService(self)
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops = []
        if self._notifier is not None:
            self._send("STOPPING=1")
            self._notifier.close()
            self._notifier = None

    def status(self, rate=None):
        """The status systemd shows: members, and requests a second."""
        members = self._protocol.room.member_count
        text = f"{members} member{'' if members == 1 else 's'}"
        if rate is not None:
            text += f", {rate:.1f} requests/s"
        return text

    def _handled(self):
        return sum(self._protocol.requests().values())

    def _update(self):
        now, handled = self._clock.seconds(), self._handled()
        then, before = self._counted
        self._counted = (now, handled)
        rate = (handled - before) / (now - then) if now > then else 0.0
        self._send("STATUS=" + self.status(rate))

    def _send(self, *assignments):
        # Said once when sending starts to fail, and once when it works
        # again: a watchdog ping fails every few seconds while it does.
        try:
            self._notifier.send(*assignments)
        except OSError as e:
            if not self._failing:
                self._failing = True
                self.log.warn(
                    "cannot notify systemd at {address}: {error}",
                    address=self._environ.get("NOTIFY_SOCKET", self._address),
                    error=e.strerror or e,
                )
            return
        if self._failing:
            self._failing = False
            self.log.info("notifying systemd again")

"""
The Twisted side of the server: a thin DatagramProtocol around a L{Room}.

The adapter decides nothing about the protocol: it hands each datagram and
its (normalised) source address to the room, sends the room's reply back,
and turns what the room reports into log events.
"""

from collections import Counter

from twisted.application.service import Service
from twisted.internet.error import MessageLengthError
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import (
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
)

from udpchat.room import Expired, Joined, Left, Renamed
from udpchat.wire import ILLEGAL, MAX_DATAGRAM_BYTES

SUMMARY_INTERVAL = 60.0
"""Seconds between two log lines counting refused and dropped datagrams."""

EXPIRY_INTERVAL = 1.0
"""Seconds between two sweeps for idle members, when nothing arrives."""


def canonical_address(address):
    """
    Return C{address} with an IPv4-mapped IPv6 host (C{::ffff:a.b.c.d}, as a
    dual-stack socket reports IPv4 peers) written as the IPv4 address.
    """
    host = address[0]
    if host.startswith("::ffff:") and "." in host:
        return (host[7:], address[1])
    return address


def format_address(address):
    """C{1.2.3.4:5} or C{[::1]:5}, for people reading the log."""
    host, port = address[:2]
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def _counted(count, what):
    """C{1 illegal request}, C{2 illegal requests}."""
    return f"{count} {what}" if count == 1 else f"{count} {what}s"


class ChatServerProtocol(DatagramProtocol):
    """
    Feed datagrams to a room and send its replies.

    Nothing a datagram carries can raise out of L{datagramReceived}: a
    request that hits a bug gets no reply, and its traceback is logged at
    most once per summary interval.

    @param room: the L{udpchat.room.Room} that decides everything.
    @param clock: an L{IReactorTime}: the room's time, and the timers.
    @param log_level: the least important L{LogLevel} to log; only at
        C{LogLevel.debug} is an event built for every request.
    @param limiter: a L{udpchat.limits.Limiter} deciding which datagrams
        reach the room, or L{None} for no traffic limits.
    """

    noisy = False

    def __init__(self, room, clock, log_level=LogLevel.info, limiter=None):
        self.room = room
        self._clock = clock
        self._limiter = limiter
        self._log_requests = log_level == LogLevel.debug
        # twistd writes whatever it is given: filter here, by level.
        self.log = Logger(
            namespace=f"{__name__}.{type(self).__name__}",
            source=self,
            observer=FilteringLogObserver(
                globalLogPublisher, [LogLevelFilterPredicate(log_level)]
            ),
        )
        self._counts = Counter()
        self._summary = None
        self._summary_since = None
        self._sweeper = None

    def startProtocol(self):
        if self.room.idle_timeout:
            self._sweeper = LoopingCall(self._sweep)
            self._sweeper.clock = self._clock
            self._sweeper.start(EXPIRY_INTERVAL, now=False)

    def stopProtocol(self):
        if self._sweeper is not None:
            self._sweeper.stop()
            self._sweeper = None
        if self._summary is not None:
            self._summary.cancel()
            self._log_summary()

    def datagramReceived(self, datagram, address):
        try:
            self._handle(datagram, address)
        except Exception:
            self._fault(address)

    def _handle(self, datagram, address):
        source = canonical_address(address)
        now = self._clock.seconds()
        limiter = self._limiter
        if limiter is not None:
            refused = limiter.admit(source, now)
            if refused is not None:
                self._count(refused)
                return
        if self._log_requests:
            self.log.debug(
                "{source} sent {datagram!r}",
                source=format_address(source),
                datagram=datagram,
            )
        room = self.room
        reply = room.receive(source, datagram, now)
        if reply is ILLEGAL:
            self._count("illegal")
        if room.changes:
            self._log_changes(room.changes)
        try:
            self.transport.write(reply, address)
        except (OSError, MessageLengthError):
            # No route, a full buffer...: the client will time out.
            self._count("unsent")
            return
        if limiter is not None:
            limiter.charge(source, len(reply), now)

    def _sweep(self):
        try:
            self.room.expire(self._clock.seconds())
            if self.room.changes:
                self._log_changes(self.room.changes)
        except Exception:
            self._fault(None)

    def _log_changes(self, changes):
        log = self.log
        for change in changes:
            source = format_address(change.source)
            if isinstance(change, Joined):
                log.info("{name!r} joined from {source}", name=change.name, source=source)
            elif isinstance(change, Renamed):
                log.info(
                    "{old!r} at {source} renamed to {new!r}",
                    old=change.old,
                    new=change.new,
                    source=source,
                )
            elif isinstance(change, Left):
                log.info("{name!r} at {source} left", name=change.name, source=source)
            elif isinstance(change, Expired):
                log.info(
                    "{name!r} at {source} removed after {seconds:g} seconds of silence",
                    name=change.name,
                    source=source,
                    seconds=self.room.idle_timeout,
                )
        changes.clear()

    def _fault(self, address):
        # A bug, not the sender's fault; one traceback per interval, so
        # that a datagram which triggers it cannot flood the log.
        if not self._counts["fault"]:
            self.log.failure(
                "request from {source} hit a bug; no reply sent",
                source="-" if address is None else format_address(canonical_address(address)),
            )
        self._count("fault")

    def _count(self, what):
        self._counts[what] += 1
        if self._summary is None:
            self._summary_since = self._clock.seconds()
            self._summary = self._clock.callLater(SUMMARY_INTERVAL, self._log_summary)

    def _log_summary(self):
        # One line per interval, however much junk arrives.
        self._summary = None
        counts, self._counts = self._counts, Counter()
        parts = []
        if counts["illegal"]:
            parts.append(_counted(counts["illegal"], "illegal request") + " refused")
        dropped = {
            reason: count
            for reason, count in counts.items()
            if reason not in ("illegal", "unsent", "fault")
        }
        for reason, count in sorted(dropped.items()):
            parts.append(f"{_counted(count, 'datagram')} dropped {reason}")
        if counts["unsent"]:
            parts.append(_counted(counts["unsent"], "reply") + " not sent")
        if counts["fault"]:
            parts.append(_counted(counts["fault"], "request") + " failed on a bug")
        self.log.info(
            "in the last {seconds:.0f} seconds: {summary}",
            seconds=self._clock.seconds() - self._summary_since,
            summary="; ".join(parts),
            illegal=counts["illegal"],
            dropped=dropped,
            unsent=counts["unsent"],
            faults=counts["fault"],
        )


class ChatService(Service):
    """
    Serve a L{ChatServerProtocol} on a UDP socket bound beforehand.

    twistd builds this service before it daemonizes and drops privileges;
    the socket, already bound, crosses both, and the reactor adopts it here.

    @param sock: a bound, non-blocking UDP socket, which this service owns.
    """

    log = Logger()

    def __init__(self, sock, protocol, reactor):
        self._socket = sock
        self.protocol = protocol
        self._reactor = reactor
        self.port = None

    def startService(self):
        Service.startService(self)
        sock = self._socket
        # Read one byte more than any legal request, so that an oversize
        # datagram is seen as oversize, never parsed truncated.
        self.port = self._reactor.adoptDatagramPort(
            sock.fileno(), sock.family, self.protocol, MAX_DATAGRAM_BYTES + 1
        )
        sock.close()  # the port holds its own duplicate
        address = self.port.getHost()
        self.log.info(
            "udpchat listening on UDP {host} port {port}",
            host=canonical_address((address.host, address.port))[0],
            port=address.port,
        )

    def stopService(self):
        Service.stopService(self)
        if self.port is None:
            return None
        stopped = self.port.stopListening()
        room = self.protocol.room
        self.log.info(
            "udpchat stopped: {members} and {lines} dropped (the room lives "
            "in memory only)",
            members=_counted(len(room.members()), "member"),
            lines=_counted(room.stored_lines, "queued line"),
        )
        return stopped

"""
The Twisted side of the server: a thin DatagramProtocol around a L{Room}.

The adapter decides nothing about the protocol: it hands each datagram and
its (normalised) source address to the room, sends the room's reply back,
and turns what the room reports into log events.
"""

from twisted.application.service import Service
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import (
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
)

from udpchat.room import Joined, Left, Renamed
from udpchat.wire import ILLEGAL, MAX_DATAGRAM_BYTES

ILLEGAL_SUMMARY_INTERVAL = 60.0
"""Seconds between two log lines counting illegal requests, at most."""


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


class ChatServerProtocol(DatagramProtocol):
    """
    Feed datagrams to a room and send its replies.

    @param room: the L{udpchat.room.Room} that decides everything.
    @param clock: an L{IReactorTime}, for the illegal-request summary.
    @param log_level: the least important L{LogLevel} to log; only at
        C{LogLevel.debug} is an event built for every request.
    """

    noisy = False

    def __init__(self, room, clock, log_level=LogLevel.info):
        self.room = room
        self._clock = clock
        self._log_requests = log_level == LogLevel.debug
        # twistd writes whatever it is given: filter here, by level.
        self.log = Logger(
            namespace=f"{__name__}.{type(self).__name__}",
            source=self,
            observer=FilteringLogObserver(
                globalLogPublisher, [LogLevelFilterPredicate(log_level)]
            ),
        )
        self._illegal = 0
        self._illegal_since = None
        self._summary = None

    def datagramReceived(self, datagram, address):
        source = canonical_address(address)
        if self._log_requests:
            self.log.debug(
                "{source} sent {datagram!r}",
                source=format_address(source),
                datagram=datagram,
            )
        room = self.room
        reply = room.receive(source, datagram)
        if reply is ILLEGAL:
            self._count_illegal()
        elif room.changes:
            self._log_changes(room.changes)
            room.changes.clear()
        self.transport.write(reply, address)

    def stopProtocol(self):
        if self._summary is not None:
            self._summary.cancel()
            self._log_illegal()

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

    def _count_illegal(self):
        # One summary line per interval, however much junk arrives.
        self._illegal += 1
        if self._summary is None:
            self._illegal_since = self._clock.seconds()
            self._summary = self._clock.callLater(
                ILLEGAL_SUMMARY_INTERVAL, self._log_illegal
            )

    def _log_illegal(self):
        self._summary = None
        self.log.info(
            "{count} illegal requests refused in the last {seconds:.0f} seconds",
            count=self._illegal,
            seconds=self._clock.seconds() - self._illegal_since,
        )
        self._illegal = 0


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
        if self.port is not None:
            return self.port.stopListening()

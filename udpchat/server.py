"""
The Twisted side of the server: a thin DatagramProtocol around a L{Room}.

The adapter decides nothing about the protocol: it hands each datagram and
its (normalised) source address to the room, sends the room's reply back,
and turns what the room reports into log events.

Its Logger is made per protocol, not a class attribute, since it filters by
the operator's --log-level: twistd itself writes every event it is given.
"""

import sqlite3
from collections import Counter

from twisted.application.service import Service
from twisted.internet.defer import maybeDeferred
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
from udpchat.store import StateFileError
from udpchat.wire import ILLEGAL, MAX_DATAGRAM_BYTES

SUMMARY_INTERVAL = 60.0
"""Seconds between two log lines counting refused and dropped datagrams."""

EXPIRY_INTERVAL = 1.0
"""Seconds between two sweeps for idle members, when nothing arrives."""

CHECKPOINT_INTERVAL = 60.0
"""Seconds between two saves of every member's idle timer, with a store."""


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
    @param store: an open L{udpchat.store.Store} to commit the room's
        changes to before the replies they cause are sent, or L{None} to
        keep the room in memory only.  The datagrams of one reactor turn
        share one commit.
    """

    noisy = False

    def __init__(self, room, clock, log_level=LogLevel.info, limiter=None, store=None):
        self.room = room
        self._clock = clock
        self._seconds = clock.seconds
        self._limiter = limiter
        self.store = store
        self._outbox = []  # (reply, address, admission) waiting for a commit
        self._flush_call = None
        self._checkpoint = None
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
        # A reply goes back to the address recvfrom() gave, so Twisted's
        # Port.write need not check again that it is an IP literal: that
        # check was an eighth of the time spent per datagram.
        sock = getattr(self.transport, "socket", None)
        self._write = self.transport.write if sock is None else sock.sendto
        if self.room.idle_timeout:
            self._sweeper = self._every(EXPIRY_INTERVAL, self._sweep)
        if self.store is not None:
            self._checkpoint = self._every(CHECKPOINT_INTERVAL, self._save_idle_times)

    def _every(self, seconds, function):
        call = LoopingCall(function)
        call.clock = self._clock
        call.start(seconds, now=False)
        return call

    def stopProtocol(self):
        for call in (self._sweeper, self._checkpoint):
            if call is not None:
                call.stop()
        self._sweeper = self._checkpoint = None
        if self._flush_call is not None:
            # The port is closed: commit what was handled; the replies are
            # lost, as the network could have lost them.
            self.flush()
        if self._summary is not None:
            self._summary.cancel()
            self._log_summary()

    def datagramReceived(self, datagram, address):
        # The path of every datagram, kept flat: at 100,000 requests a
        # second each call on it costs a few per cent.
        try:
            host = address[0]
            if host[:7] == "::ffff:" and "." in host:
                source = (host[7:], address[1])  # canonical_address(), inlined
            else:
                source = address
            now = self._seconds()
            admission = None
            if self._limiter is not None:
                admission = self._limiter.admit(source, now)
                if not admission:
                    self._count(admission.reason)
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
            if self.store is None:
                self._send(reply, address, admission, now)
            else:
                self._outbox.append((reply, address, admission))
                self._flush_soon()
        except Exception:
            self._fault(address)

    def _send(self, reply, address, admission, now):
        try:
            self._write(reply, address)
        except (OSError, MessageLengthError):
            # No route, a full buffer...: the client will time out.
            self._count("unsent")
            return
        if admission is not None and admission.limited:
            self._limiter.charge(admission, len(reply), now)

    def _flush_soon(self):
        if self._flush_call is None:
            self._flush_call = self._clock.callLater(0, self.flush)

    def flush(self):
        """
        Commit the room's changes, then send the replies that waited on it.
        A reply is sent only once what it tells is on disk.
        """
        if self.store is None:
            return
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        outbox, self._outbox = self._outbox, []
        now = self._clock.seconds()
        try:
            self.store.commit(self.room, now)
        except Exception:
            # Nothing is promised that is not saved: no reply.  The changes
            # stay marked, for the next commit to try again.
            self._fault(None)
            return
        if self.transport is not None:
            for reply, address, admission in outbox:
                self._send(reply, address, admission, now)

    def _save_idle_times(self):
        try:
            self.store.save_idle_times(self.room, self._clock.seconds())
        except Exception:
            self._fault(None)

    def _sweep(self):
        try:
            self.room.expire(self._clock.seconds())
            if self.room.changes:
                self._log_changes(self.room.changes)
                if self.store is not None:
                    self._flush_soon()
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
        store = self.protocol.store
        if store is not None:
            room = self.protocol.room
            try:
                store.open()
                store.load(room, self._reactor.seconds())
            except (StateFileError, sqlite3.Error, OSError) as e:
                # Checked before twistd forked, but files change: one line,
                # and a non-zero exit, rather than a traceback.
                store.close()
                self.log.critical(
                    "cannot use the state file {path}: {error}", path=store.path, error=e
                )
                raise SystemExit(1)
            self.log.info(
                "restored {members} and {lines} from {path}",
                members=_counted(len(room.members()), "member"),
                lines=_counted(room.stored_lines, "stored line"),
                path=store.path,
            )
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
        protocol = self.protocol
        if protocol.store is not None:
            protocol.flush()  # answer what was handled before closing
        stopped = maybeDeferred(self.port.stopListening)
        return stopped.addCallback(lambda _: self._stopped())

    def _stopped(self):
        # The protocol has stopped (its timers too): nothing changes now.
        protocol = self.protocol
        room, store = protocol.room, protocol.store
        counts = dict(
            members=_counted(len(room.members()), "member"),
            lines=_counted(room.stored_lines, "stored line"),
        )
        if store is None:
            self.log.info(
                "udpchat stopped: {members} and {lines} dropped (the room "
                "lives in memory only)",
                **counts,
            )
            return
        store.save_idle_times(room, self._reactor.seconds())
        store.close()
        self.log.info(
            "udpchat stopped: {members} and {lines} kept in {path}",
            path=store.path,
            **counts,
        )

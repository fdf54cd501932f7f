"""
The Twisted side of the server: a thin DatagramProtocol around a L{Room}.

The adapter decides nothing about the protocol: it hands each datagram and
its (normalised) source address to the room and sends the room's reply
back.  Once per batch (the datagrams of one read of the socket) it takes
what the room reports changed, as one value, and passes it to every
consumer: the log, and the store, which must have saved it before the
replies that tell of it go out (L{HeldReplies}).  Its periodic work (the
idle sweep, the store's checkpoint, the summary line) runs as timer
services that L{periodic_services} builds.

Its Logger is made per protocol, not a class attribute, since it filters by
the operator's --log-level: twistd itself writes every event it is given.
"""

import errno
import socket
import sqlite3
from collections import Counter

from twisted.application.internet import TimerService
from twisted.application.service import Service
from twisted.internet import udp
from twisted.internet.defer import maybeDeferred
from twisted.internet.error import MessageLengthError
from twisted.internet.protocol import DatagramProtocol
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

ILLEGAL_REQUEST = "illegal"
UNSENT = "unsent"
FAULT = "fault"
"""Keys of L{ChatServerProtocol.counts} beside the limiter's drop reasons."""


# What a read of a non-blocking, unconnected socket may end with but data:
# nothing more to read, a signal, an ICMP error of an earlier send.
_NOTHING_TO_READ = frozenset((errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR, errno.ECONNREFUSED))


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


def filtered_logger(namespace, source, level):
    """
    A L{Logger} that passes on only events at C{level} or above: twistd
    writes whatever it is given.
    """
    return Logger(
        namespace=namespace,
        source=source,
        observer=FilteringLogObserver(globalLogPublisher, [LogLevelFilterPredicate(level)]),
    )


def log_changes(log, changes, idle_timeout):
    """Log the membership events of C{changes} (a L{Changes}) at info."""
    for change in changes.events:
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
                seconds=idle_timeout,
            )


class HeldReplies:
    """
    Replies that wait until the changes they tell of are stored: what a
    reply promises (a line acknowledged, lines fetched) survives a crash.

    @param store: an open L{udpchat.store.Store}.
    @param send: called with C{(reply, address, admission, now)} for each
        reply, once its changes are committed.
    """

    def __init__(self, store, send):
        self.store = store
        self._send = send
        self._replies = []

    def hold(self, reply, address, admission):
        """Keep a reply until the next L{commit}."""
        self._replies.append((reply, address, admission))

    def drop(self):
        """Forget the replies held: there is no socket to send them on."""
        self._replies = []

    def commit(self, changes, now, checkpoint=False):
        """
        Store C{changes}, then send the replies held.  If the store fails,
        the replies are dropped (nothing is promised that is not saved) and
        the error raised; the store keeps the changes for its next commit.
        """
        replies, self._replies = self._replies, []
        self.store.commit(changes, now, checkpoint)
        send = self._send
        for reply, address, admission in replies:
            send(reply, address, admission, now)


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
        keep the room in memory only.  The datagrams of one batch share one
        commit.

    @ivar counts: how many datagrams were refused (C{"illegal"}), dropped
        (by the limiter's reason), not answered (C{"unsent"}) or hit a bug
        (C{"fault"}) since the protocol was made: totals that only grow.
    """

    noisy = False

    def __init__(self, room, clock, log_level=LogLevel.info, limiter=None, store=None):
        self.room = room
        self.store = store
        self.counts = Counter()
        self._clock = clock
        self._seconds = clock.seconds
        self._limiter = limiter
        self._admit = None if limiter is None else limiter.admit
        self._held = None if store is None else HeldReplies(store, self._send)
        self._ends_batches = False  # whether the transport calls flush()
        self._flush_call = None
        self._last_fault_logged = None
        self._log_requests = log_level == LogLevel.debug
        self.log = filtered_logger(f"{__name__}.{type(self).__name__}", self, log_level)
        self._summarised = Counter()
        self._summarised_at = clock.seconds()

    def startProtocol(self):
        # A reply goes back to the address recvfrom() gave, so Twisted's
        # Port.write need not check again that it is an IP literal: that
        # check was an eighth of the time spent per datagram.
        transport = self.transport
        sock = getattr(transport, "socket", None)
        self._write = transport.write if sock is None else sock.sendto
        self._ends_batches = getattr(transport, "ends_batches", False)

    def stopProtocol(self):
        # The port is closed: commit what was handled; the replies are lost,
        # as the network could have lost them.
        if self._held is not None:
            self._held.drop()
        self.flush()
        self.log_summary()

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
            if self._admit is not None:
                admission = self._admit(source, now)
                if not admission:
                    self.counts[admission.reason] += 1
                    return
            if self._log_requests:
                self.log.debug(
                    "{source} sent {datagram!r}",
                    source=format_address(source),
                    datagram=datagram,
                )
            reply = self.room.receive(source, datagram, now)
            if reply is ILLEGAL:
                self.counts[ILLEGAL_REQUEST] += 1
            if self._held is None:
                # _send(), inlined.
                try:
                    self._write(reply, address)
                except (OSError, MessageLengthError):
                    self.counts[UNSENT] += 1
                else:
                    if admission is not None and admission.limited:
                        self._limiter.charge(admission, len(reply), now)
            else:
                self._held.hold(reply, address, admission)
            if not self._ends_batches and self._flush_call is None:
                self._flush_call = self._clock.callLater(0, self.flush)
        except Exception:
            self._fault(address)

    def _send(self, reply, address, admission, now):
        try:
            self._write(reply, address)
        except (OSError, MessageLengthError):
            # No route, a full buffer...: the client will time out.
            self.counts[UNSENT] += 1
            return
        if admission is not None and admission.limited:
            self._limiter.charge(admission, len(reply), now)

    def flush(self, checkpoint=False):
        """
        End a batch: take what the room reports changed and pass it to the
        log and the store; then send the replies that waited on the store.
        With C{checkpoint}, the store saves every member's idle timer too.
        """
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        room = self.room
        if not (room.changed or checkpoint or self._held is not None):
            return  # the most common batch of all, in memory
        changes = room.take_changes(everyone=checkpoint)
        if changes.events:
            log_changes(self.log, changes, room.idle_timeout)
        if self._held is not None:
            try:
                self._held.commit(changes, self._clock.seconds(), checkpoint)
            except Exception:
                self._fault(None)

    def sweep(self):
        """Remove the members silent for too long, when nothing arrives."""
        try:
            self.room.expire(self._clock.seconds())
            self.flush()
        except Exception:
            self._fault(None)

    def checkpoint(self):
        """Save every member's idle timer, with a store."""
        self.flush(checkpoint=True)

    def _fault(self, address):
        # A bug, not the sender's fault; one traceback per interval, so
        # that a datagram which triggers it cannot flood the log.
        now = self._clock.seconds()
        last = self._last_fault_logged
        if last is None or now - last >= SUMMARY_INTERVAL:
            self._last_fault_logged = now
            self.log.failure(
                "request from {source} hit a bug; no reply sent",
                source="-" if address is None else format_address(canonical_address(address)),
            )
        self.counts[FAULT] += 1

    def log_summary(self):
        """
        Log one line counting what was refused, dropped, unsent or failed
        since the last summary, if anything was: one line per interval,
        however much junk arrives.
        """
        now = self._clock.seconds()
        counts = self.counts - self._summarised
        seconds = now - self._summarised_at
        self._summarised = self.counts.copy()
        self._summarised_at = now
        if not counts:
            return
        parts = []
        if counts[ILLEGAL_REQUEST]:
            parts.append(_counted(counts[ILLEGAL_REQUEST], "illegal request") + " refused")
        dropped = {
            reason: count
            for reason, count in counts.items()
            if reason not in (ILLEGAL_REQUEST, UNSENT, FAULT)
        }
        for reason, count in sorted(dropped.items()):
            parts.append(f"{_counted(count, 'datagram')} dropped {reason}")
        if counts[UNSENT]:
            parts.append(_counted(counts[UNSENT], "reply") + " not sent")
        if counts[FAULT]:
            parts.append(_counted(counts[FAULT], "request") + " failed on a bug")
        self.log.info(
            "in the last {seconds:.0f} seconds: {summary}",
            seconds=seconds,
            summary="; ".join(parts),
            illegal=counts[ILLEGAL_REQUEST],
            dropped=dropped,
            unsent=counts[UNSENT],
            faults=counts[FAULT],
        )


def periodic_services(protocol, clock):
    """
    The timer services of C{protocol}'s periodic work, on C{clock}: the
    summary line, the idle sweep (if members can expire) and the store's
    checkpoint (if it has a store).  Each runs once as it starts, so they
    start after the protocol's service (its store must be open).
    """
    work = [(SUMMARY_INTERVAL, protocol.log_summary)]
    if protocol.room.idle_timeout:
        work.append((EXPIRY_INTERVAL, protocol.sweep))
    if protocol.store is not None:
        work.append((CHECKPOINT_INTERVAL, protocol.checkpoint))
    services = []
    for seconds, function in work:
        service = TimerService(seconds, function)
        service.clock = clock
        services.append(service)
    return services


class BatchingPort(udp.Port):
    """
    A UDP port that tells its protocol when a read of the socket is over
    (C{protocol.flush()}): the datagrams of one read are one batch, which
    shares one commit and one look at the room's changes, with no extra
    turn of the event loop.
    """

    ends_batches = True

    def doRead(self):
        # udp.Port.doRead, with what it looks up per datagram looked up
        # once per read, and the batch ended when the read is over.
        protocol = self.protocol
        received = protocol.datagramReceived
        recvfrom = self.socket.recvfrom
        size = self.maxPacketSize
        trim = self.addressFamily == socket.AF_INET6
        read = 0
        try:
            while read < self.maxThroughput:
                try:
                    datagram, address = recvfrom(size)
                except OSError as e:
                    if e.errno in _NOTHING_TO_READ:
                        return
                    raise
                read += len(datagram)
                if trim:
                    address = address[:2]  # no flow information, no scope
                received(datagram, address)
        finally:
            protocol.flush()


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
        # datagram is seen as oversize, never parsed truncated.  The port is
        # what reactor.adoptDatagramPort() makes, but one that ends batches.
        self.port = BatchingPort._fromListeningDescriptor(
            self._reactor, sock.fileno(), sock.family, self.protocol, MAX_DATAGRAM_BYTES + 1
        )
        self.port.startListening()
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
        self.protocol.flush()  # answer what was handled before closing
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
        protocol.checkpoint()
        store.close()
        self.log.info(
            "udpchat stopped: {members} and {lines} kept in {path}",
            path=store.path,
            **counts,
        )

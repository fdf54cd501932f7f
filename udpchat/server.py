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
import ipaddress
import socket
import sqlite3
import unicodedata
from collections import Counter
from time import perf_counter

from twisted.application.internet import TimerService
from twisted.application.service import Service
from twisted.internet import udp
from twisted.internet.defer import maybeDeferred
from twisted.internet.error import MessageLengthError, ReactorNotRunning
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import (
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
)

from udpchat.limits import TokenBuckets
from udpchat.room import OK, REFUSED, Expired, Joined, Left, Moved, Renamed
from udpchat.store import StateFileError, StateWriteError
from udpchat.timing import COMMIT_BUCKETS, Durations
from udpchat.wire import ILLEGAL, MAX_SESSION_DATAGRAM_BYTES, REQUEST_CODES, Fetch, redacted

SUMMARY_INTERVAL = 60.0
"""Seconds between two log lines counting refused and dropped datagrams."""

EXPIRY_INTERVAL = 1.0
"""Seconds between two sweeps for idle members, when nothing arrives."""

CHECKPOINT_INTERVAL = 60.0
"""Seconds between two saves of every member's idle timer, with a store."""

STALL = 3 * EXPIRY_INTERVAL
"""
Seconds between two sweeps beyond which the server did not run (it was
stopped, its machine paused, its clock stepped): idle timers stop for what
exceeds one interval, as they do while the server is down.
"""

EVENT_LOG_RATE = 1.0
EVENT_LOG_BURST = 60
"""
Membership events logged one per line: 60 at once, then one a second;
beyond that they are counted in the summary, so that legal churn cannot
flood the log.
"""

WATCH_INTERVAL = 1.0
"""Seconds between two looks at whether the state file is still there."""

ILLEGAL_REQUEST = "illegal"
UNANSWERED = "unanswered"
UNSENT = "unsent"
UNCOMMITTED = "uncommitted"
FAULT = "fault"
_EVENT_NAMES = {Joined: "join", Renamed: "rename", Left: "leave", Expired: "removal"}
UNLOGGED = {kind: f"unlogged {name}" for kind, name in _EVENT_NAMES.items()}
"""Keys of L{ChatServerProtocol.counts} beside the limiter's drop reasons."""

_NOT_DROPS = frozenset((ILLEGAL_REQUEST, UNANSWERED, UNSENT, UNCOMMITTED, FAULT, *UNLOGGED.values()))

FAILED = "failed"
"""
The outcome in L{ChatServerProtocol.requests} of a request that hit a bug,
beside the room's (L{udpchat.room.OK}, L{udpchat.room.REFUSED} and
L{UNANSWERED}).
"""

NO_CODE = "illegal"
"""The code in L{ChatServerProtocol.requests} of a datagram that begins with none."""

_CODE_OF_FIRST_BYTE = {code: code.decode("ascii") for code, _, _ in REQUEST_CODES}
_POLL = next(code.decode("ascii") for code, request, _ in REQUEST_CODES if request is Fetch)


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
    if count == 1:
        return f"{count} {what}"
    return f"{count} {what[:-1]}ies" if what.endswith("y") else f"{count} {what}s"


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


def loggable(name):
    """
    C{name} quoted for the log, compactly: ordinary text, non-ASCII too, as
    it is; control, format and separator characters (which would hide,
    break or reorder the line), a backslash and a quote as escapes.
    """
    if name.isprintable() and "\\" not in name and "'" not in name:
        return f"'{name}'"
    return "'" + "".join(map(_loggable_char, name)) + "'"


def _loggable_char(char):
    if char in "\\'":
        return "\\" + char
    if char.isprintable() or unicodedata.category(char) not in _UNLOGGABLE_CATEGORIES:
        return char  # private use, unassigned: shown as they are
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


# What isprintable() refuses that would change how the line reads.
_UNLOGGABLE_CATEGORIES = frozenset(("Cc", "Cf", "Cs", "Zl", "Zp", "Zs"))


def log_change(log, change, idle_timeout):
    """
    Log one membership event (a L{Joined}, L{Renamed}...) at info: names as
    they are in the event's fields, quoted by L{loggable} in its text; the
    member's address formatted in its text, its host and port as fields of
    their own (for a JSON log).
    """
    source = format_address(change.source)
    host, port = change.source[:2]
    if isinstance(change, Renamed):
        log.info(
            "{quoted_old} at {source} renamed to {quoted_new}",
            old=change.old,
            new=change.new,
            quoted_old=loggable(change.old),
            quoted_new=loggable(change.new),
            source=source,
            host=host,
            port=port,
        )
        return
    if isinstance(change, Moved):
        log.info(
            "{quoted_name} moved from {old} to {source}",
            name=change.name,
            quoted_name=loggable(change.name),
            old=format_address(change.old),
            source=source,
        )
        return
    if isinstance(change, Joined):
        text = "{quoted_name} joined from {source}"
    elif isinstance(change, Left):
        text = "{quoted_name} at {source} left"
    else:
        text = "{quoted_name} at {source} removed after {seconds:g} seconds of silence"
    log.info(
        text,
        name=change.name,
        quoted_name=loggable(change.name),
        source=source,
        host=host,
        port=port,
        seconds=idle_timeout,
    )


class HeldReplies:
    """
    Replies that wait until the changes they tell of are stored: what a
    reply promises (a line acknowledged, lines fetched) survives a crash.

    @param store: an open L{udpchat.store.Store}.
    @param send: called with C{(reply, address, admission, now)} for each
        reply, once its changes are committed.
    @param durations: the L{Durations} to count the time of each commit
        that wrote something in.
    @param clock: a monotonic clock in seconds, to time commits with.
    """

    def __init__(self, store, send, durations, clock=perf_counter):
        self.store = store
        self.durations = durations
        self._send = send
        self._clock = clock
        self._replies = []

    def __len__(self):
        """How many replies wait."""
        return len(self._replies)

    def hold(self, reply, address, admission):
        """Keep a reply until the next L{commit}."""
        self._replies.append((reply, address, admission))

    def drop(self):
        """Forget the replies held: there is no socket to send them on."""
        self._replies = []

    def commit(self, changes, now, checkpoint=False):
        """
        Store C{changes}, then send the replies held.  If the store fails,
        it saves nothing, the replies are dropped (nothing is promised that
        is not saved) and the error raised: the caller returns the room to
        the store's last commit (L{udpchat.store.Store.revert}).

        @return: whether the store wrote anything.
        """
        replies, self._replies = self._replies, []
        started = self._clock()
        wrote = self.store.commit(changes, now, checkpoint)
        if wrote:
            self.durations.observe(self._clock() - started)
        send = self._send
        for reply, address, admission in replies:
            send(reply, address, admission, now)
        return wrote


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
    @param timer: a monotonic clock in seconds, to time commits with.

    Its counters are totals since the protocol was made, that only grow: a
    summary line reports what they grew by, a scrape reads them.  Each is
    counted where the work is done already (see L{requests}).

    @ivar counts: how many datagrams were dropped (by the limiter's
        reason) or not answered (C{"unanswered"}), how many replies were
        not sent (C{"unsent"}) or held back by a failed commit
        (C{"uncommitted"}), how many bugs were hit (C{"fault"}), and how
        many events were not logged one by one.
    @ivar refused: how many requests were answered C{Illegal message}, by
        their first byte (C{b""} for an empty datagram).
    @ivar failed: how many requests hit a bug, by their first byte.
    @ivar received: how many datagrams were read.
    @ivar received_bytes: their payload bytes.
    @ivar sent_bytes: the payload bytes of the replies sent.
    @ivar commit_durations: a L{Durations} of the commits that wrote.
    @ivar commit_failures: how many commits failed.
    """

    noisy = False

    def __init__(
        self, room, clock, log_level=LogLevel.info, limiter=None, store=None, timer=perf_counter
    ):
        self.room = room
        self.store = store
        self.counts = Counter()
        self.refused = Counter()
        self.failed = Counter()
        self.received = self.received_bytes = self.sent_bytes = 0
        self.commit_durations = Durations(COMMIT_BUCKETS)
        self.commit_failures = 0
        self._clock = clock
        self._seconds = clock.seconds
        self._limiter = limiter
        self._admit = None if limiter is None else limiter.admit
        self._held = (
            None if store is None else HeldReplies(store, self._send, self.commit_durations, timer)
        )
        self._write_error = None  # while the store cannot write: why
        self._ends_batches = False  # whether the transport calls flush()
        self._flush_call = None
        self._last_fault_logged = None
        # None for a room in Redis, which answers a batch at a time
        # (udpchat.sharedroom).
        self._receive = getattr(room, "receive", None)
        self._log_requests = log_level == LogLevel.debug
        self.log = filtered_logger(f"{__name__}.{type(self).__name__}", self, log_level)
        self._summarised = Counter()
        self._summarised_at = clock.seconds()
        self._event_lines = TokenBuckets(EVENT_LOG_RATE, EVENT_LOG_BURST, max_keys=1)
        self._now = clock.seconds()  # the time of the batch under way
        self._swept_at = None  # when the idle sweep last ran, if it runs

    def startProtocol(self):
        # A reply goes back to the address the port gave (an IP literal),
        # so Twisted's Port.write need not check that it is one: that check
        # was an eighth of the time spent per datagram.
        transport = self.transport
        replier = getattr(transport, "replier", None)
        self._write = transport.write if replier is None else replier()
        self._ends_batches = getattr(transport, "ends_batches", False)

    def stopProtocol(self):
        # The port is closed: commit what was handled; the replies are lost,
        # as the network could have lost them.
        if self._held is not None:
            self._held.drop()
        self.flush()
        self.log_summary()

    def datagramReceived(self, datagram, address):
        """
        Handle a datagram from C{address}, as any transport delivers it: a
        batch of its own (L{BatchingPort} calls L{begin_batch} once per read
        of the socket, and L{request} for each datagram).
        """
        self.received += 1
        self.received_bytes += len(datagram)
        self.begin_batch()
        self.request(datagram, canonical_address(address[:2]), address)

    def begin_batch(self):
        """
        Read the clock for the datagrams about to be handled: they arrived
        together.  If the server stalled since the last sweep, that time is
        discounted first, so that datagrams waiting in the socket are
        credited before anyone expires.
        """
        now = self._seconds()
        self._notice_stall(now)
        self._now = now

    def request(self, datagram, source, reply_to):
        """
        Handle a datagram from C{source}, a canonical C{(host, port)}, and
        answer it at C{reply_to}: what the transport's writer takes (the
        address as received, or more: where to answer from).
        """
        # The path of every datagram, kept flat: at 100,000 requests a
        # second each call on it costs a few per cent.
        try:
            now = self._now
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
                    datagram=redacted(datagram),
                )
            reply = self._receive(source, datagram, now)
            if reply is ILLEGAL:
                # By the first byte: the request's code, if it has one.
                self.refused[datagram[:1]] += 1
            elif reply is None:
                # Nothing sent: its destination's budget gets back the
                # largest reply that admit() set aside.
                self.counts[UNANSWERED] += 1
                if admission is not None and admission.limited:
                    self._limiter.charge(admission, 0, now)
                return
            if self._held is None:
                # _send(), inlined.
                try:
                    self._write(reply, reply_to)
                except (OSError, MessageLengthError):
                    self.counts[UNSENT] += 1
                else:
                    if reply:  # most replies are empty: no addition for them
                        self.sent_bytes += len(reply)
                    if admission is not None and admission.limited:
                        self._limiter.charge(admission, len(reply), now)
            else:
                self._held.hold(reply, reply_to, admission)
            if not self._ends_batches and self._flush_call is None:
                self._flush_call = self._clock.callLater(0, self.flush)
        except Exception:
            self.failed[datagram[:1]] += 1
            self._fault(source)

    def _send(self, reply, reply_to, admission, now):
        try:
            self._write(reply, reply_to)
        except (OSError, MessageLengthError):
            # No route, a full buffer...: the client will time out.
            self.counts[UNSENT] += 1
            return
        if reply:
            self.sent_bytes += len(reply)
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
        if self._held is not None and not self._commit(changes, checkpoint):
            return  # undone: none of it happened
        if changes.events:
            self._log_events(changes.events)

    def _log_events(self, events):
        # One line per event while the budget lasts; counted beyond it.
        now = self._clock.seconds()
        take = self._event_lines.take
        for event in events:
            if take(None, 1, now) is None:
                log_change(self.log, event, self.room.idle_timeout)
            else:
                self.counts[UNLOGGED[type(event)]] += 1

    def _commit(self, changes, checkpoint):
        # Commit and answer; or, if the store fails, undo what the batch
        # did, since nobody was told: a poll takes nothing, a join makes no
        # member.  A full disk or an I/O error is logged once per outage
        # (with SQLite's words), and its end too; a bug as a bug.
        held = self._held
        replies = len(held)
        try:
            wrote = held.commit(changes, self._clock.seconds(), checkpoint)
        except StateWriteError as e:
            self._revert(replies)
            if self._write_error is None:
                self._write_error = str(e)
                self.log.error(
                    "cannot write the state file {path}: {error}; requests that "
                    "change the room get no reply until it can",
                    path=held.store.path,
                    error=self._write_error,
                )
        except StateFileError:
            self._revert(replies)  # the store is lost: the service stops, and says why
        except Exception:
            self._fault(None)
            self._revert(replies)
        else:
            if wrote and self._write_error is not None:
                self._write_error = None
                self.log.warn("the state file {path} can be written again", path=held.store.path)
            return True
        return False

    def _revert(self, replies):
        self.commit_failures += 1
        self.counts[UNCOMMITTED] += replies  # held for the commit, never sent
        try:
            self._held.store.revert(self.room)
        except StateFileError:
            pass  # the store is lost: the service stops, and says why
        except Exception:
            self._fault(None)  # the store is lost too

    def sweep(self):
        """
        Remove the members silent for too long, when nothing arrives; run
        every L{EXPIRY_INTERVAL}, it is also how the protocol sees stalls.
        """
        try:
            now = self._seconds()
            self._notice_stall(now)
            self._swept_at = now
            self.room.expire(now)
            self.flush()
        except Exception:
            self._fault(None)

    def _notice_stall(self, now):
        # The sweep did not run for longer than it should have: the
        # process was stopped or its machine paused (and no datagram could
        # be read), or the clock stepped, forward or back.  Idle timers
        # stop for that time, but for one interval's worth.
        swept = self._swept_at
        if swept is None or 0.0 <= now - swept <= STALL:
            return
        gap = now - swept
        lost = gap - EXPIRY_INTERVAL if gap > 0 else gap
        self._swept_at = now
        self.room.discount(lost)
        if self._event_lines.take(None, 1, now) is None:
            self.log.warn(
                "{gap:.1f} seconds between two sweeps for idle members (the server "
                "was stopped or its clock stepped): {lost:.1f} seconds of them do not "
                "count toward the idle timeout",
                gap=gap,
                lost=lost,
            )

    def checkpoint(self):
        """Save every member's idle timer, with a store."""
        self.flush(checkpoint=True)

    def _fault(self, source):
        # A bug, not the sender's fault; one traceback per interval, so
        # that a datagram which triggers it cannot flood the log.
        now = self._clock.seconds()
        last = self._last_fault_logged
        if last is None or now - last >= SUMMARY_INTERVAL:
            self._last_fault_logged = now
            self.log.failure(
                "request from {source} hit a bug; no reply sent",
                source="-" if source is None else format_address(source),
            )
        self.counts[FAULT] += 1

    def log_summary(self):
        """
        Log one line counting what was refused, dropped, unsent or failed
        since the last summary, if anything was: one line per interval,
        however much junk arrives.
        """
        now = self._clock.seconds()
        totals = self.counts.copy()
        totals[ILLEGAL_REQUEST] = sum(self.refused.values())
        counts = totals - self._summarised
        seconds = now - self._summarised_at
        self._summarised = totals
        self._summarised_at = now
        if not counts:
            return
        parts = []
        if counts[ILLEGAL_REQUEST]:
            parts.append(_counted(counts[ILLEGAL_REQUEST], "illegal request") + " refused")
        unlogged = {
            name: counts[UNLOGGED[kind]]
            for kind, name in _EVENT_NAMES.items()
            if counts[UNLOGGED[kind]]
        }
        if unlogged:
            parts.append(
                ", ".join(_counted(count, name) for name, count in unlogged.items())
                + " not logged one by one"
            )
        dropped = {
            reason: count
            for reason, count in counts.items()
            if reason not in _NOT_DROPS
        }
        for reason, count in sorted(dropped.items()):
            parts.append(f"{_counted(count, 'datagram')} dropped {reason}")
        if counts[UNANSWERED]:
            # Exactly Illegal message (a server's reply), a stale session
            # request, or, with the group in Redis, one Redis did not answer.
            parts.append(_counted(counts[UNANSWERED], "datagram") + " not answered")
        if counts[UNSENT]:
            parts.append(_counted(counts[UNSENT], "reply") + " not sent")
        if counts[UNCOMMITTED]:
            parts.append(
                _counted(counts[UNCOMMITTED], "reply") + " held back by a failed commit"
            )
        if counts[FAULT]:
            parts.append(_counted(counts[FAULT], "request") + " failed on a bug")
        self.log.info(
            "in the last {seconds:.0f} seconds: {summary}",
            seconds=seconds,
            summary="; ".join(parts),
            illegal=counts[ILLEGAL_REQUEST],
            dropped=dropped,
            unsent=counts[UNSENT],
            uncommitted=counts[UNCOMMITTED],
            faults=counts[FAULT],
            unanswered=counts[UNANSWERED],
            unlogged=unlogged,
        )

    def dropped(self):
        """How many datagrams the limits dropped, by reason: totals."""
        return {
            reason: count for reason, count in self.counts.items() if reason not in _NOT_DROPS
        }

    def requests(self):
        """
        How many datagrams reached the room, by request code and outcome:
        C{{(code, outcome): count}} (none of 0), totals that only grow.
        C{code} is the datagram's first byte when that is a request code
        (C{"1"} to C{"9"}, C{"0"}), else L{NO_CODE}; C{outcome} is
        L{udpchat.room.OK} (done as asked), L{udpchat.room.REFUSED}
        (C{Illegal message}, or a session's refusal), L{UNANSWERED} (no
        reply: exactly C{Illegal message}, or a session request the room
        leaves unanswered) or L{FAILED} (a bug).  With L{dropped}, every
        datagram read is counted once.

        The path of a datagram counts none of the requests the room does
        as asked: the room tells most (L{udpchat.room.Room.requests}), and
        a poll (C{5}) is what remains of the datagrams read.  A request
        answered C{Illegal message}, not answered, or failed is counted on
        its own way out.
        """
        tally = Counter(self.room.requests())
        room_unanswered = sum(n for (_, outcome), n in tally.items() if outcome == UNANSWERED)
        for counter, outcome in ((self.refused, REFUSED), (self.failed, FAILED)):
            for first, count in counter.items():
                tally[_CODE_OF_FIRST_BYTE.get(first, NO_CODE), outcome] += count
        # The datagrams left unanswered that the room does not count:
        # exactly Illegal message, which it never parses.
        tally[NO_CODE, UNANSWERED] += self.counts[UNANSWERED] - room_unanswered
        tally[_POLL, OK] += (
            self.received - sum(self.dropped().values()) - sum(tally.values())
        )
        return {key: count for key, count in tally.items() if count}


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


# Linux's IP_PKTINFO, which Python names only from 3.12 on (on Linux).
_IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)

_REPLY_SOURCES_KEPT = 256
"""Ancillary data built for replies, kept per local address: a few."""


class BatchingPort(udp.Port):
    """
    A UDP port that tells its protocol when a read of the socket is over
    (C{protocol.flush()}): the datagrams of one read are one batch, which
    shares one commit and one look at the room's changes, with no extra
    turn of the event loop.

    It hands each datagram to C{protocol.request(datagram, source,
    reply_to)}, with the sender's canonical C{(host, port)} and what
    L{replier} needs to answer it.  On a wildcard address (C{0.0.0.0},
    C{::}), it reads each datagram's destination address (C{IP_PKTINFO},
    C{IPV6_PKTINFO}) and answers from it: a host with several addresses
    would otherwise answer from the one its routing table prefers, which a
    connected client never hears.
    """

    ends_batches = True

    def _bindSocket(self):
        udp.Port._bindSocket(self)
        sock = self.socket
        self._read = self._read_plain
        self.answers_from_destination = False
        if ipaddress.ip_address(sock.getsockname()[0]).is_unspecified:
            if sock.family == socket.AF_INET6:
                level, option = socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO
            else:
                level, option = socket.IPPROTO_IP, _IP_PKTINFO
            sock.setsockopt(level, option, 1)
            self._read = self._read_with_destination
            self._reply_sources = {}
            self.answers_from_destination = True

    def replier(self):
        """
        The function that sends C{(reply, reply_to)}, for the C{reply_to}
        this port gave with the request.
        """
        if not self.answers_from_destination:
            return self.socket.sendto
        sendmsg = self.socket.sendmsg

        def reply_from_destination(reply, reply_to):
            address, source = reply_to
            sendmsg((reply,), source, 0, address)

        return reply_from_destination

    def doRead(self):
        # Read until the socket is empty, then end the batch.
        self.protocol.begin_batch()
        try:
            self._read()
        finally:
            self.protocol.flush()

    def _read_plain(self):
        # udp.Port.doRead, with what it looks up per datagram looked up
        # once per read.  The datagrams and bytes read are counted in
        # locals, added to the protocol's totals once per read: the count
        # costs what looking up maxThroughput once per datagram cost.
        protocol = self.protocol
        request = protocol.request
        recvfrom = self.socket.recvfrom
        size = self.maxPacketSize
        most = self.maxThroughput
        mapped = self.addressFamily == socket.AF_INET6
        read = count = 0
        try:
            while read < most:
                try:
                    datagram, address = recvfrom(size)
                except OSError as e:
                    if e.errno in _NOTHING_TO_READ:
                        return
                    raise
                read += len(datagram)
                count += 1
                if mapped:
                    address = address[:2]  # no flow information, no scope
                    host = address[0]
                    if host[:7] == "::ffff:" and "." in host:
                        request(datagram, (host[7:], address[1]), address)
                        continue
                request(datagram, address, address)
        finally:
            protocol.received += count
            protocol.received_bytes += read

    def _read_with_destination(self):
        # As _read_plain, with each datagram's destination address.
        protocol = self.protocol
        request = protocol.request
        recvmsg = self.socket.recvmsg
        size = self.maxPacketSize
        most = self.maxThroughput
        space = socket.CMSG_SPACE(20)  # an in6_pktinfo, or an in_pktinfo
        known = self._reply_sources.get
        read = count = 0
        try:
            while read < most:
                try:
                    datagram, ancillary, _, address = recvmsg(size, space)
                except OSError as e:
                    if e.errno in _NOTHING_TO_READ:
                        return
                    raise
                read += len(datagram)
                count += 1
                address = address[:2]
                host = address[0]
                source = (
                    (host[7:], address[1]) if host[:7] == "::ffff:" and "." in host else address
                )
                # The packet information is all the ancillary data asked for:
                # its bytes name the reply's source already built, if any.
                via = known(ancillary[0][2]) if ancillary else ()
                if via is None:
                    via = self._reply_source(ancillary)
                request(datagram, source, (address, via))
        finally:
            protocol.received += count
            protocol.received_bytes += read

    def _reply_source(self, ancillary):
        """
        The ancillary data that sends a reply from the address a request's
        C{ancillary} data says it was sent to; C{()} if it says nothing.
        """
        for level, kind, data in ancillary:
            if kind == socket.IPV6_PKTINFO and level == socket.IPPROTO_IPV6:
                break
            if kind == _IP_PKTINFO and level == socket.IPPROTO_IP:
                break
        else:
            return ()
        sources = self._reply_sources
        source = sources.get(data)
        if source is None:
            if level == socket.IPPROTO_IP:
                # in_pktinfo: interface, local address, header destination.
                # Answer from the local address; let routing pick the way.
                reply = b"\0\0\0\0" + data[4:8] + b"\0\0\0\0"
            elif data[0] == 0xFE and data[1] & 0xC0 == 0x80:
                reply = data[:20]  # link-local: the interface is its scope
            else:
                # in6_pktinfo: address, interface.  Any way out will do.
                reply = data[:16] + b"\0\0\0\0"
            if len(sources) >= _REPLY_SOURCES_KEPT:
                sources.clear()
            source = sources[data] = [(level, kind, reply)]
        return source


class ChatService(Service):
    """
    Serve a L{ChatServerProtocol} on a UDP socket bound beforehand.

    twistd builds this service before it daemonizes and drops privileges;
    the socket, already bound, crosses both, and the reactor adopts it here.
    The protocol's store, if any, is opened here too, and closed last;
    while the service runs it looks once a second whether the state file is
    still there, and stops the reactor if it is not.

    @param sock: a bound, non-blocking UDP socket, which this service owns.
    """

    log = Logger()

    def __init__(self, sock, protocol, reactor):
        self._socket = sock
        self.protocol = protocol
        self._reactor = reactor
        self.port = None
        self._watching = None

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
            self._watching = LoopingCall(self._watch)
            self._watching.clock = self._reactor
            self._watching.start(WATCH_INTERVAL, now=False)
        sock = self._socket
        # Read one byte more than any legal request, so that an oversize
        # datagram is seen as oversize, never parsed truncated.  The port is
        # what reactor.adoptDatagramPort() makes, but one that ends batches.
        self.port = BatchingPort._fromListeningDescriptor(
            self._reactor, sock.fileno(), sock.family, self.protocol, MAX_SESSION_DATAGRAM_BYTES + 1
        )
        self.port.startListening()
        sock.close()  # the port holds its own duplicate
        address = self.port.getHost()
        self.log.info(
            "udpchat listening on UDP {host} port {port}",
            host=canonical_address((address.host, address.port))[0],
            port=address.port,
        )
        kept_in = getattr(self.protocol, "kept_in", None)
        if kept_in is not None:
            self.log.info("the group is kept in {kept_in}", kept_in=kept_in)

    def stopService(self):
        Service.stopService(self)
        if self._watching is not None and self._watching.running:
            self._watching.stop()
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
            members=_counted(room.member_count, "member"),
            lines=_counted(room.stored_lines, "stored line"),
        )
        kept_in = getattr(protocol, "kept_in", None)
        if kept_in is not None:
            self.log.info("udpchat stopped: the group stays in {kept_in}", kept_in=kept_in)
            return
        if store is None:
            self.log.info(
                "udpchat stopped: {members} and {lines} dropped (the room "
                "lives in memory only)",
                **counts,
            )
            return
        store.watch()  # a last look: never "kept" in a file that is gone
        protocol.checkpoint()
        kept = store.close()
        if store.lost is None:
            self.log.info(
                "udpchat stopped: {members} and {lines} kept in {path}",
                path=store.path,
                **counts,
            )
        elif kept:
            self.log.warn(
                "udpchat stopped: {members} and {lines} kept in {path} "
                "({reason}: its commits were written back)",
                path=store.path,
                reason=store.lost,
                **counts,
            )
        else:
            self.log.error(
                "udpchat stopped: {members} and {lines} lost: {reason}",
                reason=store.lost,
                **counts,
            )

    def _watch(self):
        # A state file deleted or replaced under the server keeps none of
        # the promises its replies make: stop, as on SIGTERM, saying why.
        reason = self.protocol.store.watch()
        if reason is None:
            return
        self._watching.stop()
        self.log.error(
            "the state file cannot be used any more: {reason}; udpchat stops", reason=reason
        )
        try:
            self._reactor.stop()
        except ReactorNotRunning:
            pass  # stopping already

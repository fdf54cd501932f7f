"""
The Twisted side of a room kept in Redis (C{--state redis://...}): several
daemons serve one group, each a L{SharedRoomProtocol} in front of the same
keys.

Each batch of datagrams (one read of the socket) becomes one call of the
rules' script (L{udpchat.redisroom}): one round trip for many requests, and
every request of it applied atomically before any reply to it is sent.
Calls go out on one connection, in order, without waiting for the previous
answer, so that a busy daemon keeps Redis busy rather than waiting on it.

While Redis cannot be reached, requests get no reply (nothing is promised
that is not stored), one line says so, one line says when it is back, and
the connection comes back by itself (txredisapi reconnects).
"""

from time import perf_counter

from twisted.application.service import Service
from twisted.internet.defer import fail
from twisted.logger import Logger, LogLevel

from udpchat.redisroom import SCRIPT, SCRIPT_SHA
from udpchat.server import UNANSWERED, ChatServerProtocol, format_address
from udpchat.wire import ILLEGAL, redacted

CALL_TIMEOUT = 5.0
"""
Seconds a call may take before its requests are given up (unanswered) and
the connection is dropped and made again: Redis hangs, or the network does.
"""

MAX_WAITING = 10000
"""
Requests that may wait for Redis at once; more are dropped unanswered
(C{"waiting"}), so that a slow Redis cannot make a daemon's memory grow.
"""

WAITING = "waiting"
"""The counts key of requests dropped since too many waited for Redis."""


class RedisUnavailable(Exception):
    """No connection to Redis at the moment: the call was not made."""


class RedisLink(Service):
    """
    A daemon's connection to its group's Redis: calls of the script, each
    with a time limit, and a log line when Redis goes and when it is back.

    @param address: a L{udpchat.redisroom.RedisAddress}.
    @param clock: an L{IReactorTime}, for the time limits.
    @param connect: makes the connection, as C{txredisapi.lazyConnection};
        injected for tests.
    """

    log = Logger()

    def __init__(self, address, clock, connect=None, timeout=CALL_TIMEOUT):
        self.address = address
        self._clock = clock
        self._connect = connect
        self._timeout = timeout
        self._redis = None
        self._lost_at = None  # when the outage under way began
        self._started_at = None
        self._answered = False  # whether Redis ever answered a call
        self.failures = 0

    def startService(self):
        Service.startService(self)
        self._started_at = self._clock.seconds()
        connect = self._connect
        if connect is None:
            # Imported only now: txredisapi is an extra (udpchat[redis]).
            from txredisapi import lazyConnection as connect
        address = self.address
        # Bytes in and out (charset None): names and lines are UTF-8
        # already, and a reply is sent as Redis returns it.
        self._redis = connect(
            host=address.host,
            port=address.port,
            dbid=address.db,
            username=address.username,
            password=address.password,
            charset=None,
            convertNumbers=False,
            reconnect=True,
            connectTimeout=self._timeout,
            replyTimeout=self._timeout,
        )

    def stopService(self):
        Service.stopService(self)
        redis, self._redis = self._redis, None
        if redis is not None:
            return redis.disconnect()

    @property
    def connected(self):
        """Whether a call made now would go out to Redis at once."""
        redis = self._redis
        return redis is not None and redis._factory.size > 0

    def call(self, arguments):
        """
        Run the script with C{arguments} (after its name, see
        L{udpchat.redisroom.RedisRoom.arguments}).

        @return: a Deferred that fires with the script's answer, or fails
            (L{RedisUnavailable} at once while there is no connection) once
            the outage is logged: not while the first connection is being
            made, for as long as a call may take.
        """
        if not self.connected and self._answered:
            # txredisapi would hold the call until it reconnects, however
            # long that takes: fail it now, as a lost datagram.  Only the
            # calls made before the first connection wait for it (within
            # the time limit): datagrams read as the daemon starts.
            return self._failed(RedisUnavailable("not connected"))
        called = self._redis.execute_command(b"EVALSHA", SCRIPT_SHA, *arguments)
        called.addErrback(self._load_script, arguments)
        called.addTimeout(self._timeout, self._clock)
        called.addCallbacks(self._succeeded, self._failed)
        return called

    def _load_script(self, failure, arguments):
        # A Redis that restarted (or was flushed) no longer knows the
        # script: give it whole, once; EVAL also keeps it for EVALSHA.
        if "NOSCRIPT" not in str(failure.value):
            return failure
        return self._redis.execute_command(b"EVAL", SCRIPT, *arguments)

    def _succeeded(self, answer):
        self._answered = True
        if self._lost_at is not None:
            self.log.warn(
                "Redis at {address} answers again, after {seconds:.1f} seconds",
                address=str(self.address),
                seconds=self._clock.seconds() - self._lost_at,
            )
            self._lost_at = None
        return answer

    def _failed(self, failure):
        self.failures += 1
        connecting = (
            not self._answered and self._clock.seconds() - self._started_at < self._timeout
        )
        if self._lost_at is None and not connecting:
            self._lost_at = self._clock.seconds()
            reason = getattr(failure, "value", failure)
            self.log.error(
                "Redis at {address} does not answer ({reason}): requests get "
                "no reply until it does",
                address=str(self.address),
                reason=f"{type(reason).__name__}: {reason}",
            )
        return fail(RedisUnavailable(str(getattr(failure, "value", failure))))


class SharedRoomProtocol(ChatServerProtocol):
    """
    A L{ChatServerProtocol} whose room is in Redis: the datagrams of a
    batch wait for the script's answer, then get their replies.

    @param room: a L{udpchat.redisroom.RedisRoom}.
    @param link: the L{RedisLink} its calls go through.
    """

    def __init__(self, room, link, clock, log_level=LogLevel.info, limiter=None, timer=perf_counter):
        ChatServerProtocol.__init__(self, room, clock, log_level, limiter, timer=timer)
        self.link = link
        self.kept_in = f"Redis at {link.address}, group {room.prefix.decode()}"
        self.waiting = 0  # requests sent to Redis, not yet answered
        self._batch = []  # (datagram, reply_to, admission)
        self._encoded = []

    def request(self, datagram, source, reply_to):
        """Add a datagram to the batch under way: L{flush} sends it."""
        try:
            now = self._now
            admission = None
            if self._admit is not None:
                admission = self._admit(source, now)
                if not admission:
                    self.counts[admission.reason] += 1
                    return
            if self.waiting + len(self._batch) >= MAX_WAITING:
                self.counts[WAITING] += 1
                self._unanswered(admission, now)
                return
            if self._log_requests:
                self.log.debug(
                    "{source} sent {datagram!r}",
                    source=format_address(source),
                    datagram=redacted(datagram),
                )
            self._encoded.append(self.room.encode(source, datagram))
            self._batch.append((datagram, reply_to, admission))
            if not self._ends_batches and self._flush_call is None:
                self._flush_call = self._clock.callLater(0, self.flush)
        except Exception:
            self.failed[datagram[:1]] += 1
            self._fault(source)

    def _unanswered(self, admission, now):
        # Nothing sent: its destination's budget gets back the largest
        # reply that admit() set aside.
        if admission is not None and admission.limited:
            self._limiter.charge(admission, 0, now)

    def flush(self, checkpoint=False):
        """End a batch: one call of the script for all its datagrams."""
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        if not self._batch:
            return
        batch, encoded, now = self._batch, self._encoded, self._now
        self._batch, self._encoded = [], []
        self.waiting += len(batch)
        called = self.link.call(self.room.arguments(encoded, now))
        called.addCallbacks(self._answered, self._not_stored, (batch, now), None, (batch, now))
        called.addErrback(lambda failure: self._fault(None))

    def _answered(self, answer, batch, now):
        self.waiting -= len(batch)
        replies, events = self.room.results(answer, [datagram for datagram, _, _ in batch])
        for (datagram, reply_to, admission), reply in zip(batch, replies):
            if reply is None:
                self.counts[UNANSWERED] += 1
                self._unanswered(admission, now)
                continue
            if reply == ILLEGAL:
                self.refused[datagram[:1]] += 1
            self._send(reply, reply_to, admission, now)
        if events:
            self._log_events(events)

    def _not_stored(self, failure, batch, now):
        # Redis did not answer: whether it applied the batch is unknown,
        # so nothing is replied; clients ask again.
        self.waiting -= len(batch)
        self.counts[UNANSWERED] += len(batch)
        self.room.unanswered([datagram for datagram, _, _ in batch])
        for _, _, admission in batch:
            self._unanswered(admission, now)

    def sweep(self):
        """Remove the group's idle members (whichever daemon comes first)."""
        now = self._seconds()
        self._swept_at = now
        called = self.link.call(self.room.arguments([], now))
        called.addCallbacks(self._swept, lambda failure: None)
        called.addErrback(lambda failure: self._fault(None))

    def _swept(self, answer):
        _, events = self.room.results(answer, [])
        if events:
            self._log_events(events)

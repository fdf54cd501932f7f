"""
The client side of sessions (README.rst, "Sessions"): the chat mode's
requests, each sent until it is answered, and acted on once.

L{SessionClient} registers (C{6 Nonce Name}), then numbers its requests
(says, polls by position, renames, the leave), one outstanding at a time,
each sent again on a retransmission timeout (L{RoundTrips}, RFC 6298,
through a L{Retransmission}) until its reply arrives, and gives up after a
deadline.  A reply whose number is not the outstanding request's is a late
duplicate and is ignored, so that every line is shown once.  When the
server no longer knows the session (C{Seq unknown}: restarted, or the
member idle too long) the client registers again; when the server has no
sessions (C{Illegal message} to the registration) it hands everything to
the 1.0 L{ChatClient} on the same socket.

Above L{udpchat.session}, whose 1.0 client it falls back on, and below the
chat mode (L{udpchat.console}); the raw console never loads it.  Time comes
from an injected clock (an C{IReactorTime}: C{seconds} and C{callLater}),
so that tests drive it with a L{twisted.internet.task.Clock}; requests are
built and replies read by L{udpchat.wire}, which alone spells the codes.
"""

import os
from collections import deque

from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol

from udpchat import wire
from udpchat.session import DEFAULT_TIMEOUT, MAX_REPLY_BYTES, ChatClient, Refused, show_address

INITIAL_RTO = 1.0
"""Seconds to wait for a reply before any round trip was measured."""

MIN_RTO = 0.2
"""The shortest wait for a reply: a chat needs no less, and a loaded server
may take that long."""

MAX_RTO = 8.0
"""The longest wait between two sendings of a request, however backed off."""

GIVE_UP = 30.0
"""Seconds without a reply to a request after which the client gives up."""

# RFC 6298, section 2: the gains of the smoothed round trip and of its
# variation, and how many variations the timeout allows for.
_ALPHA = 1 / 8
_BETA = 1 / 4
_K = 4

FALLBACK = "the server has no sessions (udpchat 1.0?): using the 1.0 protocol"
"""Said once, when the server answers the registration C{Illegal message}."""


def new_nonce():
    """A registration's nonce: 128 bits from the system's cryptographic source."""
    return os.urandom(wire.TOKEN_BYTES // 2).hex().encode()


class RoundTrips:
    """
    The retransmission timeout (RTO), from the round trips measured, as RFC
    6298 (section 2) computes it: the smoothed round trip (SRTT) plus four
    times its variation (RTTVAR), at least C{minimum}; C{initial} before the
    first measurement.  Each L{back_off} doubles it, up to C{maximum}, until
    the next measurement (section 5).

    @ivar timeout: the RTO now, in seconds.
    @ivar srtt: the smoothed round trip, None before any measurement.
    @ivar rttvar: its variation, None before any measurement.
    """

    def __init__(self, initial=INITIAL_RTO, minimum=MIN_RTO, maximum=MAX_RTO):
        self._minimum = minimum
        self._maximum = maximum
        self.srtt = None
        self.rttvar = None
        self.timeout = min(initial, maximum)

    def measured(self, rtt):
        """Take a round trip of C{rtt} seconds into account (never one of a repeat)."""
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            # RTTVAR first: it uses the SRTT before this sample.
            self.rttvar = (1 - _BETA) * self.rttvar + _BETA * abs(self.srtt - rtt)
            self.srtt = (1 - _ALPHA) * self.srtt + _ALPHA * rtt
        rto = self.srtt + _K * self.rttvar
        self.timeout = min(max(rto, self._minimum), self._maximum)

    def back_off(self):
        """A timeout expired: wait twice as long, up to the maximum."""
        self.timeout = min(self.timeout * 2, self._maximum)


class Retransmission:
    """
    One request, sent at once and then again each time the timeout of
    C{round_trips} expires (backing it off), until L{answered} or
    L{cancel}; C{expired} is called if C{give_up} seconds pass first.  The
    round trip is measured only when the request was sent once (Karn's
    rule: the reply to a repeat may answer any of the sendings).

    @param clock: an C{IReactorTime}.
    @param transmit: sends the request (again), with no argument.
    """

    def __init__(self, clock, round_trips, transmit, give_up, expired):
        self._clock = clock
        self._round_trips = round_trips
        self._transmit = transmit
        self._expired = expired
        self._first = clock.seconds()
        self._repeated = False
        self._deadline = clock.callLater(give_up, self._expire)
        self._timer = clock.callLater(round_trips.timeout, self._repeat)
        transmit()

    def _repeat(self):
        self._repeated = True
        self._round_trips.back_off()
        self._timer = self._clock.callLater(self._round_trips.timeout, self._repeat)
        self._transmit()

    def _expire(self):
        self._timer.cancel()
        self._expired()

    def answered(self):
        """The reply arrived: stop, and measure the round trip if it may."""
        self.cancel()
        if not self._repeated:
            self._round_trips.measured(self._clock.seconds() - self._first)

    def cancel(self):
        """Stop sending, and waiting."""
        for call in (self._timer, self._deadline):
            if call.active():
                call.cancel()


# What a request of the session client does.
_REGISTER = "join"
_SAY = "say"
_RENAME = "rename"
_POLL = "poll"
_LEAVE = "leave"
_RAW = "raw"


class _Pending:
    """
    A request waiting its turn or its reply.

    @ivar op: what it does: L{_REGISTER}, L{_SAY}...
    @ivar argument: its name, text or datagram, or None.
    @ivar answered: a L{Deferred} that fires with the outcome, or None for
        the client's own requests (automatic polls, the closing leave).
    @ivar seq: its number, once sent (0 for a registration).
    @ivar datagram: its bytes, built when first sent: a repeat is the same.
    """

    __slots__ = ("op", "argument", "answered", "seq", "datagram")

    def __init__(self, op, argument=None, answered=None):
        self.op = op
        self.argument = argument
        self.answered = answered
        self.seq = None
        self.datagram = None

    @property
    def automatic(self):
        return self.answered is None


def _delegate(legacy, pending):
    """Hand C{pending} to the 1.0 client C{legacy}: its Deferred."""
    request = getattr(legacy, pending.op)
    return request() if pending.argument is None else request(pending.argument)


class SessionClient(DatagramProtocol):
    """
    The chat mode's requests to the server, by sessions when it has them.

    Requests (L{join}, L{say}, L{rename}, L{poll}, L{raw}) return a
    L{Deferred} that fires with the reply: the member list, the lines, or
    empty; a L{Refused}; or None when none came.  The server's lines that
    the automatic polls bring go to C{show}.

    @param server: the server's C{(host, port)}, host an IP literal.
    @param clock: an C{IReactorTime}.
    @param show: called with the lines (bytes) of an automatic poll's reply.
    @param warn: called with the client's own messages (str).
    @param forgotten: called when the server refuses a request as a 1.0
        server does a non-member's: it no longer knows this member.
    @param lost: called with the L{Deferred} of the registration that the
        client sends by itself when the server answers C{Seq unknown}; the
        requests not done wait for it.
    @param gave_up: called with a message (str) when a request went
        without a reply for C{timeout} seconds: nothing more is sent.
    @param poll_interval: seconds between automatic polls; 0 for none.
    @param timeout: seconds to go on sending a request without a reply.
    @param legacy_timeout: seconds to wait for a reply to a request that
        is not sent again: a L{raw} one, and all after a fallback to 1.0.
    @param new_nonce: returns a fresh nonce for each registration.
    @param round_trips: the L{RoundTrips}, to start from another state.

    @ivar sessions: True once the server answered a registration as a
        server with sessions, False once the client fell back to 1.0, None
        while not known.
    @ivar name: the member's name as the server has it, once registered.
    """

    noisy = False

    def __init__(
        self,
        server,
        clock,
        show,
        warn,
        forgotten,
        lost,
        gave_up,
        poll_interval=1.0,
        timeout=GIVE_UP,
        legacy_timeout=DEFAULT_TIMEOUT,
        new_nonce=new_nonce,
        round_trips=None,
    ):
        self.server = server
        self._clock = clock
        self._show = show
        self._warn = warn
        self._forgotten = forgotten
        self._lost = lost
        self._gave_up = gave_up
        self._poll_interval = poll_interval
        self._timeout = timeout
        self._legacy_timeout = legacy_timeout
        self._new_nonce = new_nonce
        self._round_trips = round_trips or RoundTrips()
        self.sessions = None
        self.name = None
        self._token = None
        self._ended_tokens = set()  # late replies to their registrations are ignored
        self._seq = 0  # the number of the last request of the session
        self._position = 0  # where the next poll reads from
        self._registration = None  # a registration waiting to be sent
        self._queue = deque()  # _Pending requests waiting their turn
        self._outstanding = None
        self._sending = None  # the Retransmission, or the timeout of a raw request
        self._poll_call = None
        self._poll_refusal = None  # the last reason given for refusing a poll
        self._unsendable = False  # "cannot send" said, and nothing answered since
        self._finishing = None
        self._left = False  # the closing leave has been sent
        self._dead = False  # gave up: nothing more is sent
        self._expiring = False
        self._legacy = None  # the 1.0 ChatClient, after a fallback
        self._unanswered = 0

    @property
    def unanswered(self):
        """How many of the user's requests got no reply (a lost session aside)."""
        return self._unanswered + (self._legacy.unanswered if self._legacy else 0)

    @property
    def registered(self):
        """Whether the server counts this client a member, as far as it knows."""
        if self._legacy is not None:
            return self._legacy.registered
        return self._token is not None

    # The chat mode's requests.

    def join(self, name):
        """Register as C{name} (C{6}): the reply is the member list."""
        if self._legacy is not None:
            return self._legacy.join(name)
        if self._finishing is not None or self._dead:
            return defer.succeed(None)
        if self._registration is not None:
            self._answer(self._registration, None)  # superseded before it was sent
        self._registration = _Pending(_REGISTER, name, defer.Deferred())
        answered = self._registration.answered
        self._send_next()
        return answered

    def say(self, text):
        """Say C{text} (C{7}): the reply is empty."""
        return self._request(_SAY, text)

    def rename(self, name):
        """Take the name C{name} (C{9}): the reply is empty."""
        return self._request(_RENAME, name)

    def poll(self):
        """Ask for the lines (C{8}): the reply is the lines."""
        return self._request(_POLL)

    def raw(self, datagram):
        """
        Send C{datagram} as it is, once: the reply is the next datagram from
        the server, whatever it is, or None after C{legacy_timeout}.
        """
        return self._request(_RAW, datagram)

    def _request(self, op, argument=None):
        pending = _Pending(op, argument, defer.Deferred())
        if self._legacy is not None:
            return _delegate(self._legacy, pending)
        if self._finishing is not None or self._dead:
            return defer.succeed(None)
        self._queue.append(pending)
        self._send_next()
        return pending.answered

    def finish(self):
        """
        Leave, once the requests queued are done (or given up), if registered.

        @return: a L{Deferred} that fires when nothing is left to send.
        """
        if self._legacy is not None:
            return self._legacy.finish()
        if self._finishing is None:
            self._finishing = defer.Deferred()
            self._stop_polling()
            if self._dead:
                if not self._expiring:
                    self._finishing.callback(None)
            else:
                self._send_next()
        return self._finishing

    # Sending.

    def _send_next(self):
        while self._outstanding is None and not self._dead and self._legacy is None:
            if self._registration is not None:
                pending, self._registration = self._registration, None
                self._start(pending)
                return
            if not self._queue:
                break
            pending = self._queue[0]
            if pending.op is not _RAW and self._token is None:
                if self._finishing is None:
                    return  # it waits for a registration
                # Nothing will register now: it cannot be sent.
                self._queue.popleft()
                self._unanswered += 1
                self._answer(pending, None)
                continue
            self._queue.popleft()
            self._start(pending)
            return
        if (
            self._finishing is None
            or self._outstanding is not None
            or self._dead
            or self._legacy is not None
            or self._registration is not None
            or self._queue
        ):
            return
        if self._token is not None and not self._left:
            self._left = True
            self._start(_Pending(_LEAVE))
        elif not self._finishing.called:
            self._finishing.callback(None)

    def _start(self, pending):
        if pending.datagram is None:
            pending.datagram = self._encode(pending)
        self._outstanding = pending
        if pending.op is _RAW:
            self._sending = self._clock.callLater(self._legacy_timeout, self._raw_timed_out)
            self._transmit(pending.datagram)
        else:
            self._sending = Retransmission(
                self._clock,
                self._round_trips,
                lambda: self._transmit(pending.datagram),
                self._timeout,
                self._expired,
            )

    def _encode(self, pending):
        op = pending.op
        if op is _RAW:
            return pending.argument
        if op is _REGISTER:
            pending.seq = 0
            return wire.encode_request(wire.Register(self._new_nonce(), pending.argument))
        self._seq += 1
        pending.seq = seq = self._seq
        token = self._token
        if op is _SAY:
            request = wire.SessionSay(token, seq, pending.argument)
        elif op is _RENAME:
            request = wire.SessionRename(token, seq, pending.argument)
        elif op is _POLL:
            request = wire.SessionFetch(token, seq, self._position)
        else:
            request = wire.SessionLeave(token, seq)
        return wire.encode_request(request)

    def _transmit(self, datagram):
        try:
            self.transport.write(datagram, self.server)
        except OSError as e:
            # No route, say: the retransmission goes on, and gives up in time.
            if not self._unsendable:
                self._unsendable = True
                self._warn(f"cannot send to {show_address(self.server)}: {e.strerror or e}")

    def _answer(self, pending, outcome):
        if pending.answered is not None and not pending.answered.called:
            pending.answered.callback(outcome)

    # Replies.

    def datagramReceived(self, datagram, address):
        if self._legacy is not None:
            self._legacy.datagramReceived(datagram, address)
            return
        pending = self._outstanding
        if address != self.server or pending is None:
            return  # not the server, or nothing asked
        if len(datagram) > MAX_REPLY_BYTES:
            # Cut by the system: read whole, it could say something else.
            self._warn(
                f"a reply from {show_address(self.server)} was longer than "
                f"{MAX_REPLY_BYTES} bytes and could not be read whole: not taken"
            )
            if pending.op is _RAW:
                self._raw_done()
                self._unanswered += 1
                self._answer(pending, None)
                self._send_next()
            return
        if pending.op is _RAW:
            self._raw_done()
            self._answer(pending, datagram)
            self._send_next()
        elif datagram == wire.ILLEGAL:
            self._illegal(pending)
        else:
            try:
                reply = wire.parse_session_reply(datagram)
            except wire.IllegalMessage:
                return  # no reply to a session request: the request goes on
            if reply.seq != pending.seq:
                return  # a late duplicate, or a reply to a registration done
            if pending.op is _REGISTER:
                self._registration_answered(pending, reply)
            else:
                self._numbered_answered(pending, reply)

    def _done(self):
        self._sending.answered()
        self._sending = None
        self._outstanding = None
        self._unsendable = False

    def _registration_answered(self, pending, reply):
        if reply.kind == wire.REGISTERED_REPLY:
            if reply.token in self._ended_tokens:
                return  # the late reply to an earlier registration
        elif reply.kind != wire.REFUSED_REPLY:
            return
        self._done()
        self.sessions = True
        if reply.kind == wire.REFUSED_REPLY:
            self._answer(pending, Refused(reply.reason))
        else:
            self._token = reply.token
            self._seq = 0
            self._position = reply.position
            self.name = pending.argument
            self._schedule_poll(self._poll_interval)
            self._answer(pending, reply.body)
        self._send_next()

    def _numbered_answered(self, pending, reply):
        kind = reply.kind
        op = pending.op
        if (
            kind == wire.REGISTERED_REPLY
            or (kind == wire.FETCHED_REPLY and op is not _POLL)
            or (kind == wire.DONE_REPLY and op is _POLL)
        ):
            return  # not the form of a reply to this request
        self._done()
        if kind == wire.UNKNOWN_REPLY:
            if op is _LEAVE:
                self._ended()  # after a leave, "unknown" means it is done
                self._answer(pending, wire.EMPTY)
            else:
                self._session_lost(pending)
                return
        elif kind == wire.REFUSED_REPLY:
            self._refused(pending, reply.reason)
        elif op is _POLL:
            self._position = reply.position
            self._poll_refusal = None
            lines = reply.body
            self._schedule_poll(0 if lines else self._poll_interval)
            if pending.automatic:
                if lines:
                    self._show(lines)
            else:
                self._answer(pending, lines)
        else:
            if op is _RENAME:
                self.name = pending.argument
            elif op is _LEAVE:
                self._ended()
            self._answer(pending, wire.EMPTY)
        self._send_next()

    def _refused(self, pending, reason):
        if not pending.automatic:
            self._answer(pending, Refused(reason))
        elif pending.op is _POLL:
            if reason != self._poll_refusal:
                self._poll_refusal = reason
                self._warn(f"the server refused an automatic poll: {reason}")
            self._schedule_poll(self._poll_interval)

    def _illegal(self, pending):
        """C{Illegal message}, in reply to a well-formed session request."""
        if pending.op is _REGISTER and not self.sessions:
            self._fall_back(pending)
            return
        self._done()
        if pending.op is _REGISTER:
            # A server with sessions refusing in 1.0's words.
            self._answer(pending, Refused())
        else:
            # The server takes no session request any more (it runs
            # without sessions now?): as a 1.0 server's forgotten member.
            self.sessions = None
            self._ended()
            self._answer(pending, Refused())
            self._forgotten()
        self._send_next()

    def _fall_back(self, pending):
        self._done()
        self.sessions = False
        self._warn(FALLBACK)
        legacy = ChatClient(
            self.server,
            self._clock,
            show=self._show,
            warn=self._warn,
            forgotten=self._forgotten,
            poll_interval=self._poll_interval,
            timeout=self._legacy_timeout,
        )
        legacy.makeConnection(self.transport)  # the same socket, the same member
        self._legacy = legacy
        queue, self._queue = self._queue, deque()
        for waiting in (pending, *queue):
            if not waiting.automatic:
                _delegate(legacy, waiting).chainDeferred(waiting.answered)
        if self._finishing is not None:
            legacy.finish().chainDeferred(self._finishing)

    def _ended(self):
        # The session is over: its token will not be answered any more.
        self._ended_tokens.add(self._token)
        self._token = None
        self._stop_polling()

    def _session_lost(self, pending):
        """
        C{Seq unknown}: the server no longer knows the session.  Register
        again, with a new nonce; the requests not done go after it.
        """
        self._ended()
        if not pending.automatic:
            pending.seq = pending.datagram = None  # to be numbered anew
            self._queue.appendleft(pending)
        if self._finishing is not None and all(p.automatic for p in self._queue):
            self._send_next()  # nothing to deliver: no need to come back
            return
        self._registration = _Pending(_REGISTER, self.name, defer.Deferred())
        self._lost(self._registration.answered)
        self._send_next()

    def _expired(self):
        """A request went without a reply for the whole deadline: give up."""
        pending, self._outstanding, self._sending = self._outstanding, None, None
        self._dead = True
        self._expiring = True
        self._stop_polling()
        self._gave_up(f"no reply from the server for {self._timeout:g} seconds")
        waiting = [pending, self._registration, *self._queue]
        self._registration = None
        self._queue.clear()
        for each in waiting:
            if each is not None:
                self._answer(each, None)
        self._expiring = False
        if self._finishing is not None and not self._finishing.called:
            self._finishing.callback(None)

    def _raw_done(self):
        if self._sending.active():
            self._sending.cancel()
        self._sending = None
        self._outstanding = None

    def _raw_timed_out(self):
        pending, self._outstanding, self._sending = self._outstanding, None, None
        self._unanswered += 1
        self._answer(pending, None)
        self._send_next()

    # Automatic polling.

    def _schedule_poll(self, delay):
        if not self._poll_interval or self._finishing is not None or self._token is None:
            return
        if self._poll_call is not None and self._poll_call.active():
            if delay:
                return
            self._poll_call.cancel()
        self._poll_call = self._clock.callLater(delay, self._poll)

    def _poll(self):
        self._poll_call = None
        if self._token is None or self._finishing is not None or self._dead:
            return
        waiting = [self._outstanding, *self._queue]
        if not any(p is not None and p.op is _POLL and p.automatic for p in waiting):
            self._queue.append(_Pending(_POLL))
            self._send_next()

    def _stop_polling(self):
        if self._poll_call is not None and self._poll_call.active():
            self._poll_call.cancel()
        self._poll_call = None
        self._queue = deque(p for p in self._queue if not (p.op is _POLL and p.automatic))

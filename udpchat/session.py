"""
A client's session with a udpchat server, under whatever input and output
the user has: the 1.0 protocol (L{ChatClient}: one request outstanding at a
time, its reply paired with it, a timeout each, automatic polling), and the
L{Session} that the raw console (L{udpchat.raw}) and the chat mode
(L{udpchat.console}) build on: leaving, Ctrl-C, the exit status.  The chat
mode talks to the server through L{udpchat.reliable} (sessions), which
falls back on L{ChatClient} when the server has none; both answer the chat
mode's requests (L{ChatClient.join}, L{ChatClient.say}...) alike: with the
reply, a L{Refused}, or None.

The bottom of the client wing: it imports only L{udpchat.wire}, through
which it builds and classifies requests (it spells no request code), and
knows nothing of stdin, terminals or the command line.
"""

import signal
import sys
from collections import deque
from dataclasses import dataclass

from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol

from udpchat import wire

NO_REPLY = 1
"""The exit status when a request got no reply, or the session failed."""

INTERRUPTED = 128 + signal.SIGINT
"""The exit status after a second Ctrl-C, as shells report an interrupted job."""

MAX_REPLY_BYTES = 65535
"""
The largest reply taken: more than any UDP datagram holds (65,507 bytes over
IPv4, 65,527 over IPv6), so every reply a server can send arrives whole.
"""

READ_BYTES = MAX_REPLY_BYTES + 1
"""
How much the client's port reads at once (its C{maxPacketSize}): a byte
more than L{MAX_REPLY_BYTES}, so that a datagram the system cut to that
size is known to be cut, and never shown as if it were whole.
"""

DEFAULT_TIMEOUT = 2.0
"""Seconds a 1.0 request waits for its reply (C{--timeout}'s default)."""

_LEAVE = wire.encode_request(wire.LEAVE)
_FETCH = wire.encode_request(wire.FETCH)


@dataclass(frozen=True, slots=True)
class Refused:
    """
    What a chat-mode request's L{Deferred} fires with when the server
    refused it.

    @ivar reason: why, as one of L{wire}'s reasons (L{wire.NAME_TAKEN}...)
        when the server said (a session's C{Seq refused Reason}); None when
        it did not (1.0's C{Illegal message}).
    """

    reason: str = None


def _refusal(reply):
    # 1.0's one refusal says nothing of why.
    return Refused() if reply == wire.ILLEGAL else reply


def complain(message):
    """
    Tell the user something on stderr, the client's own channel.  If stderr
    is gone (a closed pipe, a hung-up terminal) there is nobody to tell:
    the session goes on, and ends, all the same.
    """
    try:
        sys.stderr.write(f"udpchat.client: {message}\n")
        sys.stderr.flush()
    except OSError:
        pass


class _Request:
    """
    A request waiting its turn or its reply.

    @ivar kind: the request's class (L{wire.Join}, L{wire.Fetch}...), or
        C{None} for a datagram that the protocol refuses.
    @ivar automatic: sent by the client itself: a poll, or the closing C{4}.
    @ivar answered: for the user's requests, a L{Deferred} that fires with
        the reply, or with C{None} when none came.
    """

    __slots__ = ("datagram", "kind", "automatic", "answered")

    def __init__(self, datagram, automatic, answered=None):
        self.datagram = datagram
        self.kind = _kind_of(datagram)
        self.automatic = automatic
        self.answered = answered

    def is_poll(self):
        return self.automatic and self.kind is wire.Fetch

    def counts(self):
        """
        Whether a missing reply is the user's concern (and so the exit
        status's): a request of theirs, or the C{4} that leaves for them.
        A lost automatic poll is reported, but the next one goes on.
        """
        return not self.automatic or self.kind is wire.Leave


def _kind_of(datagram):
    try:
        return type(wire.parse_request(datagram))
    except wire.IllegalMessage:
        return None


class ChatClient(DatagramProtocol):
    """
    Send requests to the server one at a time, and act on the replies.

    @param server: the server's C{(host, port)}, host an IP literal.
    @param clock: an L{IReactorTime}.
    @param show: called with each non-empty reply (bytes) to an automatic
        poll, and to a request queued with L{send}.
    @param warn: called with the client's own messages (str).
    @param forgotten: called when the server refuses an automatic poll:
        it has forgotten this member (a restart, or an idle member
        removed), and polling stops.
    @param poll_interval: seconds between automatic polls; 0 for none.
    @param timeout: seconds to wait for a reply before giving up on it.

    @ivar unanswered: how many requests that L{counts <_Request.counts>}
        got no reply.
    """

    noisy = False

    def __init__(self, server, clock, show, warn, forgotten, poll_interval=1.0, timeout=2.0):
        self.server = server
        self._clock = clock
        self._show = show
        self._warn = warn
        self._tell_forgotten = forgotten
        self._poll_interval = poll_interval
        self._timeout = timeout
        self.registered = False
        self.unanswered = 0
        self._queue = deque()  # _Request objects waiting their turn
        self._outstanding = None  # (_Request, timeout call)
        self._poll_call = None
        self._silent_server = False  # "no reply" said, and not answered since
        self._finishing = None  # Deferred that fires when the queue is empty
        self._left = False  # the closing "4" has been sent
        # A join of the chat mode got no reply: the server may have taken it
        # all the same, so the closing "4" goes too (no ghost member).
        self._perhaps_member = False

    def request(self, datagram):
        """
        Queue a request of the user's.

        @return: a L{Deferred} that fires with the reply (bytes), or with
            C{None} when no reply came in time, or when the client is
            already finishing and the request is not sent.
        """
        if self._finishing is not None:
            return defer.succeed(None)
        answered = defer.Deferred()
        self._queue.append(_Request(datagram, automatic=False, answered=answered))
        self._send_next()
        return answered

    def send(self, datagram):
        """Queue a request typed by the user, and show its reply."""
        self.request(datagram).addCallback(self._show_reply)

    # The chat mode's requests: each returns a Deferred that fires with the
    # reply (bytes), a Refused, or None when no reply came.

    sessions = False
    """Whether requests go by sessions: never, here (see L{udpchat.reliable})."""

    def join(self, name):
        """C{1 Name}: the reply is the member list."""
        sent = self._finishing is None
        joined = self.request(wire.encode_request(wire.Join(name)))
        return joined.addCallback(self._join_answered, sent)

    def _join_answered(self, reply, sent):
        if reply is None and sent:
            self._perhaps_member = True
        return _refusal(reply)

    def say(self, text):
        """C{2 Text}: the reply is empty."""
        return self.request(wire.encode_request(wire.Say(text))).addCallback(_refusal)

    def rename(self, name):
        """C{3 New}: the reply is empty."""
        return self.request(wire.encode_request(wire.Rename(name))).addCallback(_refusal)

    def poll(self):
        """C{5}: the reply is the lines."""
        return self.request(_FETCH).addCallback(_refusal)

    def raw(self, datagram):
        """C{datagram} as it is: the reply as it is, or None."""
        return self.request(datagram)

    def _show_reply(self, reply):
        if reply:
            self._show(reply)

    def finish(self):
        """
        Leave the group if registered, and wait for every request already
        queued to be answered or to time out.

        @return: a L{Deferred} that fires when nothing is left to send.
        """
        if self._finishing is None:
            self._finishing = defer.Deferred()
            self._stop_polling()
            self._send_next()
        return self._finishing

    def datagramReceived(self, datagram, address):
        if address != self.server or self._outstanding is None:
            return  # not the server, or a reply that came too late
        request, timer = self._outstanding
        self._outstanding = None
        timer.cancel()
        self._silent_server = False
        if len(datagram) > MAX_REPLY_BYTES:
            self._warn(
                f"a reply from {show_address(self.server)} was longer than "
                f"{MAX_REPLY_BYTES} bytes and could not be read whole: not shown"
            )
            self._unanswered(request)
        else:
            self._answered(request, datagram)
        self._send_next()

    def _answered(self, request, reply):
        refused = reply == wire.ILLEGAL
        if request.kind is wire.Leave:
            self._perhaps_member = False  # whatever the answer: not a member now
        if request.kind is wire.Fetch:
            if request.automatic and refused:
                self._forgotten()
                return
            if self.registered:
                self._schedule_poll(0 if reply else self._poll_interval)
        elif refused:
            pass
        elif request.kind is wire.Join:
            self.registered = True
            self._schedule_poll(self._poll_interval)
        elif request.kind is wire.Leave:
            self.registered = False
            self._stop_polling()
        if request.answered is not None:
            request.answered.callback(reply)
        elif request.kind is wire.Fetch and reply:
            self._show(reply)

    def _forgotten(self):
        # The server refuses our poll: it no longer knows us.  Polling on
        # would only repeat that.
        self.registered = False
        self._stop_polling()
        self._tell_forgotten()

    def _send_next(self):
        if self._outstanding is not None:
            return
        if not self._queue and self._finishing is not None:
            # Leave only now: a "1 Name" still in the queue may register us.
            if (self.registered or self._perhaps_member) and not self._left:
                self._left = True
                self._queue.append(_Request(_LEAVE, automatic=True))
            elif not self._finishing.called:
                self._finishing.callback(None)
        if not self._queue:
            return
        request = self._queue.popleft()
        timer = self._clock.callLater(self._timeout, self._timed_out)
        self._outstanding = (request, timer)
        try:
            self.transport.write(request.datagram, self.server)
        except OSError as e:
            # No route, say: the timeout reports it like any lost reply.
            self._warn(f"cannot send to {show_address(self.server)}: {e.strerror or e}")

    def _timed_out(self):
        request, _ = self._outstanding
        self._outstanding = None
        if not self._silent_server:
            self._silent_server = True
            self._warn(
                f"no reply from {show_address(self.server)} within "
                f"{self._timeout:g} s (is the server running?)"
            )
        self._unanswered(request)
        # Each request gets its own timeout, even while finishing: a lost
        # reply says nothing about whether the next request will get one.
        self._send_next()

    def _unanswered(self, request):
        # No reply to show: none came, or none that could be read whole.
        if request.counts():
            self.unanswered += 1
        if request.answered is not None:
            request.answered.callback(None)
        elif request.kind is wire.Fetch and self.registered:
            self._schedule_poll(self._poll_interval)

    def _schedule_poll(self, delay):
        if not self._poll_interval or self._finishing is not None:
            return
        if self._poll_call is not None and self._poll_call.active():
            if delay:
                return
            self._poll_call.cancel()
        self._poll_call = self._clock.callLater(delay, self._poll)

    def _poll(self):
        self._poll_call = None
        if self.registered and not any(request.is_poll() for request in self._queue):
            self._queue.append(_Request(_FETCH, automatic=True))
            self._send_next()

    def _stop_polling(self):
        if self._poll_call is not None and self._poll_call.active():
            self._poll_call.cancel()
        self._poll_call = None
        self._queue = deque(request for request in self._queue if not request.is_poll())


def show_address(address):
    """C{(host, port)} as the client's messages name it."""
    host, port = address[:2]
    return f"{host} port {port}"


class Occasion:
    """
    Something that happens once, which anyone may wait for: each waiter
    gets a L{Deferred} of its own, since one Deferred returned from two
    callback chains would be chained twice.
    """

    def __init__(self):
        self.happened = False
        self._waiters = []

    def wait(self):
        """@return: a L{Deferred} that fires with C{None} once it happened."""
        if self.happened:
            return defer.succeed(None)
        waiter = defer.Deferred()
        self._waiters.append(waiter)
        return waiter

    def happen(self):
        """Fire every waiter; later calls do nothing."""
        if not self.happened:
            self.happened = True
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                waiter.callback(None)


class Session:
    """
    One user's input and output in front of a L{ChatClient}: what
    L{udpchat.client.main} runs.

    The end of input and Ctrl-C leave the group; Ctrl-C while leaving stops
    waiting for the server.  Subclasses open their input and output in
    L{start}, and hand them to L{attach} (which tests call with fakes).

    @param complain: writes one of the client's own messages (str) to
        stderr: the raw console's warnings, and the count of requests that
        got no reply, said once the input and output are closed.

    @ivar io: the input and output, anything with a C{close()} that returns
        a L{Deferred}.
    @ivar closed: a L{Deferred} that fires once the session is over and its
        output flushed, with the exit status: 0, L{NO_REPLY} or
        L{INTERRUPTED}.
    """

    def __init__(self, complain=complain):
        self.client = None
        self.io = None
        self.closed = defer.Deferred()
        self._complain = complain
        self._failed = False  # the session could not do what it was for
        self._last_words = None  # why the client gave up, said last
        self._interrupted = False  # a second Ctrl-C cut the wait short
        self._leaving = False

    def start(self, client, reactor):
        """Open the input and output, and L{attach} them to C{client}."""
        raise NotImplementedError()

    def attach(self, client, io):
        """Talk through C{client}, with C{io} as the input and output."""
        self.client = client
        self.io = io

    def show(self, reply):
        """Show a reply (bytes) that the client did not route elsewhere."""
        raise NotImplementedError()

    def warn(self, message):
        """Show one of the client's own messages (str)."""
        self._complain(message)

    def forgotten(self):
        """
        Tell the user that the server has forgotten this member, and how
        to join again; automatic polling has stopped.
        """
        raise NotImplementedError()

    def fail(self):
        """
        Leave, and exit with L{NO_REPLY} whatever the replies: the session
        could not do what it was started for.
        """
        self._failed = True
        self.leave()

    def gave_up(self, message):
        """
        The client gave up on the server (no reply for its deadline) and
        sends nothing more: end the session with L{NO_REPLY}, C{message}
        (str) said last, on stderr.
        """
        self._last_words = message
        self.fail()

    def leave(self):
        """
        Leave the group once the requests queued are answered, then close
        the input and output.

        @return: L{closed}.
        """
        if not self._leaving:
            self._leaving = True
            finished = self.client.finish()
            finished.addCallback(lambda _: self.io.close())
            finished.addCallback(self._close)
        return self.closed

    def interrupt(self):
        """Ctrl-C: leave; while leaving already, stop waiting for the server."""
        if not self._leaving:
            self.leave()
        elif not self.closed.called:
            self.warn("interrupted again: not waiting for the server")
            self._interrupted = True
            self.io.close().addCallback(self._close)

    def _close(self, _=None):
        if self.closed.called:
            return
        # Said last, on stderr: a terminal is given back by now.
        unanswered = self.client.unanswered
        if unanswered:
            requests = "request" if unanswered == 1 else "requests"
            self._complain(f"{unanswered} {requests} got no reply")
        if self._last_words is not None:
            self._complain(self._last_words)
        if self._interrupted:
            status = INTERRUPTED
        elif self._failed or unanswered:
            status = NO_REPLY
        else:
            status = 0
        self.closed.callback(status)

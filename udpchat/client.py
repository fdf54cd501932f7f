"""
The udpchat client: protocol lines from stdin, server replies to stdout.

    python -m udpchat.client HOST PORT [--poll-interval S] [--timeout S] [--name NAME]

Each input line is sent as one datagram, exactly as typed (one trailing
C{\\r} removed).  stdout carries the server's non-empty replies, one line
per server line, so that the client can be scripted through a pipe; the
client's own messages go to stderr.  One request is outstanding at a time,
so replies match requests in order.  Nothing is retransmitted: a request or
reply lost on the way is reported, not repeated (delivery is at most once).

Once registered (C{1 Name} answered), the client polls (C{5}) by itself.  At
the end of input, or on Ctrl-C, it leaves the group (C{4}) and exits.

With C{--name}, the client is a chat program instead: L{udpchat.console},
on top of this module.  This module imports neither it nor Twisted's conch,
so that the raw client stays as small as it is.  The request codes are
L{udpchat.wire}'s business: this module builds and classifies requests
through it.
"""

import argparse
import os
import signal
import socket
import sys
from collections import deque

from twisted.internet import defer, stdio
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import DatagramProtocol, Protocol
from twisted.internet.task import react
from twisted.internet.threads import deferToThread
from zope.interface import implementer

from udpchat import wire

PROGRAM = "python -m udpchat.client"

NO_REPLY = 1
"""The exit status when a request got no reply, or the session failed."""

INTERRUPTED = 128 + signal.SIGINT
"""The exit status after a second Ctrl-C, as shells report an interrupted job."""

_LEAVE = wire.encode_request(wire.LEAVE)
_FETCH = wire.encode_request(wire.FETCH)


def complain(message):
    """Tell the user something on stderr, the client's own channel."""
    sys.stderr.write(f"udpchat.client: {message}\n")
    sys.stderr.flush()


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
    @param poll_interval: seconds between automatic polls; 0 for none.
    @param timeout: seconds to wait for a reply before giving up on it.
    @param warn: called with the client's own messages (str).

    @ivar unanswered: how many requests that L{counts <_Request.counts>}
        got no reply.
    """

    noisy = False

    def __init__(self, server, clock, show, poll_interval=1.0, timeout=2.0, warn=complain):
        self.server = server
        self._clock = clock
        self._show = show
        self._warn = warn
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
        self._answered(request, datagram)
        self._send_next()

    def _answered(self, request, reply):
        refused = reply == wire.ILLEGAL
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
        # The server refuses our poll: it no longer knows us (a restart, or
        # an idle member removed).  Polling on would only repeat that.
        self._warn(
            "the server no longer knows this client as a member (was it "
            "restarted?): automatic polling stopped; join again to go on"
        )
        self.registered = False
        self._stop_polling()

    def _send_next(self):
        if self._outstanding is not None:
            return
        if not self._queue and self._finishing is not None:
            # Leave only now: a "1 Name" still in the queue may register us.
            if self.registered and not self._left:
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
            self._warn(f"cannot send to {_show_address(self.server)}: {e.strerror or e}")

    def _timed_out(self):
        request, _ = self._outstanding
        self._outstanding = None
        if not self._silent_server:
            self._silent_server = True
            self._warn(
                f"no reply from {_show_address(self.server)} within "
                f"{self._timeout:g} s (is the server running?)"
            )
        if request.counts():
            self.unanswered += 1
        # Each request gets its own timeout, even while finishing: a lost
        # reply says nothing about whether the next request will get one.
        if request.answered is not None:
            request.answered.callback(None)
        elif request.kind is wire.Fetch and self.registered:
            self._schedule_poll(self._poll_interval)
        self._send_next()

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


def _show_address(address):
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


@implementer(IHalfCloseableProtocol)
class StdioLines(Protocol):
    """
    stdin cut into lines for a receiver, and stdout; on L{stdio.StandardIO}.

    Half-closeable, so that the end of stdin leaves stdout open for the
    replies still in flight.  When the reader of stdout goes away, that is
    the end of input too: nobody would see what comes next.

    @param receiver: has C{line_received(line)} (bytes, without the
        newline), C{line_refused(size)} (for a line over C{max_line_bytes},
        never buffered whole; C{size} is None when unknown) and
        C{input_ended()}.
    @param max_line_bytes: the longest line worth buffering.
    """

    def __init__(self, receiver, max_line_bytes=wire.MAX_DATAGRAM_BYTES):
        self._receiver = receiver
        self._max_line_bytes = max_line_bytes
        self._closed = Occasion()
        self._closing = False
        self._output_lost = False
        self._buffer = b""
        self._overlong = False  # inside a line already known to be too long

    def write(self, data):
        """Write C{data} (bytes) to stdout, unless nobody reads it any more."""
        if self.transport is not None:
            self.transport.write(data)

    def close(self):
        """
        Stop reading stdin; flush and close stdout.

        @return: a L{Deferred} that fires once that is done.
        """
        if not self._closing:
            self._closing = True
            self.transport.loseConnection()
            if self._output_lost:
                # StandardIO reports no connectionLost once its writer is
                # gone: nothing is left to flush, so this is the end.
                self._closed.happen()
        return self._closed.wait()

    def dataReceived(self, data):
        lines = (self._buffer + data).split(b"\n")
        self._buffer = lines.pop()
        for line in lines:
            if self._overlong:
                self._overlong = False
                self._receiver.line_refused(None)
            else:
                self._receiver.line_received(line)
        if len(self._buffer) > self._max_line_bytes:
            self._buffer = b""
            self._overlong = True

    def readConnectionLost(self):
        # A last line without its newline is a line all the same.
        if self._overlong:
            self._receiver.line_refused(None)
        elif self._buffer:
            self._receiver.line_received(self._buffer)
        self._buffer = b""
        self._receiver.input_ended()

    def writeConnectionLost(self):
        # Nobody reads our output any more: stop as at the end of input.
        self._output_lost = True
        self._receiver.input_ended()

    def connectionLost(self, reason):
        self._closed.happen()


class Session:
    """
    One user's input and output in front of a L{ChatClient}: what L{main}
    runs.

    The end of input and Ctrl-C leave the group; Ctrl-C while leaving stops
    waiting for the server.  Subclasses open their input and output in
    L{start}, as C{self.io}: anything with a C{close()} that returns a
    L{Deferred}.

    @ivar closed: a L{Deferred} that fires once the session is over and its
        output flushed; then C{status} is its exit status.
    """

    def __init__(self):
        self.client = None
        self.io = None
        self.status = 0
        self.closed = defer.Deferred()
        self._leaving = False

    def start(self, client, reactor):
        """Open the input and output, and talk through C{client}."""
        self.client = client

    def show(self, reply):
        """Show a reply (bytes) that the client did not route elsewhere."""
        raise NotImplementedError()

    def warn(self, message):
        """Show one of the client's own messages (str)."""
        complain(message)

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
            self.status = INTERRUPTED
            self.io.close().addCallback(self._close)

    def _close(self, _=None):
        if not self.closed.called:
            self.closed.callback(None)


class RawSession(Session):
    """
    The raw client: protocol lines in, exactly as typed; replies out,
    exactly as sent.
    """

    def start(self, client, reactor):
        Session.start(self, client, reactor)
        self.io = StdioLines(self)
        stdio.StandardIO(self.io, reactor=reactor)

    def show(self, reply):
        """Print a reply, one line per server line."""
        self.io.write(reply + b"\n")

    def line_received(self, line):
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > wire.MAX_REQUEST_BYTES:
            self.line_refused(len(line))
        else:
            self.client.send(line)

    def line_refused(self, size):
        size = f"more than {wire.MAX_DATAGRAM_BYTES}" if size is None else size
        complain(
            f"line not sent: {size} bytes, and no request is longer than "
            f"{wire.MAX_REQUEST_BYTES}"
        )

    def input_ended(self):
        self.leave()


def parse_arguments(argv):
    """
    Parse the command line; exit 2 with the usage text when it is wrong.
    """
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Talk to a udpchat server: protocol lines on stdin "
        "(1 Name, 2 Text, 3 New, 4, 5), server replies on stdout; or, with "
        "--name, chat: every line typed is a message, /help lists the commands.",
    )
    parser.add_argument("host", help="server name, IPv4 or IPv6 address ([::1] too)")
    parser.add_argument("port", type=_port, help="server UDP port")
    parser.add_argument(
        "--poll-interval",
        type=_seconds(allow_zero=True),
        default=1.0,
        metavar="SECONDS",
        help="poll for messages this often once registered; 0: never "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=_seconds(allow_zero=False),
        default=2.0,
        metavar="SECONDS",
        help="wait this long for each reply (default: %(default)s)",
    )
    parser.add_argument(
        "--name",
        type=_name,
        metavar="NAME",
        help="join as NAME and chat: lines are messages, /help lists the commands",
    )
    return parser.parse_args(argv)


def _port(text):
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 65535):
        raise argparse.ArgumentTypeError(f"not a port number from 1 to 65535: {text!r}")
    return int(text)


def _seconds(allow_zero):
    def seconds(text):
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not (value > 0 or (allow_zero and value == 0)) or value > 86400:
            raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}")
        return value

    return seconds


def _name(text):
    # The wire is the judge of names, for the client as for the server.
    try:
        wire.parse_request(wire.encode_request(wire.Join(text)))
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(f"not a valid name: {text!r} (not UTF-8)") from None
    except wire.IllegalMessage as e:
        raise argparse.ArgumentTypeError(f"not a valid name: {text!r} ({e})") from None
    return text


def resolve(host, port):
    """
    Return C{(family, (address, port))} for C{host}, which may be a name or
    an IPv4 or IPv6 literal, the latter bare or in brackets (C{[::1]}), as
    in URLs (unlike C{reactor.resolve}, which is IPv4-only).

    @raise OSError: when the name does not resolve.
    @raise UnicodeError: when C{host} cannot be a host name (a label of
        more than 63 characters, or an empty one).
    """
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    return family, sockaddr[:2]


async def _resolve_or_exit(host, port):
    try:
        return await deferToThread(resolve, host, port)
    except OSError as e:
        reason = e.strerror or e
    except UnicodeError:
        reason = "not a valid host name (a part of it is empty or longer than 63 characters)"
    complain(f"cannot resolve {host!r}: {reason}")
    raise SystemExit(NO_REPLY)


def _make_session(options):
    if options.name is None:
        return RawSession()
    from udpchat import console  # the chat mode and conch, only when asked for

    return console.ChatSession(options.name)


def _interrupt_on_sigint(reactor, session):
    """
    Let Ctrl-C reach the session instead of stopping the reactor: Twisted's
    handler would stop it at the first, and a second SIGINT would stop it
    again (a ReactorNotRunning traceback).  An ignored SIGINT (a background
    job's) stays ignored.
    """
    if signal.getsignal(signal.SIGINT) != signal.SIG_IGN:
        signal.signal(
            signal.SIGINT, lambda number, frame: reactor.callFromThread(session.interrupt)
        )


async def _main(reactor, argv):
    options = parse_arguments(argv)
    family, server = await _resolve_or_exit(options.host, options.port)
    session = _make_session(options)
    client = ChatClient(
        server,
        reactor,
        show=session.show,
        warn=session.warn,
        poll_interval=options.poll_interval,
        timeout=options.timeout,
    )
    reactor.listenUDP(0, client, interface="::" if family == socket.AF_INET6 else "")
    session.start(client, reactor)
    # The reactor runs by now (the resolver's answer came through it), so
    # Twisted has installed its handlers: this one replaces its SIGINT's.
    _interrupt_on_sigint(reactor, session)
    # Stopped another way (SIGTERM, say): leave all the same, before the
    # reactor stops.
    reactor.addSystemEventTrigger("before", "shutdown", session.leave)
    await session.closed
    status = session.status
    if client.unanswered:
        requests = "request" if client.unanswered == 1 else "requests"
        complain(f"{client.unanswered} {requests} got no reply")
        status = status or NO_REPLY
    if status:
        raise SystemExit(status)


def main(reactor, *argv):
    """Run the client; for L{react}."""
    return defer.ensureDeferred(_main(reactor, argv))


def _keep_standard_fds_open():
    """
    Point a closed stdin, stdout or stderr at /dev/null, before the reactor
    opens anything: otherwise the first socket would become "stdin".  A
    closed stdin then reads as an immediate end of input.
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def run():
    """The C{python -m udpchat.client} entry point."""
    _keep_standard_fds_open()
    react(main, sys.argv[1:])


if __name__ == "__main__":
    run()

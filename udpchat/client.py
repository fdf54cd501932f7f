"""
The udpchat client: protocol lines from stdin, server replies to stdout.

    python -m udpchat.client HOST PORT [--poll-interval S] [--timeout S]

Each input line is sent as one datagram, exactly as typed (one trailing
C{\\r} removed).  stdout carries the server's non-empty replies, one line
per server line, so that the client can be scripted through a pipe; the
client's own messages go to stderr.  One request is outstanding at a time,
so replies match requests in order.  Nothing is retransmitted: a request or
reply lost on the way is reported, not repeated (delivery is at most once).

Once registered (C{1 Name} answered), the client polls (C{5}) by itself.  At
the end of input, or on Ctrl-C, it leaves the group (C{4}) and exits.
"""

import argparse
import os
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
LEAVE = b"4"
FETCH = b"5"


def complain(message):
    """Tell the user something on stderr, the client's own channel."""
    sys.stderr.write(f"udpchat.client: {message}\n")
    sys.stderr.flush()


class ChatClient(DatagramProtocol):
    """
    Send requests to the server one at a time, and act on the replies.

    @param server: the server's C{(host, port)}, host an IP literal.
    @param clock: an L{IReactorTime}.
    @param show: called with each non-empty reply (bytes) to print.
    @param poll_interval: seconds between automatic polls; 0 for none.
    @param timeout: seconds to wait for a reply before giving up on it.
    """

    noisy = False

    def __init__(self, server, clock, show, poll_interval=1.0, timeout=2.0):
        self.server = server
        self._clock = clock
        self._show = show
        self._poll_interval = poll_interval
        self._timeout = timeout
        self.registered = False
        self._queue = deque()  # (datagram, automatic) waiting their turn
        self._outstanding = None  # (datagram, automatic, timeout call)
        self._poll_call = None
        self._silent_server = False  # "no reply" said, and not answered since
        self._finishing = None  # Deferred that fires when the queue is empty
        self._left = False  # the closing "4" has been sent

    def send(self, datagram):
        """Queue a request typed by the user."""
        if self._finishing is None:
            self._queue.append((datagram, False))
            self._send_next()

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
        request, automatic, timer = self._outstanding
        self._outstanding = None
        timer.cancel()
        self._silent_server = False
        self._answered(request, automatic, datagram)
        self._send_next()

    def _answered(self, request, automatic, reply):
        refused = reply == wire.ILLEGAL
        if request == FETCH:
            if automatic and refused:
                # The server has forgotten us (a restart, say).
                complain(
                    "the server no longer knows this client as a member; "
                    "automatic polling stopped"
                )
                self.registered = False
                self._stop_polling()
                return
            if self.registered:
                self._schedule_poll(0 if reply else self._poll_interval)
        elif not refused and _is_request(request, wire.Join):
            self.registered = True
            self._schedule_poll(self._poll_interval)
        elif not refused and request == LEAVE:
            self.registered = False
            self._stop_polling()
        if reply and not (automatic and request == LEAVE):
            self._show(reply)

    def _send_next(self):
        if self._outstanding is not None:
            return
        if not self._queue and self._finishing is not None:
            # Leave only now: a "1 Name" still in the queue may register us.
            if self.registered and not self._left:
                self._left = True
                self._queue.append((LEAVE, True))
            elif not self._finishing.called:
                self._finishing.callback(None)
        if not self._queue:
            return
        datagram, automatic = self._queue.popleft()
        timer = self._clock.callLater(self._timeout, self._timed_out)
        self._outstanding = (datagram, automatic, timer)
        try:
            self.transport.write(datagram, self.server)
        except OSError as e:
            # No route, say: the timeout reports it like any lost reply.
            complain(f"cannot send to {_show_address(self.server)}: {e.strerror or e}")

    def _timed_out(self):
        request, automatic, timer = self._outstanding
        self._outstanding = None
        if not self._silent_server:
            self._silent_server = True
            complain(
                f"no reply from {_show_address(self.server)} within "
                f"{self._timeout:g} s (is the server running?)"
            )
        if self._finishing is not None:
            # Leaving: do not make the user wait a timeout per queued line.
            if self._queue:
                complain(f"{len(self._queue)} queued lines not sent")
                self._queue.clear()
        elif request == FETCH and automatic and self.registered:
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
        if self.registered and (FETCH, True) not in self._queue:
            self._queue.append((FETCH, True))
            self._send_next()

    def _stop_polling(self):
        if self._poll_call is not None and self._poll_call.active():
            self._poll_call.cancel()
        self._poll_call = None
        self._queue = deque(item for item in self._queue if item != (FETCH, True))


def _is_request(datagram, kind):
    try:
        return isinstance(wire.parse_request(datagram), kind)
    except wire.IllegalMessage:
        return False


def _show_address(address):
    host, port = address[:2]
    return f"{host} port {port}"


@implementer(IHalfCloseableProtocol)
class Console(Protocol):
    """
    Lines from stdin to the client; the client's output to stdout.

    Half-closeable, so that the end of stdin leaves stdout open for the
    replies still in flight.

    @param client: the L{ChatClient} to send lines through.
    """

    def __init__(self, client):
        self.client = client
        self.closed = defer.Deferred()
        self._buffer = b""
        self._overlong = False  # inside a line already known to be too long

    def show(self, reply):
        """Print a reply, one line per server line."""
        if self.transport is not None:
            self.transport.write(reply + b"\n")

    def dataReceived(self, data):
        lines = (self._buffer + data).split(b"\n")
        self._buffer = lines.pop()
        for line in lines:
            if self._overlong:
                self._overlong = False
                self._refuse(None)
            else:
                self._take(line)
        if len(self._buffer) > wire.MAX_DATAGRAM_BYTES:
            self._buffer = b""
            self._overlong = True

    def readConnectionLost(self):
        # A last line without its newline is a line all the same.
        if self._overlong:
            self._refuse(None)
        elif self._buffer:
            self._take(self._buffer)
        self._buffer = b""
        self.client.finish().addCallback(lambda _: self.transport.loseConnection())

    def writeConnectionLost(self):
        # Nobody reads our output any more: stop as at the end of input.
        self.transport.loseConnection()

    def connectionLost(self, reason):
        self.closed.callback(None)

    def _take(self, line):
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > wire.MAX_REQUEST_BYTES:
            self._refuse(len(line))
        else:
            self.client.send(line)

    def _refuse(self, size):
        size = f"more than {wire.MAX_DATAGRAM_BYTES}" if size is None else size
        complain(
            f"line not sent: {size} bytes, and no request is longer than "
            f"{wire.MAX_REQUEST_BYTES}"
        )


def parse_arguments(argv):
    """
    Parse the command line; exit 2 with the usage text when it is wrong.
    """
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Talk to a udpchat server: protocol lines on stdin "
        "(1 Name, 2 Text, 3 New, 4, 5), server replies on stdout.",
    )
    parser.add_argument("host", help="server name, IPv4 or IPv6 address")
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


def resolve(host, port):
    """
    Return C{(family, (address, port))} for C{host}, which may be a name or
    an IPv4 or IPv6 literal (unlike C{reactor.resolve}, which is IPv4-only).

    @raise OSError: when the name does not resolve.
    """
    family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    return family, sockaddr[:2]


async def _main(reactor, argv):
    options = parse_arguments(argv)
    try:
        family, server = await deferToThread(resolve, options.host, options.port)
    except OSError as e:
        complain(f"cannot resolve {options.host!r}: {e.strerror or e}")
        raise SystemExit(1)
    client = ChatClient(
        server,
        reactor,
        show=lambda reply: console.show(reply),
        poll_interval=options.poll_interval,
        timeout=options.timeout,
    )
    console = Console(client)
    reactor.listenUDP(0, client, interface="::" if family == socket.AF_INET6 else "")
    stdio.StandardIO(console, reactor=reactor)

    def leave_on_interrupt():
        # Ctrl-C stops the reactor; leave the group and print the last
        # replies before it does.
        client.finish().addCallback(lambda _: console.transport.loseConnection())
        return console.closed

    reactor.addSystemEventTrigger("before", "shutdown", leave_on_interrupt)
    await console.closed


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

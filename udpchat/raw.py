"""
The raw console: protocol lines from stdin, server replies to stdout.

Each input line is sent as one datagram, exactly as typed (one trailing
C{\\r} removed).  stdout carries the server's non-empty replies, one line
per server line: byte for byte through a pipe, so that the client can be
scripted; on a terminal with the characters a terminal would obey escaped
(L{udpchat.terminal}), since a server may send anything.  The client's own
messages go to stderr.  L{StdioLines}, stdin cut into lines,
serves the chat mode's plain lines too (L{udpchat.console.LineScreen}).

On top of L{udpchat.session}; it loads nothing of Twisted's conch, so that
the raw client stays as small as it is.
"""

import os

from twisted.internet import stdio
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from zope.interface import implementer

from udpchat import wire
from udpchat.session import Occasion, Session, complain
from udpchat.terminal import visible


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


class RawSession(Session):
    """
    The raw client: protocol lines in, exactly as typed; replies out,
    exactly as sent, or escaped on a terminal.

    @param terminal: whether stdout is a terminal, which obeys control
        characters; by default, whether it is one when the session starts.
    """

    def __init__(self, complain=complain, terminal=None):
        Session.__init__(self, complain)
        self._terminal = terminal

    def start(self, client, reactor):
        if self._terminal is None:
            self._terminal = os.isatty(1)
        io = StdioLines(self)
        stdio.StandardIO(io, reactor=reactor)
        self.attach(client, io)

    def show(self, reply):
        """Print a reply, one line per server line."""
        if self._terminal:
            lines = wire.reply_lines(reply)
            reply = "\n".join(visible(line) for line in lines).encode("utf-8")
        self.io.write(reply + b"\n")

    def forgotten(self):
        self.warn(
            "the server no longer knows this client as a member (was it "
            "restarted?): automatic polling stopped; join again with 1 NAME"
        )

    def line_received(self, line):
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > wire.MAX_REQUEST_BYTES:
            self.line_refused(len(line))
        else:
            self.client.send(line)

    def line_refused(self, size):
        size = f"more than {wire.MAX_DATAGRAM_BYTES}" if size is None else size
        self.warn(
            f"line not sent: {size} bytes, and no request is longer than "
            f"{wire.MAX_REQUEST_BYTES}"
        )

    def input_ended(self):
        self.leave()

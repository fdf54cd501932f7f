"""
Tests of the command-line client, C{python -m udpchat.client}.

Its behaviours (one request at a time, replies paired with requests,
timeouts, polling, leaving, exit statuses) are tested on L{ChatClient} and
L{RawSession}, with a L{Clock}, a fake datagram transport and a fake stdio
(L{FakeStdio}): the tests play the server, datagram by datagram.  The real
command runs only for what needs a process: signals, closed or null
descriptors, a reader of stdout gone, names and IPv6 literals resolved
against a real server, the command line's errors and exit statuses, and
which modules the command loads.
"""

import ast
import errno
import io
import os
import signal
import subprocess
import sys
import tempfile
from contextlib import redirect_stderr
from pathlib import Path

from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import FakeDatagramTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

import udpchat
from tests.harness import (
    DEADLINE,
    Member,
    ProcessTestCase,
    environment,
    free_port,
    lines_until,
    run_isolated,
    wait_for,
)
from udpchat import client as client_module
from udpchat.client import PROGRAM
from udpchat import wire
from udpchat.raw import RawSession, StdioLines
from udpchat.session import INTERRUPTED, MAX_REPLY_BYTES, NO_REPLY, READ_BYTES, ChatClient

SERVER = ("127.0.0.1", 12345)
STRANGER = ("127.0.0.1", 54321)
LONGEST_TEXT = 1024  # bytes of a chat text, as README.rst states

# What a hostile server may send: a title (OSC 0), the clipboard (OSC 52),
# a screen clear, a C1 CSI, a CR that would overwrite the line, a
# right-to-left override, a line separator, bytes that are not UTF-8; and
# what a terminal should show of it.
HOSTILE_REPLY = (
    "Mallory: \x1b]0;pwned\x07\x1b]52;c;cm0gLXJmIH4=\x07\x1b[2J\u009b31m\tred\r"
    "\u202etxet\u200f\u2028\x7f\nMallory has joined"
).encode() + b" \xff\xc3"
HOSTILE_REPLY_SHOWN = [
    "Mallory: \\x1b]0;pwned\\x07\\x1b]52;c;cm0gLXJmIH4=\\x07\\x1b[2J\\x9b31m\tred\\x0d"
    "\\u202etxet\u200f\\u2028\\x7f",
    "Mallory has joined \ufffd\ufffd",
]
# Each module of the client wing imports only those before it.
CLIENT_WING = ("wire", "terminal", "session", "reliable", "raw", "console", "client")


class FakeStdio:
    """
    What L{twisted.internet.stdio.StandardIO} does for its protocol, in
    memory: stdout collected, stdin fed by the test, and closing that
    reports C{connectionLost} unless the reader of stdout is gone (then
    StandardIO reports nothing).
    """

    def __init__(self, protocol):
        self.protocol = protocol
        self.output = b""
        self.closed = False
        self.reader_gone = False
        protocol.makeConnection(self)

    def write(self, data):
        if not self.reader_gone:
            self.output += data

    def loseConnection(self):
        if not self.closed:
            self.closed = True
            if not self.reader_gone:
                self.protocol.connectionLost(Failure(ConnectionDone()))

    def lose_reader(self):
        """The reader of stdout goes away (C{| head -1} exits)."""
        self.reader_gone = True
        self.protocol.writeConnectionLost()

    def lines(self):
        """What was written to stdout, as lines of text."""
        return self.output.decode("utf-8").splitlines()


class UnroutableTransport(FakeDatagramTransport):
    """A datagram transport whose writes fail, as with no route to the host."""

    def write(self, packet, addr=None):
        raise OSError(errno.ENETUNREACH, "Network is unreachable")


class FakeServerTestCase(SynchronousTestCase):
    """
    A L{ChatClient} on a fake transport and a L{Clock}; the test answers as
    the server would.
    """

    def connect(self, show, warn, forgotten, poll_interval=1.0, timeout=2.0):
        """Make C{self.client}, with C{self.clock} and C{self.transport}."""
        self.clock = Clock()
        self.transport = FakeDatagramTransport()
        self.client = ChatClient(
            SERVER,
            self.clock,
            show=show,
            warn=warn,
            forgotten=forgotten,
            poll_interval=poll_interval,
            timeout=timeout,
        )
        self.client.makeConnection(self.transport)
        return self.client

    def sent(self):
        """The datagrams sent so far, each to the server."""
        self.assertEqual({address for _, address in self.transport.written} - {SERVER}, set())
        return [datagram for datagram, _ in self.transport.written]

    def answer(self, reply, source=SERVER):
        """A datagram C{reply} arrives from C{source}, the server by default."""
        self.client.datagramReceived(reply, source)


class ClientTestCase(FakeServerTestCase):
    """
    A L{ChatClient} alone: what it shows and warns of is kept in lists.
    """

    poll_interval = 1.0

    def setUp(self):
        self.shown = []
        self.warned = []
        self.connect(
            self.shown.append,
            self.warned.append,
            lambda: self.warned.append("forgotten"),
            poll_interval=self.poll_interval,
        )

    def joined(self):
        """Join as Cy, the server accepting it."""
        self.client.send(b"1 Cy")
        self.answer(b"")


class ChatClientTests(ClientTestCase):
    """
    L{ChatClient}: one request at a time, its reply paired with it.
    """

    def test_one_request_outstanding_at_a_time(self):
        """The next request waits for the reply to the last; replies are shown in order."""
        for datagram in (b"5", b"2 a", b"2 b"):
            self.client.send(datagram)
        self.assertEqual(self.sent(), [b"5"])
        self.answer(b"first")
        self.assertEqual(self.sent(), [b"5", b"2 a"])
        self.answer(b"")
        self.answer(b"third\nfourth")
        self.assertEqual(self.sent(), [b"5", b"2 a", b"2 b"])
        self.assertEqual(self.shown, [b"first", b"third\nfourth"])  # empty replies not shown

    def test_request_fires_with_the_reply_or_none(self):
        """request() gives the reply to its request, or None once it timed out."""
        answered = self.client.request(b"5")
        lost = self.client.request(b"5")
        self.answer(b"A: hi")
        self.assertEqual(self.successResultOf(answered), b"A: hi")
        self.assertNoResult(lost)
        self.clock.advance(2.0)
        self.assertIsNone(self.successResultOf(lost))
        self.assertEqual(self.shown, [])  # the caller shows replies, not the client

    def test_stray_datagrams_are_ignored(self):
        """A datagram from another address is neither shown nor taken as the reply."""
        self.client.send(b"5")
        self.answer(b"stray", source=STRANGER)
        self.client.send(b"5")
        self.assertEqual(self.sent(), [b"5"])
        self.answer(b"real")
        self.answer(b"stray again", source=STRANGER)
        self.answer(b"again")
        self.assertEqual((self.sent(), self.shown), ([b"5", b"5"], [b"real", b"again"]))

    def test_late_reply_is_ignored(self):
        """A reply arriving after its timeout, with nothing outstanding, is dropped."""
        self.client.send(b"5")
        self.clock.advance(2.0)
        self.answer(b"late")
        self.assertEqual(self.shown, [])

    def test_missing_reply_is_reported_once_and_the_client_goes_on(self):
        """Two lost replies in a row make one warning and count twice; the next request is sent."""
        for datagram in (b"5", b"5", b"2 x"):
            self.client.send(datagram)
        self.clock.advance(2.0)
        self.assertEqual(self.sent(), [b"5", b"5"])
        self.clock.advance(2.0)
        self.assertEqual(self.sent(), [b"5", b"5", b"2 x"])
        self.answer(wire.ILLEGAL)
        self.assertEqual(self.shown, [wire.ILLEGAL])
        self.assertEqual(
            self.warned, ["no reply from 127.0.0.1 port 12345 within 2 s (is the server running?)"]
        )
        self.assertEqual(self.client.unanswered, 2)

    def test_a_server_heard_again_is_reported_silent_again(self):
        """After a reply, the next lost one is reported anew."""
        self.client.send(b"5")
        self.clock.advance(2.0)
        self.client.send(b"5")
        self.answer(b"")
        self.client.send(b"5")
        self.clock.advance(2.0)
        self.assertEqual(len(self.warned), 2)

    def test_each_line_queued_when_finishing_gets_its_own_timeout(self):
        """Finishing, a request with no reply is counted and the next one is sent."""
        self.joined()
        self.client.send(b"2 a")
        self.client.send(b"2 b")
        finished = self.client.finish()
        self.clock.advance(2.0)
        self.assertEqual(self.sent(), [b"1 Cy", b"2 a", b"2 b"])
        self.answer(b"")
        self.assertEqual(self.sent()[-1], wire.encode_request(wire.LEAVE))
        self.answer(b"")
        self.successResultOf(finished)
        self.assertEqual(self.client.unanswered, 1)
        self.assertEqual(len(self.warned), 1)

    def test_a_request_queued_after_finishing_is_not_sent(self):
        """Once finishing, request() fires with None at once and sends nothing."""
        self.client.finish()
        self.assertIsNone(self.successResultOf(self.client.request(b"5")))
        self.assertEqual(self.sent(), [])

    def test_polls_and_leave_are_the_wire_requests(self):
        """The automatic poll and leave are wire.FETCH and wire.LEAVE, encoded by wire."""
        self.client.send(wire.encode_request(wire.Join("Cy")))
        self.answer(b"")
        self.clock.advance(1.0)
        self.assertEqual(self.sent()[-1], wire.encode_request(wire.FETCH))
        self.answer(b"A: hi")
        self.assertEqual(self.shown, [b"A: hi"])
        self.clock.advance(0)
        self.assertEqual(self.sent()[-1], wire.encode_request(wire.FETCH))  # draining
        self.answer(b"")
        self.client.finish()
        self.assertEqual(self.sent()[-1], wire.encode_request(wire.LEAVE))

    def test_a_datagram_that_cannot_be_sent_is_reported_and_times_out(self):
        """A send refused by the system (no route) is reported, then counted as unanswered."""
        client = ChatClient(
            SERVER,
            self.clock,
            show=self.shown.append,
            warn=self.warned.append,
            forgotten=lambda: None,
            timeout=2.0,
        )
        client.makeConnection(UnroutableTransport())
        answered = client.request(b"5")
        self.assertEqual(
            self.warned, ["cannot send to 127.0.0.1 port 12345: Network is unreachable"]
        )
        self.clock.advance(2.0)
        self.assertIsNone(self.successResultOf(answered))
        self.assertEqual(client.unanswered, 1)

    def test_the_largest_reply_is_taken_whole(self):
        """A reply of 65,535 bytes, more than UDP carries, is shown whole."""
        self.client.send(b"5")
        self.answer(b"x" * MAX_REPLY_BYTES)
        self.assertEqual(self.shown, [b"x" * 65535])
        self.assertEqual(READ_BYTES, 65536)  # the port reads a byte more: see the next test

    def test_a_reply_cut_by_the_system_is_reported_never_shown(self):
        """
        A datagram that filled the port's whole read is taken to be cut: the
        request counts as unanswered, with its own warning, and the next goes.
        """
        answered = self.client.request(b"5")
        self.client.send(b"2 next")
        self.answer(b"x" * READ_BYTES)
        self.assertIsNone(self.successResultOf(answered))
        self.assertEqual(
            self.warned,
            [
                "a reply from 127.0.0.1 port 12345 was longer than 65535 bytes and could "
                "not be read whole: not shown"
            ],
        )
        self.assertEqual((self.shown, self.client.unanswered), ([], 1))
        self.assertEqual(self.sent(), [b"5", b"2 next"])
        self.answer(b"")
        self.clock.advance(100)
        self.assertEqual(len(self.warned), 1)  # the timer was stopped

    def test_a_cut_reply_to_a_poll_is_followed_by_the_next_poll(self):
        """An automatic poll whose reply was cut: reported, not counted; polling goes on."""
        self.joined()
        self.clock.advance(1.0)
        self.answer(b"x" * READ_BYTES)
        self.clock.advance(1.0)
        self.assertEqual(self.sent(), [b"1 Cy", b"5", b"5"])
        self.assertEqual((self.shown, len(self.warned), self.client.unanswered), ([], 1, 0))


class PollingTests(ClientTestCase):
    """
    Automatic polling: when it starts, how it drains, and when it stops.
    """

    def test_automatic_poll_waits_the_interval_and_drains_at_once(self):
        """Polls come an interval apart, but at once after a non-empty reply."""
        self.client.send(b"1 Cy")
        self.answer(b"A")
        self.clock.advance(0.99)
        self.assertEqual(self.sent(), [b"1 Cy"])
        self.clock.advance(0.01)
        self.assertEqual(self.sent(), [b"1 Cy", b"5"])
        self.answer(b"A: one\nA: two")
        self.clock.advance(0)  # the reactor's next turn: no time passes
        self.assertEqual(self.sent(), [b"1 Cy", b"5", b"5"])
        self.answer(b"")
        self.clock.advance(0.99)
        self.assertEqual(len(self.sent()), 3)
        self.clock.advance(0.01)
        self.assertEqual(self.sent(), [b"1 Cy", b"5", b"5", b"5"])
        self.assertEqual(self.shown, [b"A", b"A: one\nA: two"])

    def test_no_polling_before_registering(self):
        """A client that has not joined sends nothing by itself."""
        self.client.send(b"5")
        self.answer(b"")
        self.clock.advance(100)
        self.assertEqual(self.sent(), [b"5"])

    def test_refused_join_starts_no_polling(self):
        """A 1 answered Illegal message does not register; a later accepted 1 does."""
        self.client.send(b"1 Cy")
        self.answer(wire.ILLEGAL)
        self.clock.advance(100)
        self.assertEqual(self.sent(), [b"1 Cy"])
        self.assertFalse(self.client.registered)
        self.client.send(b"1 Cy")
        self.answer(b"")
        self.clock.advance(1.0)
        self.assertEqual(self.sent(), [b"1 Cy", b"1 Cy", b"5"])
        self.assertEqual(self.shown, [wire.ILLEGAL])

    def test_a_lost_poll_is_followed_by_the_next_one(self):
        """A poll with no reply is reported, not counted, and polling goes on an interval later."""
        self.joined()
        self.clock.advance(1.0)
        self.clock.advance(2.0)  # the poll's timeout
        self.assertEqual(self.sent(), [b"1 Cy", b"5"])
        self.clock.advance(1.0)
        self.assertEqual(self.sent(), [b"1 Cy", b"5", b"5"])
        self.assertEqual((len(self.warned), self.client.unanswered), (1, 0))

    def test_a_poll_is_not_queued_twice(self):
        """While a poll waits behind the user's requests, no second one is queued."""
        self.joined()
        self.client.send(b"2 slow")
        self.clock.advance(1.0)  # a poll queued behind "2 slow"
        self.clock.advance(1.0)  # still waiting: no second poll
        self.answer(b"")
        self.answer(b"")
        self.assertEqual(self.sent(), [b"1 Cy", b"2 slow", b"5"])

    def test_automatic_poll_refused_stops_polling_quietly(self):
        """An automatic 5 answered Illegal message: one warning, nothing shown, no more polls."""
        self.joined()
        self.clock.advance(1.0)
        self.answer(b"")
        self.clock.advance(1.0)
        self.answer(wire.ILLEGAL)
        self.clock.advance(100)
        self.assertEqual(self.sent(), [b"1 Cy", b"5", b"5"])
        self.assertEqual(self.shown, [])
        self.assertEqual(len(self.warned), 1)
        self.assertFalse(self.client.registered)

    def test_forgotten_client_stops_polling_with_a_clear_message(self):
        """
        A server restarted meanwhile: a lost poll, then one refused, make two
        different warnings that say what to do, and polling stops.
        """
        self.joined()
        self.clock.advance(1.0)
        self.clock.advance(2.0)  # lost while no server ran
        self.clock.advance(1.0)
        self.answer(wire.ILLEGAL)  # the new server does not know this client
        self.clock.advance(100)
        self.assertEqual(self.sent(), [b"1 Cy", b"5", b"5"])
        self.assertEqual(len(self.warned), 2)
        self.assertIn("no reply", self.warned[0])
        self.assertEqual(self.warned[1], "forgotten")  # the session says what to do
        self.assertEqual((self.shown, self.client.unanswered), ([], 0))
        self.client.send(b"5")  # a typed 5 shows its reply, whatever it is
        self.answer(wire.ILLEGAL)
        self.assertEqual(self.shown, [wire.ILLEGAL])
        self.successResultOf(self.client.finish())  # no longer a member: no 4
        self.assertEqual(self.sent(), [b"1 Cy", b"5", b"5", b"5"])

    def test_a_chat_mode_join_without_reply_is_left_all_the_same(self):
        """
        A join (of the chat mode) with no reply may have joined all the same:
        finishing sends 4; a lost join typed in the raw console does not.
        """
        joined = self.client.join("Cy")
        self.clock.advance(2.0)
        self.assertIsNone(self.successResultOf(joined))
        self.assertFalse(self.client.registered)
        self.client.finish()
        self.assertEqual(self.sent(), [b"1 Cy", b"4"])
        self.answer(wire.ILLEGAL)  # it had not joined after all
        self.client.finish()
        self.assertEqual(self.sent(), [b"1 Cy", b"4"])

    def test_leaving_stops_polling(self):
        """Once 4 is answered, no more polls are sent."""
        self.joined()
        self.client.send(b"4")
        self.answer(b"")
        self.clock.advance(100)
        self.assertEqual(self.sent(), [b"1 Cy", b"4"])


class NoPollingTests(ClientTestCase):
    """
    A poll interval of 0: the client polls only when told to.
    """

    poll_interval = 0

    def test_poll_interval_zero_polls_only_when_typed(self):
        """Registered, the client sends no 5 of its own; a typed one is sent and shown."""
        self.joined()
        self.clock.advance(100)
        self.assertEqual(self.sent(), [b"1 Cy"])
        self.client.send(b"5")
        self.answer(b"A: hi Cy")
        self.clock.advance(100)
        self.assertEqual((self.sent(), self.shown), ([b"1 Cy", b"5"], [b"A: hi Cy"]))


class RawSessionTestCase(FakeServerTestCase):
    """
    A L{RawSession} on a L{FakeStdio}, talking through a L{ChatClient} that
    does not poll by itself.
    """

    terminal = False

    def setUp(self):
        self.complaints = []
        self.session = RawSession(complain=self.complaints.append, terminal=self.terminal)
        self.connect(
            self.session.show, self.session.warn, self.session.forgotten, poll_interval=0
        )
        self.stdio = FakeStdio(StdioLines(self.session))
        self.session.attach(self.client, self.stdio.protocol)

    def type(self, data):
        """Bytes arrive on stdin."""
        self.stdio.protocol.dataReceived(data)

    def end_input(self):
        self.stdio.protocol.readConnectionLost()

    def exit_status(self):
        """The session's exit status; it must be over."""
        return self.successResultOf(self.session.closed)


class RawSessionTests(RawSessionTestCase):
    """
    The raw console: each line one datagram, exactly as typed; replies on
    stdout; the client's own messages on stderr.
    """

    def test_lines_are_sent_exactly_as_typed(self):
        """Each line is one datagram, only its newline and one trailing CR removed."""
        self.type(b"2  two  spaces \r\n\n2 tab\there\r\r\n2 caf\xc3\xa9 \xff\n5 \n1 Cy\r\n")
        for _ in range(6):
            self.answer(b"")
        self.assertEqual(
            self.sent(),
            [b"2  two  spaces ", b"", b"2 tab\there\r", b"2 caf\xc3\xa9 \xff", b"5 ", b"1 Cy"],
        )
        self.end_input()
        self.assertEqual(self.sent()[-1], b"4")  # "1 Cy" was answered: registered
        self.answer(b"")
        self.assertEqual(self.exit_status(), 0)

    def test_lines_may_arrive_in_pieces(self):
        """A line split across reads is one datagram."""
        self.type(b"2 he")
        self.type(b"llo\n5")
        self.assertEqual(self.sent(), [b"2 hello"])

    def test_replies_are_printed_one_line_per_server_line(self):
        """A reply of several lines prints as many stdout lines, in order; empty replies nothing."""
        self.type(b"1 Cy\n5\n5\n")
        self.answer(b"A")
        self.answer(b"A: one\nA: two\nA changed his name to Al")
        self.answer(b"")
        self.assertEqual(
            self.stdio.lines(), ["A", "A: one", "A: two", "A changed his name to Al"]
        )
        self.assertEqual(self.complaints, [])

    def test_replies_are_printed_exactly_as_sent(self):
        """Through a pipe, the raw console passes a reply's bytes through, whatever they hold."""
        self.type(b"5\n")
        self.answer(HOSTILE_REPLY)
        self.assertEqual(self.stdio.output, HOSTILE_REPLY + b"\n")

    def test_forgotten_says_how_to_join_again(self):
        """When the server forgets the member, the raw console says to join again with 1."""
        self.session.forgotten()
        self.assertEqual(
            self.complaints,
            [
                "the server no longer knows this client as a member (was it restarted?): "
                "automatic polling stopped; join again with 1 NAME"
            ],
        )

    def test_end_of_input_leaves_after_the_lines_before_it(self):
        """At the end of input the lines read are sent, then 4, then the session ends with 0."""
        self.type(b"1 Cy\n2 bye\n")
        self.end_input()
        self.assertEqual(self.sent(), [b"1 Cy"])
        self.answer(b"A")
        self.answer(b"")
        self.assertEqual(self.sent(), [b"1 Cy", b"2 bye", b"4"])
        self.assertNoResult(self.session.closed)
        self.answer(b"")
        self.assertEqual(self.exit_status(), 0)
        self.assertTrue(self.stdio.closed)
        self.assertEqual((self.stdio.lines(), self.complaints), (["A"], []))

    def test_last_line_without_newline_is_sent(self):
        """A final line with no newline before the end of input is sent like any other."""
        self.type(b"1 Cy\n2 last words")
        self.end_input()
        self.answer(b"")
        self.answer(b"")
        self.answer(b"")
        self.assertEqual(self.sent(), [b"1 Cy", b"2 last words", b"4"])
        self.assertEqual(self.exit_status(), 0)

    def test_end_of_input_unregistered_sends_no_leave(self):
        """A client that never joined sends no 4 at the end of input."""
        self.type(b"5\n")
        self.answer(wire.ILLEGAL)
        self.end_input()
        self.assertEqual(self.sent(), [b"5"])
        self.assertEqual(self.exit_status(), 0)
        self.assertEqual(self.stdio.lines(), ["Illegal message"])

    def test_every_line_answered_exits_zero_even_if_refused(self):
        """Illegal message is a reply: the exit status is 0."""
        self.type(b"1 Cy\n2 \x01\n")
        self.answer(b"")
        self.answer(wire.ILLEGAL)
        self.end_input()
        self.answer(b"")
        self.assertEqual(self.exit_status(), 0)

    def test_interrupt_waits_for_the_reply_in_flight_then_leaves(self):
        """After Ctrl-C the reply to the request in flight is still printed, then 4 is sent."""
        self.type(b"1 Cy\n")
        self.answer(b"A")
        self.type(b"5\n")
        self.session.interrupt()
        self.assertEqual(self.sent(), [b"1 Cy", b"5"])
        self.answer(b"A: late")
        self.assertEqual(self.sent(), [b"1 Cy", b"5", b"4"])
        self.answer(b"")
        self.assertEqual(self.exit_status(), 0)
        self.assertEqual(self.stdio.lines(), ["A", "A: late"])

    def test_lines_typed_after_an_interrupt_are_not_sent(self):
        """Once leaving, the lines still read are not sent."""
        self.type(b"1 Cy\n")
        self.answer(b"")
        self.session.interrupt()
        self.type(b"2 too late\n")
        self.answer(b"")
        self.assertEqual(self.sent(), [b"1 Cy", b"4"])
        self.assertEqual(self.exit_status(), 0)

    def test_second_interrupt_stops_waiting(self):
        """A second Ctrl-C while leaving ends the session at once with 130 and one line."""
        self.type(b"1 Cy\n")
        self.answer(b"")
        self.session.interrupt()
        self.assertEqual(self.sent(), [b"1 Cy", b"4"])  # and no reply to it
        self.session.interrupt()
        self.assertEqual(self.exit_status(), INTERRUPTED)
        self.assertEqual(INTERRUPTED, 130)
        self.assertEqual(self.complaints, ["interrupted again: not waiting for the server"])
        self.assertTrue(self.stdio.closed)

    def test_reader_of_output_gone_is_end_of_input(self):
        """When nobody reads stdout any more the client leaves and ends, stdin still open."""
        self.type(b"1 Cy\n")
        self.stdio.lose_reader()
        self.answer(b"A")
        self.assertEqual(self.sent(), [b"1 Cy", b"4"])
        self.answer(b"")
        self.assertEqual(self.exit_status(), 0)
        self.assertEqual((self.stdio.output, self.complaints), (b"", []))

    def test_missing_replies_are_counted_and_exit_one(self):
        """Two unanswered requests: one warning, a summary, exit status 1."""
        self.type(b"5\n5\n2 x\n")
        self.clock.advance(2.0)
        self.clock.advance(2.0)
        self.answer(wire.ILLEGAL)
        self.end_input()
        self.assertEqual(self.exit_status(), NO_REPLY)
        self.assertEqual(self.stdio.lines(), ["Illegal message"])
        self.assertEqual(len(self.complaints), 2, self.complaints)
        self.assertIn("no reply from 127.0.0.1", self.complaints[0])
        self.assertEqual(self.complaints[1], "2 requests got no reply")

    def test_missing_reply_while_leaving_goes_on_with_the_next_line(self):
        """After the end of input a lost reply is counted, and the next line still sent."""
        self.type(b"1 Cy\n2 a\n2 b\n")
        self.end_input()
        self.answer(b"")
        self.clock.advance(2.0)  # no reply to "2 a"
        self.answer(b"")
        self.assertEqual(self.sent(), [b"1 Cy", b"2 a", b"2 b", b"4"])
        self.answer(b"")
        self.assertEqual(self.exit_status(), NO_REPLY)
        self.assertEqual(len(self.complaints), 2, self.complaints)
        self.assertIn("no reply from 127.0.0.1", self.complaints[0])
        self.assertEqual(self.complaints[1], "1 request got no reply")

    def test_a_lost_leave_counts(self):
        """The closing 4 is the user's concern: without a reply, exit status 1."""
        self.type(b"1 Cy\n")
        self.answer(b"")
        self.end_input()
        self.clock.advance(2.0)
        self.assertEqual(self.exit_status(), NO_REPLY)
        self.assertEqual(self.complaints[-1], "1 request got no reply")


class TerminalRawSessionTests(RawSessionTestCase):
    """
    The raw console with a terminal on stdout: what the terminal would obey
    is shown escaped.
    """

    terminal = True

    def test_controls_and_bidirectional_controls_are_escaped(self):
        """
        ESC, CR, DEL, C1, line separators and bidi overrides are escaped;
        TAB, text and right-to-left marks are kept; bytes not UTF-8 are U+FFFD.
        """
        self.type(b"5\n")
        self.answer(HOSTILE_REPLY)
        self.assertEqual(self.stdio.lines(), HOSTILE_REPLY_SHOWN)
        self.assertEqual(self.complaints, [])

    def test_every_control_but_tab_and_newline_is_escaped(self):
        """No C0, DEL or C1 character reaches the terminal; lines stay one per server line."""
        controls = "".join(map(chr, [*range(0x20), 0x7F, *range(0x80, 0xA0)]))
        self.type(b"5\n")
        self.answer(controls.encode())
        shown = self.stdio.output.decode()
        self.assertEqual([char for char in shown if char in controls], ["\t", "\n", "\n"])
        escaped = "".join(f"\\x{code:02x}" for code in range(9))
        self.assertEqual(shown.split("\n")[0], escaped + "\t")


class LongLineTests(RawSessionTestCase):
    """
    Lines too long to be legal requests are refused before they are sent.
    """

    def test_overlong_lines_are_refused_and_later_lines_work(self):
        """Lines of 2002 and 100000 bytes, and an overlong last line, are never sent."""
        self.type(b"1 Cy\n")
        self.answer(b"")
        self.type(b"2 " + b"a" * 2000 + b"\n")
        for _ in range(100):  # a line of 100000 bytes, as a pipe would bring it
            self.type(b"b" * 1000)
        self.type(b"\n2 after\n")
        self.assertEqual(len(self.complaints), 2, self.complaints)
        self.answer(b"")
        self.type(b"2 " + b"c" * 5000)
        self.end_input()
        self.answer(b"")
        self.assertEqual(self.sent(), [b"1 Cy", b"2 after", b"4"])
        self.assertEqual(
            self.complaints,
            [
                "line not sent: 2002 bytes, and no request is longer than 1026",
                "line not sent: more than 1028 bytes, and no request is longer than 1026",
                "line not sent: more than 1028 bytes, and no request is longer than 1026",
            ],
        )
        self.assertEqual(self.exit_status(), 0)

    def test_longest_legal_line_is_sent(self):
        """A 2 with a text of the largest legal size, CRLF-ended, is sent whole."""
        text = b"x" * LONGEST_TEXT
        self.type(b"2 " + text + b"\r\n")
        self.assertEqual((self.sent(), self.complaints), ([b"2 " + text], []))

    def test_a_byte_more_is_refused(self):
        """A line one byte longer than the largest legal request is not sent."""
        self.type(b"2 " + b"x" * (LONGEST_TEXT + 1) + b"\n")
        self.assertEqual(self.sent(), [])
        self.assertEqual(
            self.complaints, ["line not sent: 1027 bytes, and no request is longer than 1026"]
        )


class ArgumentParsingTests(SynchronousTestCase):
    """
    The command line, parsed: defaults and names.
    """

    def test_defaults(self):
        """
        Without options the client polls every second, and waits for each
        reply as long as its protocol does (2 s for 1.0, 30 s for sessions).
        """
        options = client_module.parse_arguments(["::1", "12345"])
        self.assertEqual(
            (options.host, options.port, options.poll_interval, options.timeout, options.name),
            ("::1", 12345, 1.0, None, None),
        )

    def test_name_and_intervals(self):
        """--name, --poll-interval 0 and --timeout are read as given."""
        options = client_module.parse_arguments(
            ["h", "1", "--poll-interval", "0", "--timeout", "0.5", "--name", "Zoé"]
        )
        self.assertEqual((options.poll_interval, options.timeout, options.name), (0, 0.5, "Zoé"))

    def test_seconds_out_of_range_say_what_is_allowed(self):
        """A wrong --timeout or --poll-interval says which numbers it takes."""
        cases = {
            ("--timeout", "0"): "argument --timeout: must be a number of seconds greater than 0 "
            "and up to 86400, not '0'",
            ("--poll-interval", "-1"): "argument --poll-interval: must be a number of seconds "
            "from 0 (never) to 86400, not '-1'",
            ("--timeout", "nan"): "argument --timeout: must be a number of seconds greater than "
            "0 and up to 86400, not 'nan'",
            ("--poll-interval", "86401"): "argument --poll-interval: must be a number of "
            "seconds from 0 (never) to 86400, not '86401'",
        }
        for argv, message in cases.items():
            stderr = io.StringIO()
            with self.assertRaises(SystemExit) as raised, redirect_stderr(stderr):
                client_module.parse_arguments(["h", "1", *argv])
            self.assertEqual(raised.exception.code, 2)
            self.assertEqual(stderr.getvalue().splitlines()[-1], f"{PROGRAM}: error: {message}")


def udpchat_imports(module):
    """
    The modules of udpchat that C{udpchat.<module>} imports, anywhere in
    its source (inside functions too).
    """
    path = Path(udpchat.__file__).parent / f"{module}.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module == "udpchat":
            found.update(f"udpchat.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return {name for name in found if name.startswith("udpchat.")}


class LayoutTests(SynchronousTestCase):
    """
    The client wing's modules import downward only, so that each is loaded
    once, and the request codes stay in wire.py.
    """

    def test_client_wing_imports_only_downward(self):
        """wire, terminal, session, reliable, raw, console, client: each imports only modules before it."""
        for index, module in enumerate(CLIENT_WING):
            below = {f"udpchat.{name}" for name in CLIENT_WING[:index]}
            self.assertEqual(udpchat_imports(module) - below, set(), module)

    def test_no_module_imports_the_entry_point(self):
        """No module of udpchat imports udpchat.client, which runs as __main__."""
        modules = [path.stem for path in Path(udpchat.__file__).parent.glob("*.py")]
        self.assertEqual(
            [module for module in modules if "udpchat.client" in udpchat_imports(module)], []
        )

    def test_request_codes_are_not_spelled_in_the_client(self):
        """No bytes literal of the client wing is a request code: those live in wire.py."""
        literals = set()
        for module in CLIENT_WING[1:]:
            path = Path(udpchat.__file__).parent / f"{module}.py"
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and isinstance(node.value, bytes):
                    literals.add(node.value)
        self.assertEqual(literals & {b"%d" % code for code in range(10)}, set())


class ScriptedServer(Member):
    """
    A UDP socket on loopback standing in for the server: the test reads each
    request the client sends and writes the reply itself.
    """

    def __init__(self):
        Member.__init__(self, ("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.client_address = None

    def receive(self):
        """Return the next datagram from the client, within the deadline."""
        datagram, self.client_address = self.socket.recvfrom(70000)
        return datagram

    def answer(self, reply):
        """Send C{reply} (bytes) to the client that sent the last request."""
        self.socket.sendto(reply, self.client_address)


def reap(process):
    """Kill C{process} if it is still running, and wait for it."""
    if process.poll() is None:
        process.kill()
        process.wait(DEADLINE)


class CommandTestCase(ProcessTestCase):
    """
    The real command, against the real server or a L{ScriptedServer}.
    """

    def scripted_server(self):
        server = ScriptedServer()
        self.addCleanup(server.close)
        return server

    def local_client(self, port, *options, **kwargs):
        """A client of the server on 127.0.0.1 C{port}."""
        return self.client("127.0.0.1", str(port), *options, **kwargs)

    def interruptible_client(self, port, *options):
        """
        A client that Ctrl-C (SIGINT) reaches even when this test runs with
        SIGINT ignored, as a background job does: an ignored signal would be
        inherited, a handled one is reset to the default by exec.
        """
        previous = signal.getsignal(signal.SIGINT)
        if previous == signal.SIG_IGN:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            return self.local_client(port, *options)
        finally:
            signal.signal(signal.SIGINT, previous)

    def finish(self, client, status=0):
        """End the client's input; assert a clean exit with C{status}."""
        client.end_input()
        self.assertEqual(client.wait(), status, client.stderr.text())
        self.assertNotIn("Traceback", client.stderr.text())


class CommandTests(CommandTestCase):
    """
    The real command on pipes: what needs the process, its descriptors and
    its signals.
    """

    def test_piped_session_with_the_real_server(self):
        """
        With the default options, replies and the group's lines reach a pipe
        while the client runs; the end of input leaves and exits 0.
        """
        server = self.server()
        alice = self.member(server, name="A")
        client = self.local_client(server.port)
        client.type("1 Cy\n2 hello\n")
        self.assertEqual(lines_until(alice, "Cy: hello"), ["Cy has joined", "Cy: hello"])
        self.assertEqual(alice.request(b"2 hi Cy"), b"")
        wait_for(lambda: "A: hi Cy" in client.stdout.lines)  # polled by itself
        self.assertIsNone(client.process.poll())
        self.finish(client)
        self.assertEqual((client.stdout.lines, client.stderr.lines), (["A", "A: hi Cy"], []))
        self.assertEqual(lines_until(alice, "Cy has left the group"), ["Cy has left the group"])

    def test_interrupt_while_registered_leaves_and_exits_zero(self):
        """SIGINT to a registered client leaves the group and exits 0 without a traceback."""
        server = self.server()
        alice = self.member(server, name="A")
        client = self.interruptible_client(server.port, "--poll-interval", "0.2", "--timeout", "1")
        client.type("1 Cy\n")
        wait_for(lambda: client.stdout.lines)
        client.process.send_signal(signal.SIGINT)
        self.assertEqual(client.wait(), 0, client.stderr.text())
        self.assertNotIn("Traceback", client.stderr.text())
        self.assertEqual(
            lines_until(alice, "Cy has left the group"), ["Cy has joined", "Cy has left the group"]
        )

    def test_second_interrupt_stops_waiting(self):
        """A second SIGINT while leaving exits at once with 130, one line, no traceback."""
        server = self.scripted_server()
        client = self.interruptible_client(server.port, "--poll-interval", "0", "--timeout", "30")
        client.type("1 Cy\n")
        self.assertEqual(server.receive(), b"1 Cy")
        server.answer(b"")
        client.process.send_signal(signal.SIGINT)
        self.assertEqual(server.receive(), b"4")  # and no reply to it
        client.process.send_signal(signal.SIGINT)
        self.assertEqual(client.wait(), 130, client.stderr.text())
        self.assertEqual(
            client.stderr.lines, ["udpchat.client: interrupted again: not waiting for the server"]
        )

    def test_reader_of_output_gone_is_end_of_input(self):
        """When nobody reads stdout any more the client leaves and exits, stdin still open."""
        server = self.scripted_server()
        with tempfile.TemporaryDirectory() as cwd:
            process = subprocess.Popen(
                [sys.executable, "-m", "udpchat.client", "127.0.0.1", str(server.port),
                 "--poll-interval", "0", "--timeout", "5"],
                cwd=cwd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            self.addCleanup(reap, process)
            self.addCleanup(process.stdin.close)
            process.stdin.write(b"1 Cy\n")
            process.stdin.flush()
            self.assertEqual(server.receive(), b"1 Cy")
            process.stdout.close()
            server.answer(b"")
            self.assertEqual(server.receive(), b"4")
            server.answer(b"")
            self.assertEqual(process.wait(DEADLINE), 0)
            self.assertEqual(process.stderr.read(), b"")
            process.stderr.close()

    def test_closed_stdin_is_end_of_input(self):
        """With file descriptor 0 closed the client exits 0 at once, no traceback."""
        server = self.scripted_server()
        # The shell closes fd 0, then becomes the client.
        script = 'exec "$0" -m udpchat.client "$@" <&-'
        argv = ["127.0.0.1", str(server.port), "--timeout", "1"]
        result = run_isolated(["sh", "-c", script, sys.executable, *argv])
        self.assertEqual((result.returncode, result.stdout), (0, b""), result.stderr)
        self.assertNotIn(b"Traceback", result.stderr)
        server.expect_silence(0.05)

    def test_null_stdin_is_end_of_input(self):
        """With stdin /dev/null, as in CI, the client exits 0 at once, no traceback."""
        server = self.scripted_server()
        client = self.local_client(server.port, "--timeout", "1", stdin=subprocess.DEVNULL)
        self.assertEqual(client.wait(), 0, client.stderr.text())
        self.assertEqual((client.stdout.lines, client.stderr.lines), ([], []))

    def test_unreachable_server_is_reported_and_exit_one(self):
        """Nothing listening on the port: one line, a summary, exit 1 at the end of input."""
        client = self.local_client(free_port(), "--timeout", "0.2")
        client.type("1 Cy\n")
        self.finish(client, status=1)
        self.assertEqual(len(client.stderr.lines), 2, client.stderr.lines)
        self.assertEqual(client.stderr.lines[1], "udpchat.client: 1 request got no reply")
        self.assertEqual(client.stdout.lines, [])


class AddressTests(CommandTestCase):
    """
    HOST may be an IPv6 literal or a name.
    """

    def test_ipv6_literal_host(self):
        """HOST ::1 talks to a server listening on ::1."""
        server = self.server(interface="::1")
        alice = self.member(server.address("::1"), name="A")
        client = self.client("::1", str(server.port), "--timeout", "1")
        client.type("1 Cy\n")
        self.finish(client)
        self.assertEqual(client.stdout.lines, ["A"])
        self.assertEqual(
            lines_until(alice, "Cy has left the group"), ["Cy has joined", "Cy has left the group"]
        )

    def test_bracketed_ipv6_literal_host(self):
        """HOST [::1], as in URLs, is the IPv6 address ::1."""
        server = self.member(("::1", 0))
        port = server.socket.getsockname()[1]
        client = self.client("[::1]", str(port), "--timeout", "5", "--poll-interval", "0")
        client.type("5\n")
        datagram, source = server.socket.recvfrom(70000)
        self.assertEqual(datagram, b"5")
        server.socket.sendto(b"hello", source)
        self.finish(client)
        self.assertEqual(client.stdout.lines, ["hello"])

    def test_localhost_reaches_dual_stack_server(self):
        """HOST localhost talks to a server listening on every interface."""
        server = self.server(interface=None)
        alice = self.member(server, name="A")
        client = self.client("localhost", str(server.port), "--timeout", "1")
        client.type("1 Cy\n")
        self.finish(client)
        self.assertEqual(client.stdout.lines, ["A"])
        self.assertEqual(
            lines_until(alice, "Cy has left the group"), ["Cy has joined", "Cy has left the group"]
        )


class CommandLineTests(CommandTestCase):
    """
    A wrong command line is a usage error or one line, never a traceback;
    and the command loads each module once, the chat mode only when asked.
    """

    def run_all(self, cases):
        """
        Run the command with each of C{cases}' argument lists at once, stdin
        /dev/null; return each case's C{(status, stdout, stderr)}.
        """
        with tempfile.TemporaryDirectory() as cwd:
            processes = {}
            for case, argv in cases.items():
                processes[case] = process = subprocess.Popen(
                    [sys.executable, "-m", "udpchat.client", *argv],
                    cwd=cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=environment(CI="true"),
                )
                self.addCleanup(reap, process)
            outcomes = {}
            for case, process in processes.items():
                out, err = process.communicate(timeout=DEADLINE)
                outcomes[case] = (process.returncode, out, err)
        return outcomes

    def test_bad_arguments_exit_2_with_usage(self):
        """Missing, malformed and out-of-range arguments, and names no server accepts, exit 2."""
        port = str(free_port())
        cases = {
            "no arguments": [],
            "host only": ["127.0.0.1"],
            "port abc": ["127.0.0.1", "abc"],
            "port 0": ["127.0.0.1", "0"],
            "port 70000": ["127.0.0.1", "70000"],
            "poll interval -1": ["127.0.0.1", port, "--poll-interval", "-1"],
            "timeout 0": ["127.0.0.1", port, "--timeout", "0"],
            "timeout x": ["127.0.0.1", port, "--timeout", "x"],
            "unknown option": ["127.0.0.1", port, "--bogus"],
        }
        names = {f"name {name!r}": name for name in ("a,b", "x" * 33, " padded", "")}
        cases.update({case: ["127.0.0.1", port, "--name", name] for case, name in names.items()})
        outcomes = {
            case: (status, out, b"usage:" in err, b"Traceback" in err)
            for case, (status, out, err) in self.run_all(cases).items()
        }
        self.assertEqual(outcomes, {case: (2, b"", True, False) for case in cases})

    def test_invalid_name_says_why(self):
        """--name with a name that no server accepts says it is not a valid name, and why."""
        outcomes = self.run_all({"comma": ["127.0.0.1", "12345", "--name", "a,b"]})
        self.assertIn(
            b"not a valid name: 'a,b' (forbidden character in name)", outcomes["comma"][2]
        )

    def test_unresolvable_host_is_one_line(self):
        """A host name that does not resolve exits 1 with one stderr line."""
        client = self.client("nonexistent.invalid", "12345", stdin=subprocess.DEVNULL)
        self.assertEqual(client.wait(), 1)
        self.assertEqual(len(client.stderr.lines), 1, client.stderr.lines)
        self.assertIn("cannot resolve 'nonexistent.invalid'", client.stderr.text())
        self.assertEqual(client.stdout.lines, [])

    def test_host_label_too_long_is_one_line(self):
        """A host whose label is over 63 characters exits 1 with one stderr line."""
        client = self.client("a" * 64 + ".com", "12345", stdin=subprocess.DEVNULL)
        self.assertEqual(client.wait(), 1)
        self.assertEqual(len(client.stderr.lines), 1, client.stderr.lines)
        self.assertIn("cannot resolve", client.stderr.text())
        self.assertEqual(client.stdout.lines, [])

    def imports(self, *argv):
        """
        Run C{python -X importtime -m udpchat.client *argv}, stdin /dev/null;
        return its exit status and the modules it imported, in order.
        """
        result = run_isolated(
            [sys.executable, "-X", "importtime", "-m", "udpchat.client", *argv]
        )
        modules = [
            line.rsplit("|", 1)[1].strip()
            for line in result.stderr.decode().splitlines()
            if line.startswith("import time:") and "|" in line
        ]
        return result.returncode, modules

    def test_raw_client_loads_neither_conch_nor_the_chat_mode(self):
        """The raw command runs without importing Twisted's conch, udpchat.console or sessions."""
        status, modules = self.imports("127.0.0.1", str(free_port()), "--timeout", "1")
        self.assertEqual(status, 0)
        self.assertIn("udpchat.session", modules)
        self.assertEqual(
            [
                m
                for m in modules
                if m.startswith("twisted.conch") or m in ("udpchat.console", "udpchat.reliable")
            ],
            [],
        )

    def test_every_module_is_loaded_once(self):
        """
        With --name, the command loads the chat mode, and never udpchat.client
        a second time beside the __main__ it runs as.
        """
        status, modules = self.imports(
            "127.0.0.1", str(free_port()), "--timeout", "0.1", "--name", "Al"
        )
        self.assertEqual(status, 1)  # nobody answered the join
        ours = [module for module in modules if module.split(".")[0] == "udpchat"]
        self.assertEqual(
            sorted(ours), sorted(["udpchat"] + [f"udpchat.{name}" for name in CLIENT_WING[:-1]])
        )


class HangTests(CommandTestCase):
    """
    The client ends whatever happens to its descriptors and however long
    its queue: it was found alive, deaf to SIGTERM, long after its test.
    """

    def test_stderr_gone(self):
        """With nobody to read stderr, a request with no reply still ends the client."""
        server = self.scripted_server()  # which never answers
        reader, writer = os.pipe()
        os.close(reader)  # every write to stderr fails (EPIPE)
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "udpchat.client", "127.0.0.1", str(server.port), "--timeout", "0.2"],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=writer,
            )
        finally:
            os.close(writer)
        self.addCleanup(reap, process)
        process.stdin.write(b"1 Bob\n")
        process.stdin.close()
        self.assertEqual(process.wait(DEADLINE), 1)

    def test_second_sigterm_stops_the_wait(self):
        """SIGTERM leaves; a second one stops waiting for replies to a long queue."""
        server = self.scripted_server()
        client = self.local_client(server.port, "--timeout", "0.5")
        client.type("5\n" * 200)
        server.receive()  # it runs, and has its handlers
        client.process.send_signal(signal.SIGTERM)
        server.receive()  # still waiting on its queue
        client.process.send_signal(signal.SIGTERM)
        self.assertEqual(client.wait(), 130, client.stderr.text())
        self.assertNotIn("Traceback", client.stderr.text())

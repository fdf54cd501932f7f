"""
Tests of the client's chat mode, C{python -m udpchat.client HOST PORT --name
NAME} (L{udpchat.console}).

On a terminal: the client runs on a real pseudo-terminal (the standard
library's C{pty}) against the real C{twistd udpchat}, and a small terminal
emulator (L{Screen}) turns what it writes into the rows a user would see.
Through a pipe: plain lines, as a script would use it.  And the pure parts
(line kinds, the input line's window) on their own.
"""

import codecs
import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import tempfile
import termios
import threading

from tests.harness import DEADLINE, Client, Member, OutputReader, Server, environment, lines_until, wait_for
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import FakeDatagramTransport
from twisted.trial.unittest import SynchronousTestCase

from udpchat import console, wire
from udpchat.session import ChatClient

UP = "\x1b[A"
LEFT = "\x1b[D"
CTRL_C = "\x03"
CTRL_D = "\x04"
CTRL_U = "\x15"


class Screen:
    """
    Just enough of a VT100 to see what a user would: printable text with
    automatic wrap and scrolling, CR, LF, and the CSI sequences that move
    the cursor and erase.  Renditions (SGR) and modes are ignored, and
    every character takes one column.
    """

    def __init__(self, rows, columns):
        self.rows, self.columns = rows, columns
        self.cells = [[" "] * columns for _ in range(rows)]
        self.row = self.column = 0
        self.raw = b""
        self._wrap = False  # the last column was written: wrap before the next
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        self._state = "text"
        self._parameters = ""

    def feed(self, data):
        self.raw += data
        for char in self._utf8.decode(data):
            self._char(char)

    def text(self):
        """The rows, trailing spaces removed."""
        return ["".join(row).rstrip() for row in self.cells]

    def _char(self, char):
        if self._state == "escape":
            self._state = "csi" if char == "[" else "text"
            self._parameters = ""
        elif self._state == "csi":
            if char in "0123456789;?":
                self._parameters += char
            else:
                self._state = "text"
                self._csi(char, self._parameters.lstrip("?"))
        elif char == "\x1b":
            self._state = "escape"
        elif char == "\r":
            self.column, self._wrap = 0, False
        elif char == "\n":
            self._line_feed()
        elif char >= " ":
            self._put(char)

    def _put(self, char):
        if self._wrap:
            self.column = 0
            self._line_feed()
        self.cells[self.row][self.column] = char
        if self.column == self.columns - 1:
            self._wrap = True
        else:
            self.column += 1

    def _line_feed(self):
        self._wrap = False
        if self.row == self.rows - 1:
            self.cells.pop(0)
            self.cells.append([" "] * self.columns)
        else:
            self.row += 1

    def _csi(self, final, parameters):
        numbers = [int(p) if p else 0 for p in parameters.split(";")]
        n = max(numbers[0], 1)
        self._wrap = False
        if final == "K":
            start, end = {0: (self.column, self.columns), 1: (0, self.column + 1)}.get(
                numbers[0], (0, self.columns)
            )
            self.cells[self.row][start:end] = [" "] * (end - start)
        elif final == "J" and numbers[0] == 2:
            self.cells = [[" "] * self.columns for _ in range(self.rows)]
        elif final == "C":
            self.column = min(self.column + n, self.columns - 1)
        elif final == "D":
            self.column = max(self.column - n, 0)
        elif final == "A":
            self.row = max(self.row - n, 0)
        elif final == "B":
            self.row = min(self.row + n, self.rows - 1)
        elif final == "H":
            self.row = max(numbers[0], 1) - 1
            self.column = (max(numbers[1], 1) - 1) if len(numbers) > 1 else 0


class TerminalClient:
    """
    The real client on a pseudo-terminal of C{rows} by C{columns}, its
    stderr a pipe; a thread feeds what it writes to a L{Screen}.
    """

    def __init__(self, port, *options, rows=24, columns=80, env=None):
        self.master, self.slave = pty.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        self.modes = termios.tcgetattr(self.slave)
        self.cwd = tempfile.TemporaryDirectory()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "udpchat.client", "127.0.0.1", str(port), *options],
            cwd=self.cwd.name,
            stdin=self.slave,
            stdout=self.slave,
            stderr=subprocess.PIPE,
            env=environment(**{"TERM": "xterm", "NO_COLOR": "", **(env or {})}),
        )
        self.stderr = OutputReader(self.process.stderr)
        self.screen = Screen(rows, columns)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        # The test keeps the slave open (to see its modes at the end), so
        # the master never reads as closed: poll, and stop when told.
        while not self._stop.is_set():
            if select.select([self.master], [], [], 0.05)[0]:
                try:
                    data = os.read(self.master, 65536)
                except OSError:
                    return
                with self._lock:
                    self.screen.feed(data)

    def type(self, text):
        os.write(self.master, text.encode("utf-8"))

    def rows(self):
        """The screen's rows now, and the cursor's C{(row, column)}."""
        with self._lock:
            return self.screen.text(), (self.screen.row, self.screen.column)

    def raw(self):
        with self._lock:
            return self.screen.raw

    def input_line(self):
        rows, (row, column) = self.rows()
        return rows[row]

    def wait_for_input_line(self, expected):
        """Wait until the cursor's row reads C{expected}, the cursor at its end."""

        def shown():
            rows, (row, column) = self.rows()
            return rows[row] == expected.rstrip() and column == len(expected)

        try:
            wait_for(shown)
        except AssertionError:
            raise AssertionError(f"input line not {expected!r}: {self.rows()}") from None

    def wait_for_row(self, expected):
        """Wait until some row above the cursor's reads C{expected}; return its index."""

        def found():
            rows, (row, _) = self.rows()
            return expected in rows[:row] and rows.index(expected) + 1

        try:
            return wait_for(found) - 1
        except AssertionError:
            raise AssertionError(f"no row {expected!r}: {self.rows()}") from None

    def wait(self, timeout=DEADLINE):
        code = self.process.wait(timeout)
        self.stderr.join()
        return code

    def close(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(DEADLINE)
        self._stop.set()
        self._reader.join(DEADLINE)
        os.close(self.master)
        os.close(self.slave)
        self.cwd.cleanup()



class ChatTestCase(SynchronousTestCase):
    """
    Start a server, members and chat clients, all stopped after the test.
    """

    def setUp(self):
        self.server = Server()
        self.addCleanup(self.server.stop)

    def member(self, name):
        member = Member(self.server.address())
        self.addCleanup(member.close)
        self.assertEqual(member.request(f"1 {name}".encode()), b"")
        return member

    def terminal(self, *options, **kwargs):
        client = TerminalClient(self.server.port, "--poll-interval", "0.2", *options, **kwargs)
        self.addCleanup(client.close)
        return client

    def piped(self, *options):
        client = Client("127.0.0.1", str(self.server.port), "--poll-interval", "0", *options)
        self.addCleanup(self._stop, client)
        return client

    def _stop(self, client):
        client.kill()
        if not client.process.stdin.closed:
            client.process.stdin.close()

    def assert_restored(self, terminal):
        """The terminal's modes are what they were before the client ran."""
        self.assertEqual(termios.tcgetattr(terminal.slave), terminal.modes)


class TerminalTests(ChatTestCase):
    """
    --name on a terminal: the input line at the bottom, the group above it.
    """

    def test_incoming_lines_go_above_the_input_line_which_stays_intact(self):
        """Lines arriving while the user types are printed above; the typing goes on."""
        bo = self.member("Bo")
        alice = self.terminal("--name", "Alice")
        alice.wait_for_row("* In the group: Bo")
        alice.wait_for_input_line("Alice> ")
        alice.type("hello wor")
        alice.wait_for_input_line("Alice> hello wor")
        self.assertEqual(bo.request(b"2 one"), b"")
        self.assertEqual(bo.request(b"2 two"), b"")
        one = alice.wait_for_row("Bo: one")
        two = alice.wait_for_row("Bo: two")
        alice.wait_for_input_line("Alice> hello wor")
        rows, (row, _) = alice.rows()
        self.assertEqual((two, row), (one + 1, one + 2), rows)
        alice.type("ld\r")
        alice.wait_for_row("Alice: hello world")
        alice.wait_for_input_line("Alice> ")
        self.assertEqual(
            lines_until(bo, "Alice: hello world"), ["Alice has joined", "Alice: hello world"]
        )
        self.assertEqual(alice.stderr.lines, [])

    def test_history_nick_events_and_quit(self):
        """Up recalls a line; /nick renames; events are dimmed; /quit leaves, exit 0."""
        bo = self.member("Bo")
        alice = self.terminal("--name", "Alice")
        alice.wait_for_input_line("Alice> ")
        alice.type("café\r")
        alice.wait_for_row("Alice: café")
        alice.type("first\r")
        alice.wait_for_row("Alice: first")
        alice.type("second\r")
        alice.wait_for_row("Alice: second")
        alice.type(UP + UP)
        alice.wait_for_input_line("Alice> first")
        alice.type(LEFT * 5 + "the " + "\r")
        alice.wait_for_row("Alice: the first")
        alice.type("/nick Al\r")
        alice.wait_for_row("* You are now known as Al")
        alice.wait_for_input_line("Al> ")
        self.assertEqual(bo.request(b"3 Bob"), b"")
        alice.wait_for_row("* Bo changed his name to Bob")
        self.assertIn(b"\x1b[2m* Bo changed his name to Bob\x1b[0m", alice.raw())
        alice.type("/quit\r")
        self.assertEqual(alice.wait(), 0, alice.stderr.text())
        self.assertEqual(
            lines_until(bo, "Al has left the group"),
            [
                "Alice has joined",
                "Alice: café",
                "Alice: first",
                "Alice: second",
                "Alice: the first",
                "Alice changed his name to Al",
                "Al has left the group",
            ],
        )
        self.assertEqual(alice.input_line(), "")  # the shell's prompt goes there
        self.assert_restored(alice)
        self.assertEqual(alice.stderr.lines, [])

    def test_refused_name_asks_again(self):
        """A taken name is explained and asked for again; NO_COLOR leaves out renditions."""
        bo = self.member("Bo")
        cy = self.terminal("--name", "Bo", env={"NO_COLOR": "1"})
        cy.wait_for_row("! the server refused the name 'Bo': it is taken, or not allowed")
        cy.wait_for_row("* Type a name to try again, or /quit")
        cy.wait_for_input_line("Name: Bo")
        cy.type(CTRL_U + "Cy\r")
        cy.wait_for_row("* In the group: Bo")
        cy.wait_for_input_line("Cy> ")
        self.assertNotIn(b"\x1b[2m", cy.raw())
        self.assertNotIn(b"\x1b[1m", cy.raw())
        cy.type("typed, not sent" + CTRL_C)
        self.assertEqual(cy.wait(), 0, cy.stderr.text())
        self.assertEqual(
            lines_until(bo, "Cy has left the group"), ["Cy has joined", "Cy has left the group"]
        )
        self.assert_restored(cy)

    def test_long_input_scrolls_sideways(self):
        """A line wider than the terminal shows its end, on one row, and is sent whole."""
        bo = self.member("Bo")
        alice = self.terminal("--name", "Al", columns=30)
        alice.wait_for_input_line("Al> ")
        text = "".join(chr(ord("a") + i % 26) for i in range(60))
        alice.type(text)
        alice.wait_for_input_line("Al> " + text[-25:])
        self.assertEqual(bo.request(b"2 meanwhile"), b"")
        alice.wait_for_row("Bo: meanwhile")
        alice.wait_for_input_line("Al> " + text[-25:])
        alice.type("\r" + CTRL_D)
        self.assertEqual(alice.wait(), 0, alice.stderr.text())
        self.assertIn(f"Al: {text}", lines_until(bo, "Al has left the group"))


class PipeTests(ChatTestCase):
    """
    --name without a terminal: plain lines in and out, no control codes.
    """

    def test_lines_become_messages_and_commands_work(self):
        """Lines are said, commands act, bad lines are explained on stderr."""
        bo = self.member("Bo")
        alice = self.piped("--name", "Alice")
        alice.type("hello\n")
        wait_for(lambda: "Alice: hello" in alice.stdout.lines)
        self.assertEqual(bo.request(b"2 hi Alice"), b"")
        self.assertEqual(bo.request(b"3 Bob"), b"")
        alice.type("/poll\n/nick Al\n/raw 2 raw\n/bogus\n2 \x01\n//slash\n   \n")
        alice.end_input()
        self.assertEqual(alice.wait(), 0, alice.stderr.text())
        self.assertEqual(
            alice.stdout.lines,
            [
                "In the group: Bo",
                "Alice: hello",
                "Bo: hi Alice",
                "Bo changed his name to Bob",
                "You are now known as Al",
                "(empty reply)",
                "Al: /slash",
            ],
        )
        self.assertEqual(
            alice.stderr.lines,
            [
                "udpchat.client: unknown command /bogus: /help lists the commands",
                "udpchat.client: not sent: a message cannot hold control characters "
                "(a tab aside) or line separators",
                "udpchat.client: not sent: a message cannot be blank",
            ],
        )
        self.assertNotIn("\x1b", alice.stdout.text() + alice.stderr.text())
        self.assertEqual(
            lines_until(bo, "Al has left the group"),
            [
                "Alice has joined",
                "Alice: hello",
                "Alice changed his name to Al",
                "Al: raw",
                "Al: /slash",
                "Al has left the group",
            ],
        )

    def test_quit_leaves_without_the_end_of_input(self):
        """/quit leaves and exits 0; the lines after it are not sent."""
        bo = self.member("Bo")
        alice = self.piped("--name", "Alice")
        alice.type("/help\n/quit\nafter\n")
        self.assertEqual(alice.wait(), 0, alice.stderr.text())
        self.assertIn(
            "  /quit       leave the group and exit (so do Ctrl-D on an empty line, and Ctrl-C)",
            alice.stdout.lines,
        )
        self.assertEqual(
            lines_until(bo, "Alice has left the group"),
            ["Alice has joined", "Alice has left the group"],
        )

    def test_refused_name_exits_1(self):
        """A taken name is reported on stderr, nothing is sent, and the exit status is 1."""
        bo = self.member("Bo")
        other = self.piped("--name", "Bo")
        other.type("hello\n")
        other.end_input()
        self.assertEqual(other.wait(), 1)
        self.assertEqual(
            other.stderr.lines,
            ["udpchat.client: the server refused the name 'Bo': it is taken, or not allowed"],
        )
        self.assertEqual(other.stdout.lines, [])
        self.assertEqual(bo.request(b"5"), b"")


class ConsoleUnitTests(SynchronousTestCase):
    """
    The pure parts of L{console}: what a line is, and what the input shows.
    """

    def test_line_kinds(self):
        """Joins, leaves, renames and drop notices are events; chat lines are plain."""
        events = [
            "Bo has joined",
            "Bo has left the group",
            "Bo changed his name to Bob",
            "[1 line dropped]",
            "[12 lines dropped]",
        ]
        plain = ["Bo: hi", "Bo: Cy has joined", "Bo: x has left the group", "[lines dropped]"]
        self.assertEqual([wire.line_kind(line) != wire.CHAT_LINE for line in events], [True] * 5)
        self.assertEqual([wire.line_kind(line) for line in plain], [wire.CHAT_LINE] * 4)

    def test_member_list_reads_as_a_sentence(self):
        """The reply to the join is shown as who is in the group, "and N more" included."""
        self.assertEqual(console._member_list(b""), "You are alone in the group")
        self.assertEqual(
            console._member_list(b"Cy, Bo, and 998 more"), "In the group: Cy, Bo, and 998 more"
        )

    def test_control_characters_are_not_printed(self):
        """A hostile server's escape sequences reach the terminal as U+FFFD; TAB stays."""
        self.assertEqual(console.printable("a\x1b[2Jb\tc\x9b"), "a\ufffd[2Jb\tc\ufffd")

    def test_judged_uses_the_wire(self):
        """A legal request is encoded; an illegal one raises with an explanation."""
        self.assertEqual(wire.judged(wire.Say("hé")), "2 hé".encode())
        with self.assertRaises(wire.IllegalMessage) as raised:
            wire.judged(wire.Say("x" * 1025))
        self.assertEqual(
            console.explain(raised.exception, "x" * 1025),
            "a message holds at most 1024 bytes of UTF-8 (this one has 1025)",
        )

    def test_every_refusal_is_explained(self):
        """Each reason the wire gives for refusing a message or a name reads as a sentence."""
        refused = [wire.Say(text) for text in (" \t", "a\x01", "a\u2028", "x" * 1025)]
        refused += [wire.Rename(name) for name in ("a,b", " a", "Illegal message", "x" * 33)]
        for request in refused:
            with self.assertRaises(wire.IllegalMessage) as raised:
                wire.judged(request)
            self.assertNotEqual(console.explain(raised.exception), str(raised.exception))

    def test_window_keeps_the_cursor_in_view(self):
        """The input line scrolls sideways only as far as the cursor needs."""
        chars = list("abcdefghij")
        self.assertEqual(console.input_window(chars, 10, 0, 4), (6, "ghij", 4))
        self.assertEqual(console.input_window(chars, 7, 6, 4), (6, "ghij", 1))
        self.assertEqual(console.input_window(chars, 2, 6, 4), (2, "cdef", 0))
        self.assertEqual(console.input_window(chars, 3, 0, 20), (0, "abcdefghij", 3))

    def test_wide_characters_take_two_columns(self):
        """East Asian wide characters count twice, combining marks not at all."""
        self.assertEqual(console.columns("a中e\u0301"), 4)


SERVER = ("127.0.0.1", 12345)


class FakeScreen:
    """A screen that keeps what it is told: C{(text, kind)} pairs, the prompt, the input."""

    def __init__(self):
        self.said = []
        self.prompt = None
        self.input = ""
        self.closed = False

    def say(self, text, kind):
        self.said.append((text, kind))

    def set_prompt(self, text):
        self.prompt = text

    def set_input(self, text):
        self.input = text

    def close(self):
        self.closed = True
        return defer.succeed(None)


class ChatSessionTests(SynchronousTestCase):
    """
    L{console.ChatSession} through a real L{ChatClient}, on a fake transport,
    clock and screen.
    """

    def session(self, terminal=False):
        self.clock = Clock()
        self.transport = FakeDatagramTransport()
        self.screen = FakeScreen()
        session = console.ChatSession("Alice", terminal=terminal, environ={})
        client = ChatClient(
            SERVER, self.clock, show=session.show, warn=session.warn, poll_interval=0, timeout=2
        )
        client.makeConnection(self.transport)
        session.attach(client, self.screen)
        return session

    def sent(self):
        return [datagram for datagram, address in self.transport.written]

    def answer(self, session, reply):
        session.client.datagramReceived(reply, SERVER)

    def test_lines_wait_for_the_join_then_go_in_order(self):
        """Lines typed during the join wait for it; each then waits for the one before."""
        session = self.session()
        session.line_received(b"hi")
        session.line_received(b"/poll")
        self.assertEqual(self.sent(), [b"1 Alice"])
        self.answer(session, b"Bo")
        self.assertEqual(self.sent(), [b"1 Alice", b"2 hi"])
        self.answer(session, b"")
        self.assertEqual(self.sent()[-1], b"5")
        self.answer(session, b"Bo: yo\nBo has left the group")
        self.assertEqual(
            self.screen.said,
            [
                ("In the group: Bo", console.EVENT),
                ("Alice: hi", console.PLAIN),
                ("Bo: yo", console.PLAIN),
                ("Bo has left the group", console.EVENT),
            ],
        )

    def test_unacknowledged_message_is_reported(self):
        """A message with no reply is shown as not delivered, with its text."""
        session = self.session()
        self.answer(session, b"")
        session.line_received(b"hi")
        self.clock.advance(2)
        self.assertIn(
            ("(not delivered: no reply from the server) Alice: hi", console.PROBLEM),
            self.screen.said,
        )

    def test_join_without_reply_ends_the_session_with_status_1(self):
        """Without a terminal, a join with no reply ends the session, status 1."""
        session = self.session()
        self.clock.advance(2)
        self.assertEqual(self.successResultOf(session.closed), 1)
        self.assertIn(
            ("could not join: no reply from the server", console.PROBLEM), self.screen.said
        )
        self.assertTrue(self.screen.closed)

    def test_refused_name_is_asked_again_on_a_terminal(self):
        """On a terminal a refused name is put back on the input line, to edit and retry."""
        session = self.session(terminal=True)
        self.answer(session, wire.ILLEGAL)
        self.assertEqual((self.screen.prompt, self.screen.input), ("Name: ", "Alice"))
        session.line_received(b"a,b")
        self.assertEqual(self.sent(), [b"1 Alice"])
        session.line_received(b"Cy")
        self.assertEqual(self.sent(), [b"1 Alice", b"1 Cy"])
        self.answer(session, b"")
        self.assertEqual(self.screen.prompt, "Cy> ")
        self.assertIn(("You are alone in the group", console.EVENT), self.screen.said)

    def test_reply_that_is_no_acknowledgement(self):
        """Lines in place of an acknowledgement are shown, and the message unconfirmed."""
        session = self.session()
        self.answer(session, b"")
        session.line_received(b"hi")
        self.answer(session, b"Bo: late")
        self.assertEqual(
            self.screen.said[1:],
            [
                ("Bo: late", console.PLAIN),
                (
                    "(not confirmed: the server's reply was no acknowledgement) Alice: hi",
                    console.PROBLEM,
                ),
            ],
        )

    def test_nick_rename_and_refusal(self):
        """/nick changes the prompt once accepted, and explains a refusal."""
        session = self.session()
        self.answer(session, b"")
        session.line_received(b"/nick Al")
        self.answer(session, b"")
        session.line_received(b"/nick Bo")
        self.answer(session, wire.ILLEGAL)
        session.line_received(b"/nick Al")
        self.assertEqual(self.sent(), [b"1 Alice", b"3 Al", b"3 Bo"])
        self.assertEqual(self.screen.prompt, "Al> ")
        self.assertEqual(
            self.screen.said[1:],
            [
                ("You are now known as Al", console.EVENT),
                ("the server refused the name 'Bo': it is taken, or not allowed", console.PROBLEM),
                ("you are already called 'Al'", console.PROBLEM),
            ],
        )

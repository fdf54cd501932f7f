"""
Tests of the client's chat mode, C{python -m udpchat.client HOST PORT --name
NAME} (L{udpchat.console}).

Its behaviours (joining, commands, explanations, lines in order, plain lines
for scripts) are tested on L{console.ChatSession} through a real 1.0
L{ChatClient} (what the chat mode talks through after falling back, against
a server without sessions) on a fake transport and a L{Clock}, with a fake
screen or a L{LineScreen} on a fake stdio; the chat mode by sessions is
tested in tests/test_session_client.py.  The real command runs only for the real
terminal: on a pseudo-terminal (the standard library's C{pty}) against the
real C{twistd udpchat}, a small terminal emulator (L{Screen}) turning what
it writes into the rows a user would see; and for the exit status of a
refused name through a pipe.  The pure parts (the input line's window) are
tested on their own.
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

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.conch.insults.insults import ServerProtocol
from twisted.internet import defer
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from tests.harness import (
    DEADLINE,
    OutputReader,
    ProcessTestCase,
    environment,
    lines_until,
    wait_for,
)
from tests.test_client import HOSTILE_REPLY, HOSTILE_REPLY_SHOWN, FakeServerTestCase, FakeStdio
from udpchat import console, wire
from udpchat.session import NO_REPLY
from udpchat.terminal import visible

NO_REPLY_WARNING = "no reply from 127.0.0.1 port 12345 within 2 s (is the server running?)"
NOT_IN_GROUP = "not sent: you are not in the group (/join joins it)"
FORGOTTEN = "the server has forgotten you (restarted? idle too long?): /join to join again"
UP = "\x1b[A"
DOWN = "\x1b[B"
RIGHT = "\x1b[C"
LEFT = "\x1b[D"
DELETE = "\x1b[3~"
BACKSPACE = "\x7f"
CTRL_A = "\x01"
CTRL_C = "\x03"
CTRL_D = "\x04"
CTRL_E = "\x05"
CTRL_K = "\x0b"
CTRL_U = "\x15"
CTRL_W = "\x17"
LINE = "".join(chr(ord("a") + i % 26) for i in range(100))  # wider than the terminals here


class Screen:
    """
    Just enough of a VT100 to see what a user would: printable text with
    automatic wrap and scrolling, CR, LF, TAB, and the CSI sequences that move
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
        elif char == "\t":
            self.column = min((self.column // 8 + 1) * 8, self.columns - 1)
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



class TerminalTests(ProcessTestCase):
    """
    --name on a terminal: the input line at the bottom, the group above it.
    """

    def setUp(self):
        self.chat_server = self.server()

    def terminal(self, *options, **kwargs):
        client = TerminalClient(self.chat_server.port, "--poll-interval", "0.2", *options, **kwargs)
        self.addCleanup(client.close)
        return client

    def assert_restored(self, terminal):
        """The terminal's modes are what they were before the client ran."""
        self.assertEqual(termios.tcgetattr(terminal.slave), terminal.modes)

    def test_incoming_lines_go_above_the_input_line_which_stays_intact(self):
        """Lines arriving while the user types are printed above; the typing goes on."""
        bo = self.member(self.chat_server, name="Bo")
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
        bo = self.member(self.chat_server, name="Bo")
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
        """
        A taken name is named in the message, the input line left empty for
        another, which is the whole name; NO_COLOR leaves out renditions.
        """
        bo = self.member(self.chat_server, name="Bo")
        cy = self.terminal("--name", "Bo", env={"NO_COLOR": "1"})
        cy.wait_for_row("! the server refused the name 'Bo': it is taken")
        cy.wait_for_row("* Type another name, or /quit")
        cy.wait_for_input_line("Name: ")
        cy.type("Cy\r")
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

    def test_quit_after_a_refused_name(self):
        """/quit typed after a refused name quits, with status 0, and joins nobody."""
        zed = self.member(self.chat_server, name="Zed")
        other = self.terminal("--name", "Zed")
        other.wait_for_input_line("Name: ")
        other.type("/quit\r")
        self.assertEqual(other.wait(), 0, other.stderr.text())
        self.assertEqual(zed.request(b"5"), b"")
        self.assert_restored(other)

    def test_wide_lines_history_and_ctrl_w(self):
        """
        On 80 columns, a 100-character input shows its end, on one row,
        lines arriving above it; a line recalled shows whole, and so does
        the input cut to 10 characters; Ctrl-W deletes a word; what is sent
        is what was shown.
        """
        bo = self.member(self.chat_server, name="Bo")
        alice = self.terminal("--name", "Alice")
        alice.wait_for_input_line("Alice> ")
        room = 80 - len("Alice> ") - 1
        alice.type("second message\r")
        alice.wait_for_row("Alice: second message")
        alice.type(LINE)
        alice.wait_for_input_line("Alice> " + LINE[-room:])
        self.assertEqual(bo.request(b"2 meanwhile"), b"")
        alice.wait_for_row("Bo: meanwhile")
        alice.wait_for_input_line("Alice> " + LINE[-room:])
        alice.type(UP)
        alice.wait_for_input_line("Alice> second message")
        alice.type(DOWN)
        alice.wait_for_input_line("Alice> " + LINE[-room:])
        alice.type(BACKSPACE * 90)
        alice.wait_for_input_line("Alice> " + LINE[:10])
        alice.type(" three more words" + CTRL_W + CTRL_W)
        alice.wait_for_input_line("Alice> " + LINE[:10] + " three ")
        alice.type("\r")
        alice.wait_for_row("Alice: " + LINE[:10] + " three")
        alice.type(CTRL_D)
        self.assertEqual(alice.wait(), 0, alice.stderr.text())
        self.assertEqual(
            lines_until(bo, "Alice has left the group"),
            [
                "Alice has joined",
                "Alice: second message",
                f"Alice: {LINE[:10]} three ",
                "Alice has left the group",
            ],
        )

    def test_joined_again_after_a_server_restart(self):
        """
        The restarted server has lost the session: the client says so, and
        joins again by itself, under the same name.
        """
        alice = self.terminal("--name", "Alice")
        alice.wait_for_row("* You are alone in the group")
        port = self.chat_server.port
        self.chat_server.stop()
        restarted = self.server("--port", str(port))
        alice.wait_for_row("! the server lost your session: lines may be missing; joining again")
        wait_for(lambda: alice.rows()[0].count("* You are alone in the group") == 2)
        bo = self.member(restarted, name="Bo")
        alice.type("back\r")
        alice.wait_for_row("Alice: back")
        alice.type("/quit\r")
        self.assertEqual(alice.wait(), 0, alice.stderr.text())
        self.assertEqual(
            lines_until(bo, "Alice has left the group"), ["Alice: back", "Alice has left the group"]
        )
        self.assertEqual(alice.stderr.lines, [])


class PipeTests(ProcessTestCase):
    """
    --name through a pipe: plain lines, and the exit status.
    """

    def test_refused_name_exits_1(self):
        """A taken name is reported last on stderr, nothing is sent, and the exit status is 1."""
        server = self.server()
        bo = self.member(server, name="Bo")
        other = self.client("127.0.0.1", str(server.port), "--poll-interval", "0", "--name", "Bo")
        other.type("hello\n")
        other.end_input()
        self.assertEqual(other.wait(), 1)
        self.assertEqual(
            other.stderr.lines, ["udpchat.client: the server refused the name 'Bo': it is taken"]
        )
        self.assertEqual(other.stdout.lines, [])
        self.assertEqual(bo.request(b"5"), b"")


class InputLineTests(SynchronousTestCase):
    """
    The pure parts of the terminal's input line.
    """

    def test_window_keeps_the_cursor_in_view(self):
        """The input line scrolls sideways only as far as the cursor needs."""
        chars = list("abcdefghij")
        self.assertEqual(console.input_window(chars, 10, 0, 4), (6, "ghij", 4))
        self.assertEqual(console.input_window(chars, 7, 6, 4), (6, "ghij", 1))
        self.assertEqual(console.input_window(chars, 2, 6, 4), (2, "cdef", 0))
        self.assertEqual(console.input_window(chars, 3, 0, 20), (0, "abcdefghij", 3))

    def test_a_line_that_shrank_is_shown_from_as_far_left_as_fits(self):
        """Scrolled far right, a line cut short, or a shorter one recalled, is shown whole."""
        chars = list("abcdefghij")
        self.assertEqual(console.input_window(chars[:3], 3, 6, 4), (0, "abc", 3))
        self.assertEqual(console.input_window(chars[:6], 6, 6, 4), (2, "cdef", 4))
        self.assertEqual(console.input_window(chars, 8, 6, 4), (6, "ghij", 2))

    def test_escaped_characters_take_their_escape_s_width(self):
        """A piece shown as an escape is as wide as the escape."""
        pieces = ["a", visible("\u202e"), "b"]
        self.assertEqual(console.input_window(pieces, 3, 0, 7), (1, "\\u202eb", 7))

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(st.sampled_from(["a", "中", "e\u0301", "\\u202e", ""]), max_size=40),
        st.data(),
        st.integers(min_value=6, max_value=30),
    )
    def test_window_shows_the_cursor_and_wastes_no_room(self, pieces, data, room):
        """
        Wherever the cursor and the old scroll are: the window holds the
        cursor, fits the room, is a run of whole pieces from the scroll on,
        leaves nothing hidden on the left that would fit, and moves only
        when it must.
        """
        index = data.draw(st.integers(0, len(pieces)))
        old = data.draw(st.integers(0, len(pieces)))
        scroll, shown, cursor = console.input_window(pieces, index, old, room)
        width = lambda run: console.columns("".join(run))  # noqa: E731
        self.assertTrue(0 <= scroll <= index)
        self.assertEqual(cursor, width(pieces[scroll:index]))
        self.assertLessEqual(cursor, room)
        self.assertLessEqual(console.columns(shown), room)
        self.assertTrue("".join(pieces[scroll:]).startswith(shown))
        self.assertTrue(shown.startswith("".join(pieces[scroll:index])))
        if scroll:
            self.assertGreater(width(pieces[scroll - 1 :]), room)
        kept = old <= index and width(pieces[old:index]) <= room
        if kept and (old == 0 or width(pieces[old - 1 :]) > room):
            self.assertEqual(scroll, old)

    def test_wide_characters_take_two_columns(self):
        """East Asian wide characters count twice, combining marks not at all."""
        self.assertEqual(console.columns("a中e\u0301"), 4)

    def test_control_characters_are_shown_escaped(self):
        """A hostile server's escape sequences reach the terminal escaped; TAB stays."""
        self.assertEqual(visible("a\x1b[2Jb\tc\x9b\x7f"), "a\\x1b[2Jb\tc\\x9b\\x7f")

    def test_bidirectional_controls_are_shown_escaped(self):
        """Embeddings, overrides and isolates are escaped; marks and RTL text are kept."""
        self.assertEqual(
            visible("\u202atxet\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"),
            "\\u202atxet\\u202b\\u202c\\u202d\\u202e\\u2066\\u2067\\u2068\\u2069",
        )
        marked = "שלום\u200f abc\u200e \u061c"
        self.assertEqual(visible(marked), marked)

    def test_line_separators_are_shown_escaped(self):
        """U+2028 and U+2029, which no legal line holds, are escaped."""
        self.assertEqual(visible("a\u2028b\u2029"), "a\\u2028b\\u2029")


class Typist:
    """What a L{console.TerminalScreen} tells its session: the lines typed, and the end."""

    def __init__(self):
        self.lines = []
        self.ended = False

    def line_received(self, line):
        self.lines.append(line)

    def input_ended(self):
        self.ended = True

    def interrupt(self):
        raise AssertionError("no Ctrl-C in these tests")


class TerminalScreenTestCase(SynchronousTestCase):
    """
    L{console.TerminalScreen} under Twisted's terminal parser, on a string
    transport whose bytes a L{Screen} shows.
    """

    columns = 30
    prompt = "Al> "
    room = columns - len(prompt) - 1  # the last column is the cursor's

    def setUp(self):
        self.typist = Typist()
        self.transport = StringTransport()
        self.screen = console.TerminalScreen(
            self.typist, colour=False, restore=lambda: None, width=lambda: self.columns
        )
        self.keyboard = ServerProtocol(lambda: self.screen)
        self.keyboard.makeConnection(self.transport)
        self.screen.set_prompt(self.prompt)
        self.display = Screen(6, self.columns)

    def type(self, keys):
        """Keys typed; the terminal shows what the screen wrote."""
        self.keyboard.dataReceived(keys.encode("utf-8"))
        self.display.feed(self.transport.value())
        self.transport.clear()

    def assert_input_line(self, text, cursor):
        """The input row reads the prompt and C{text}, the cursor C{cursor} columns into it."""
        self.display.feed(self.transport.value())
        self.transport.clear()
        rows = self.display.text()
        row, column = self.display.row, self.display.column
        self.assertEqual(
            (rows[row], column), ((self.prompt + text).rstrip(), len(self.prompt) + cursor)
        )


class TerminalScreenTests(TerminalScreenTestCase):
    """
    The input line, wider than the terminal, after every kind of edit; and
    what it shows of what it prints.
    """

    def test_typing_past_the_edge_shows_the_end(self):
        """A line wider than the terminal shows its end, the cursor after it."""
        self.type(LINE)
        self.assert_input_line(LINE[-self.room :], self.room)

    def test_backspacing_a_wide_line_shows_what_is_left(self):
        """Cut from 100 characters to 10, the line shows its 10 characters."""
        self.type(LINE + BACKSPACE * 90)
        self.assert_input_line(LINE[:10], 10)
        self.type("\r")
        self.assertEqual(self.typist.lines, [LINE[:10].encode()])

    def test_moving_through_a_wide_line(self):
        """Home, End, Left and Right keep the cursor in view, scrolling as little as they can."""
        self.type(LINE + CTRL_A)
        self.assert_input_line(LINE[: self.room], 0)
        self.type(RIGHT * 30)
        self.assert_input_line(LINE[30 - self.room : 30], self.room)
        self.type(LEFT * 3)
        self.assert_input_line(LINE[30 - self.room : 30], self.room - 3)
        self.type(CTRL_E)
        self.assert_input_line(LINE[-self.room :], self.room)
        self.type(LEFT * 80)
        self.assert_input_line(LINE[20 : 20 + self.room], 0)

    def test_deleting_in_a_wide_line(self):
        """Delete, Ctrl-K and Ctrl-U redraw what is left, from as far left as fits."""
        self.type(LINE + LEFT * 50 + DELETE * 5)
        self.assert_input_line((LINE[:50] + LINE[55:])[50 : 50 + self.room], 0)
        self.type(CTRL_K)
        self.assert_input_line(LINE[50 - self.room : 50], self.room)
        self.type(LEFT * 10 + CTRL_U)
        self.assert_input_line(LINE[40:50], 0)
        self.type("\r")
        self.assertEqual(self.typist.lines, [LINE[40:50].encode()])

    def test_history_after_a_wide_line(self):
        """
        Recalling a short line while a wide one is typed shows the short one
        whole; going down again shows the wide one's end, then nothing.
        """
        self.type("second message\r" + LINE)
        self.type(UP)
        self.assert_input_line("second message", 14)
        self.type(DOWN)
        self.assert_input_line(LINE[-self.room :], self.room)
        self.type(DOWN)
        self.assert_input_line("", 0)
        self.type(UP + UP + "!\r")
        self.assertEqual(self.typist.lines, [b"second message", b"second message!"])

    def test_ctrl_w_deletes_the_word_before_the_cursor(self):
        """Ctrl-W deletes the spaces before the cursor, then the word before them."""
        self.type("one two  three" + CTRL_W)
        self.assert_input_line("one two  ", 9)
        self.type(CTRL_W)
        self.assert_input_line("one ", 4)
        self.type("hello world" + LEFT * 3 + CTRL_W)
        self.assert_input_line("one hello rld", 10)
        self.type(CTRL_A + CTRL_W + "\r")
        self.assertEqual(self.typist.lines, [b"one hello rld"])

    def test_ctrl_w_in_a_wide_line(self):
        """Ctrl-W at the end of a wide line shows the line's new end."""
        words = " ".join(["word"] * 12)
        self.type(words + CTRL_W)
        self.assert_input_line(words[: -len("word")][-self.room :], self.room)

    def test_what_reorders_the_line_is_shown_escaped(self):
        """A right-to-left override typed or pasted shows as an escape, and is sent as typed."""
        self.type("a\u202eb")
        self.assert_input_line("a\\u202eb", 8)
        self.type("\r")
        self.assertEqual(self.typist.lines, ["a\u202eb".encode()])

    def test_lines_above_are_shown_escaped(self):
        """A server's line with escape sequences and overrides is printed escaped above."""
        self.type("typing")
        self.screen.say("Bo: \x1b[2J\u202eabc\x9b", console.PLAIN)
        self.assert_input_line("typing", 6)
        self.assertEqual(self.display.text()[0], "Bo: \\x1b[2J\\u202eabc\\x9b")
        self.assertNotIn(b"\x1b[2J", self.display.raw)
        self.assertNotIn("\u202e".encode(), self.display.raw)


class ModelledEditingTests(TerminalScreenTestCase):
    """
    Any sequence of editing keys: the input row always shows a run of the
    line as a plain model edits it, with the cursor at its place.
    """

    # Each key, and what it does to the model's (characters, cursor).
    keys = {
        "a": lambda text, i: (text[:i] + ["a"] + text[i:], i + 1),
        "é": lambda text, i: (text[:i] + ["é"] + text[i:], i + 1),
        " ": lambda text, i: (text[:i] + [" "] + text[i:], i + 1),
        LEFT: lambda text, i: (text, max(i - 1, 0)),
        RIGHT: lambda text, i: (text, min(i + 1, len(text))),
        CTRL_A: lambda text, i: (text, 0),
        CTRL_E: lambda text, i: (text, len(text)),
        BACKSPACE: lambda text, i: (text[: i - 1] + text[i:], i - 1) if i else (text, i),
        DELETE: lambda text, i: (text[:i] + text[i + 1 :], i),
        CTRL_U: lambda text, i: (text[i:], 0),
        CTRL_K: lambda text, i: (text[:i], i),
        CTRL_W: lambda text, i: _model_kill_word(text, i),
    }

    @settings(max_examples=100, deadline=None)
    @given(st.lists(st.sampled_from(sorted(keys)), max_size=80), st.integers(1, 40))
    def test_any_editing(self, keys, start):
        """After each key: a whole run of the line, holding the cursor, filling the room."""
        self.setUp()
        text, index = ["a"] * start, start
        self.type("a" * start)
        for key in keys:
            text, index = self.keys[key](text, index)
            self.type(key)
            rows = self.display.text()
            shown = rows[self.display.row][len(self.prompt) :]
            scroll = index - (self.display.column - len(self.prompt))
            self.assertTrue(0 <= scroll <= index, (key, text, index, rows))
            self.assertLessEqual(index - scroll, self.room)
            self.assertEqual(shown, "".join(text[scroll : scroll + self.room]).rstrip())
            if scroll:
                self.assertGreaterEqual(len(text) - scroll, self.room)
        self.type("\r")
        self.assertEqual(self.typist.lines[-1], "".join(text).encode())


def _model_kill_word(text, index):
    start = index
    while start and text[start - 1] == " ":
        start -= 1
    while start and text[start - 1] != " ":
        start -= 1
    return text[:start] + text[index:], start


class ExplanationTests(SynchronousTestCase):
    """
    Refusals explained, by the reason the wire gives.
    """

    def test_a_text_too_long_says_how_long_it_is(self):
        """A message over 1024 bytes is explained with its size."""
        with self.assertRaises(wire.IllegalMessage) as raised:
            wire.judged(wire.Say("x" * 1025))
        self.assertEqual(
            console.explain(raised.exception, "x" * 1025),
            "a message holds at most 1024 bytes of UTF-8 (this one has 1025)",
        )

    def test_every_refusal_is_explained(self):
        """Each reason the wire gives for refusing a message or a name reads as a sentence."""
        refused = [wire.Say(text) for text in (" \t", "a\x01", "a\u2028", "x" * 1025, "x" * 2000)]
        refused += [wire.Rename(name) for name in ("a,b", " a", "Illegal message", "x" * 33)]
        for request in refused:
            with self.assertRaises(wire.IllegalMessage) as raised:
                wire.judged(request)
            self.assertNotEqual(console.explain(raised.exception), raised.exception.reason)

    def test_a_line_that_is_not_utf8_is_explained(self):
        """Bytes that are not UTF-8 are explained as such."""
        with self.assertRaises(wire.IllegalMessage) as raised:
            wire.decode(b"\xff")
        self.assertEqual(console.explain(raised.exception), "the line is not valid UTF-8")


class FakeScreen:
    """A screen that keeps what it is told: C{(text, kind)} pairs, and the prompt."""

    def __init__(self):
        self.said = []
        self.prompt = None
        self.closed = False

    def say(self, text, kind):
        self.said.append((text, kind))

    def set_prompt(self, text):
        self.prompt = text

    def close(self):
        self.closed = True
        return defer.succeed(None)


class ChatSessionTestCase(FakeServerTestCase):
    """
    A L{console.ChatSession} through a real 1.0 L{ChatClient}, on a fake
    transport and clock; the test answers as a server without sessions
    would.
    """

    def session(self, terminal=False, name="Alice"):
        """
        A session joining as C{name}, on the screen L{screen_for} makes; its
        complaints to stderr go to C{self.complaints}.
        """
        self.complaints = []
        session = console.ChatSession(
            name, terminal=terminal, environ={}, complain=self.complaints.append
        )
        self.connect(session.show, session.warn, session.forgotten, poll_interval=0)
        session.attach(self.client, self.screen_for(session))
        return session

    def screen_for(self, session):
        """A L{FakeScreen}, kept as C{self.screen}."""
        self.screen = FakeScreen()
        return self.screen

    def joined(self, reply=b"Bo"):
        """The server accepts the join, with the member list C{reply}."""
        self.answer(reply)


class ChatSessionTests(ChatSessionTestCase):
    """
    L{console.ChatSession} on a fake screen: what it sends and what it shows.
    """

    def test_lines_wait_for_the_join_then_go_in_order(self):
        """Lines typed during the join wait for it; each then waits for the one before."""
        session = self.session()
        session.line_received(b"hi")
        session.line_received(b"/poll")
        self.assertEqual(self.sent(), [b"1 Alice"])
        self.answer(b"Bo")
        self.assertEqual(self.sent(), [b"1 Alice", b"2 hi"])
        self.answer(b"")
        self.assertEqual(self.sent()[-1], b"5")
        self.answer(b"Bo: yo\n[3 lines dropped]\nBo has left the group")
        self.assertEqual(
            self.screen.said,
            [
                ("In the group: Bo", console.EVENT),
                ("Alice: hi", console.PLAIN),
                ("Bo: yo", console.PLAIN),
                ("[3 lines dropped]", console.EVENT),
                ("Bo has left the group", console.EVENT),
            ],
        )

    def test_on_a_terminal_lines_do_not_wait_for_replies(self):
        """On a terminal each line is acted on at once; replies are matched as they come."""
        session = self.session(terminal=True)
        self.joined()
        session.line_received(b"one")
        session.line_received(b"/help")
        session.line_received(b"two")
        self.assertIn((console.HELP.splitlines()[0], console.PLAIN), self.screen.said)
        self.answer(b"")
        self.answer(b"")
        self.assertEqual(self.sent(), [b"1 Alice", b"2 one", b"2 two"])
        self.assertEqual(
            [text for text, kind in self.screen.said if text.startswith("Alice:")],
            ["Alice: one", "Alice: two"],
        )

    def test_member_list_reads_as_a_sentence(self):
        """The reply to the join is shown as who is in the group, "and N more" included."""
        alone = self.session()
        self.joined(b"")
        crowded = self.session()
        self.joined(b"Cy, Bo, and 998 more")
        self.assertEqual(
            [alone.io.said, crowded.io.said],
            [
                [("You are alone in the group", console.EVENT)],
                [("In the group: Cy, Bo, and 998 more", console.EVENT)],
            ],
        )

    def test_unacknowledged_message_is_reported(self):
        """A message with no reply is shown as not delivered, with its text."""
        session = self.session()
        self.joined()
        session.line_received(b"hi")
        self.clock.advance(2)
        self.assertIn(
            ("(not delivered: no reply from the server) Alice: hi", console.PROBLEM),
            self.screen.said,
        )

    def test_refused_message_is_reported(self):
        """A message the server refuses is shown as not delivered, with a hint."""
        session = self.session()
        self.joined()
        session.line_received(b"hi")
        self.answer(wire.ILLEGAL)
        self.assertEqual(
            self.screen.said[-2],
            ("(not delivered: the server refused it) Alice: hi", console.PROBLEM),
        )

    def test_join_without_reply_ends_the_session_with_status_1(self):
        """
        Without a terminal, a join with no reply ends the session, status 1;
        the server may have taken the join all the same, so 4 goes first.
        """
        session = self.session()
        self.clock.advance(2)
        self.assertEqual(self.sent(), [b"1 Alice", b"4"])
        self.clock.advance(2)
        self.assertEqual(self.successResultOf(session.closed), NO_REPLY)
        self.assertEqual(
            self.screen.said,
            [
                (NO_REPLY_WARNING, console.PROBLEM),
                ("could not join as 'Alice': the server did not answer", console.PROBLEM),
            ],
        )
        self.assertEqual(self.complaints, ["2 requests got no reply"])
        self.assertTrue(self.screen.closed)

    def test_refused_name_without_a_terminal_ends_the_session_with_status_1(self):
        """Without a terminal, a refused name is explained; nothing typed is sent; status 1."""
        session = self.session(name="Bo")
        session.line_received(b"hello")
        self.answer(wire.ILLEGAL)
        self.assertEqual(self.successResultOf(session.closed), NO_REPLY)
        self.assertEqual(self.sent(), [b"1 Bo"])
        self.assertEqual(
            self.screen.said,
            [("the server refused the name 'Bo': it is taken, or not allowed", console.PROBLEM)],
        )

    def test_refused_name_is_asked_again_on_a_terminal(self):
        """
        On a terminal a refused name is named in the message, and the next
        line typed is a name: a whole one, checked before it is sent.
        """
        session = self.session(terminal=True)
        session.line_received(b"typed early")
        self.answer(wire.ILLEGAL)
        self.assertEqual(self.screen.prompt, "Name: ")
        self.assertEqual(
            self.screen.said,
            [
                (
                    "the server refused the name 'Alice': it is taken, or not allowed",
                    console.PROBLEM,
                ),
                ("1 line typed meanwhile not sent", console.PROBLEM),
                ("Type another name, or /quit", console.EVENT),
            ],
        )
        del self.screen.said[:]
        session.line_received(b"a,b")
        session.line_received(b"")
        self.assertEqual(self.sent(), [b"1 Alice"])
        session.line_received(b" Cy ")
        self.assertEqual(self.sent(), [b"1 Alice", b"1 Cy"])
        self.answer(b"")
        self.assertEqual(self.screen.prompt, "Cy> ")
        self.assertEqual(
            self.screen.said,
            [
                (
                    "not a valid name: 'a,b': a name cannot hold a comma, a control character "
                    "or an invisible formatting one",
                    console.PROBLEM,
                ),
                ("You are alone in the group", console.EVENT),
            ],
        )

    def test_commands_work_while_asked_for_a_name(self):
        """Asked for a name, /help, /join NAME and /raw act; /nick and /poll are not sent."""
        session = self.session(terminal=True)
        self.answer(wire.ILLEGAL)
        del self.screen.said[:]
        for line in (b"/help", b"/poll", b"/nick Cy", b"/join Bo"):
            session.line_received(line)
        self.answer(wire.ILLEGAL)
        self.assertEqual(self.screen.prompt, "Name: ")
        session.line_received(b"/raw 1 Dee")
        self.answer(b"")
        self.assertEqual(self.sent(), [b"1 Alice", b"1 Bo", b"1 Dee"])
        self.assertEqual(self.screen.prompt, "Dee> ")
        self.assertEqual(
            self.screen.said[len(console.HELP.splitlines()) :],
            [
                (NOT_IN_GROUP, console.PROBLEM),
                (NOT_IN_GROUP, console.PROBLEM),
                ("the server refused the name 'Bo': it is taken, or not allowed", console.PROBLEM),
                ("Type another name, or /quit", console.EVENT),
                ("(empty reply)", console.EVENT),
                ("You are now known as Dee", console.EVENT),
            ],
        )

    def test_join_without_reply_on_a_terminal_says_the_server_did_not_answer(self):
        """
        On a terminal a join with no reply blames the server, not the name;
        /join tries again, and a message waits for it.
        """
        session = self.session(terminal=True)
        self.clock.advance(2)
        self.assertEqual(
            self.screen.said,
            [
                (NO_REPLY_WARNING, console.PROBLEM),
                ("could not join as 'Alice': the server did not answer", console.PROBLEM),
                ("/join tries again, /quit leaves", console.EVENT),
            ],
        )
        self.assertEqual(self.screen.prompt, "Alice> ")
        self.assertNoResult(session.closed)
        del self.screen.said[:]
        session.line_received(b"hello")
        session.line_received(b"/join")
        session.line_received(b"hello again")
        self.assertEqual(self.sent(), [b"1 Alice", b"1 Alice"])
        self.answer(b"Bo")
        self.answer(b"")
        self.assertEqual(self.sent(), [b"1 Alice", b"1 Alice", b"2 hello again"])
        self.assertEqual(
            self.screen.said,
            [
                (NOT_IN_GROUP, console.PROBLEM),
                ("In the group: Bo", console.EVENT),
                ("Alice: hello again", console.PLAIN),
            ],
        )

    def test_join_again_once_forgotten(self):
        """
        A refused automatic poll says /join joins again; messages are not
        sent meanwhile; /join NAME joins as NAME, and /join while in is refused.
        """
        session = self.session(terminal=True)
        self.joined(b"")
        session.forgotten()
        session.line_received(b"hello")
        session.line_received(b"/join Al")
        self.answer(b"Bo")
        session.line_received(b"/join")
        session.line_received(b"/join now")
        self.assertEqual(self.sent(), [b"1 Alice", b"1 Al"])
        self.assertEqual(self.screen.prompt, "Al> ")
        self.assertEqual(
            self.screen.said[1:],
            [
                (FORGOTTEN, console.PROBLEM),
                (NOT_IN_GROUP, console.PROBLEM),
                ("In the group: Bo", console.EVENT),
                ("you are in the group already, as 'Al'", console.PROBLEM),
                ("you are in the group already, as 'Al'", console.PROBLEM),
            ],
        )

    def test_a_refused_poll_or_message_means_forgotten_once(self):
        """A poll or a message the server refuses: not a member any more, said once."""
        session = self.session()
        self.joined(b"")
        session.line_received(b"hi")
        self.answer(wire.ILLEGAL)
        session.forgotten()  # the automatic poll, refused too, says nothing more
        self.assertEqual(
            self.screen.said[1:],
            [
                ("(not delivered: the server refused it) Alice: hi", console.PROBLEM),
                (FORGOTTEN, console.PROBLEM),
            ],
        )

    def test_quit_or_end_of_input_while_asked_for_a_name_ends_the_session(self):
        """Asked for a name, /quit or Ctrl-D ends the session; nothing more is sent."""
        for end in (b"/quit", None):
            session = self.session(terminal=True)
            self.answer(wire.ILLEGAL)
            if end is None:
                session.input_ended()
            else:
                session.line_received(end)
            self.assertEqual(self.successResultOf(session.closed), 0)
            self.assertEqual(self.sent(), [b"1 Alice"])

    def test_reply_that_is_no_acknowledgement(self):
        """Lines in place of an acknowledgement are shown, and the message unconfirmed."""
        session = self.session()
        self.joined(b"")
        session.line_received(b"hi")
        self.answer(b"Bo: late")
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
        self.joined(b"")
        session.line_received(b"/nick Al")
        self.answer(b"")
        session.line_received(b"/nick Bo")
        self.answer(wire.ILLEGAL)
        session.line_received(b"/nick Al")
        session.line_received(b"/nick")
        session.line_received(b"/nick a,b")
        self.assertEqual(self.sent(), [b"1 Alice", b"3 Al", b"3 Bo"])
        self.assertEqual(self.screen.prompt, "Al> ")
        self.assertEqual(
            self.screen.said[1:],
            [
                ("You are now known as Al", console.EVENT),
                ("the server refused the name 'Bo': it is taken, or not allowed", console.PROBLEM),
                ("you are already called 'Al'", console.PROBLEM),
                ("usage: /nick NEW", console.PROBLEM),
                (
                    "not a valid name: a name cannot hold a comma, a control character or an "
                    "invisible formatting one",
                    console.PROBLEM,
                ),
            ],
        )

    def test_nick_without_reply(self):
        """A /nick with no reply says the old name may still hold."""
        session = self.session()
        self.joined(b"")
        session.line_received(b"/nick Al")
        self.clock.advance(2)
        self.assertEqual(
            self.screen.said[-1],
            ("no reply from the server: your name may still be 'Alice'", console.PROBLEM),
        )
        self.assertEqual(self.screen.prompt, "Alice> ")

    def test_poll_says_what_came(self):
        """/poll shows the lines, or that none came, or why it failed."""
        session = self.session()
        self.joined(b"")
        for reply in (b"", b"Bo: hi", None, wire.ILLEGAL):
            session.line_received(b"/poll")
            if reply is None:
                self.clock.advance(2)
            else:
                self.answer(reply)
        self.assertEqual(
            self.screen.said[1:],
            [
                ("No new messages", console.EVENT),
                ("Bo: hi", console.PLAIN),
                (NO_REPLY_WARNING, console.PROBLEM),
                ("no reply from the server to /poll", console.PROBLEM),
                (FORGOTTEN, console.PROBLEM),
            ],
        )
        self.assertEqual(self.sent(), [b"1 Alice", b"5", b"5", b"5", b"5"])

    def test_raw_sends_the_line_and_follows_names(self):
        """/raw sends its line as typed and shows the reply; a name taken through it is ours."""
        session = self.session()
        self.joined(b"")
        session.line_received(b"/raw 3 Zed")
        self.answer(b"")
        session.line_received(b"/raw 5")
        self.answer(b"Bo: a\nBo: b")
        session.line_received(b"/raw 9 junk")
        self.answer(wire.ILLEGAL)
        session.line_received(b"/raw 5")
        self.clock.advance(2)
        self.assertEqual(self.sent(), [b"1 Alice", b"3 Zed", b"5", b"9 junk", b"5"])
        self.assertEqual(self.screen.prompt, "Zed> ")
        self.assertEqual(
            self.screen.said[1:],
            [
                ("(empty reply)", console.EVENT),
                ("You are now known as Zed", console.EVENT),
                ("Bo: a", console.PLAIN),
                ("Bo: b", console.PLAIN),
                ("Illegal message", console.PLAIN),
                (NO_REPLY_WARNING, console.PROBLEM),
                ("no reply from the server to /raw", console.PROBLEM),
            ],
        )

    def test_raw_leave_and_join_take_the_new_name(self):
        """Leaving with /raw 4 and joining again with /raw 1 Dee makes Dee the session's name."""
        session = self.session()
        self.joined(b"")
        session.line_received(b"/raw 4")
        self.answer(b"")
        session.line_received(b"/raw 1 Dee")
        self.answer(b"Bo")
        self.assertEqual(self.sent(), [b"1 Alice", b"4", b"1 Dee"])
        self.assertEqual(self.screen.prompt, "Dee> ")
        self.assertEqual(
            self.screen.said[-2:],
            [("Bo", console.PLAIN), ("You are now known as Dee", console.EVENT)],
        )

    def test_raw_line_too_long_is_not_sent(self):
        """A /raw line longer than any request is refused locally."""
        session = self.session()
        self.joined(b"")
        session.line_received(b"/raw 2 " + b"x" * 1025)
        self.assertEqual(self.sent(), [b"1 Alice"])
        self.assertEqual(
            self.screen.said[-1],
            ("not sent: 1027 bytes, and no request is longer than 1026", console.PROBLEM),
        )

    def test_lines_the_protocol_refuses_are_explained_and_not_sent(self):
        """Blank, too long, control characters, not UTF-8, unknown commands: explained, not sent."""
        session = self.session()
        self.joined(b"")
        for line in (b"   ", b"x" * 1025, b"2 \x01", b"caf\xe9", b"/bogus", b"/raw", b""):
            session.line_received(line)
        session.line_refused(None)
        self.assertEqual(self.sent(), [b"1 Alice"])
        self.assertEqual(
            self.screen.said[1:],
            [
                ("not sent: a message cannot be blank", console.PROBLEM),
                (
                    "not sent: a message holds at most 1024 bytes of UTF-8 (this one has 1025)",
                    console.PROBLEM,
                ),
                (
                    "not sent: a message cannot hold control characters (a tab aside) or "
                    "line separators",
                    console.PROBLEM,
                ),
                ("not sent: the line is not valid UTF-8", console.PROBLEM),
                ("unknown command /bogus: /help lists the commands", console.PROBLEM),
                ("usage: /raw LINE, as in /raw 5", console.PROBLEM),
                (
                    "not sent: the line is too long (a message holds at most 1024 bytes of UTF-8)",
                    console.PROBLEM,
                ),
            ],
        )

    def test_a_message_may_begin_with_a_slash_typed_twice(self):
        """A line beginning with // is the message with one slash; a CR at its end is dropped."""
        session = self.session()
        self.joined(b"")
        session.line_received(b"//slash\r")
        self.answer(b"")
        self.assertEqual(self.sent(), [b"1 Alice", b"2 /slash"])
        self.assertEqual(self.screen.said[-1], ("Alice: /slash", console.PLAIN))

    def test_quit_leaves_and_ignores_what_follows(self):
        """/quit leaves; the lines after it are not sent; the session ends with 0."""
        session = self.session()
        self.joined(b"")
        session.line_received(b"/quit")
        session.line_received(b"after")
        self.assertEqual(self.sent(), [b"1 Alice", b"4"])
        self.answer(b"")
        self.assertEqual(self.successResultOf(session.closed), 0)
        self.assertTrue(self.screen.closed)

    def test_interrupt_leaves(self):
        """Ctrl-C leaves the group once the request in flight is answered."""
        session = self.session(terminal=True)
        self.joined(b"")
        session.line_received(b"hi")
        session.interrupt()
        self.answer(b"")
        self.assertEqual(self.sent(), [b"1 Alice", b"2 hi", b"4"])
        self.answer(b"")
        self.assertEqual(self.successResultOf(session.closed), 0)

    def test_end_of_input_leaves_after_the_lines_typed(self):
        """At the end of input the lines typed are performed, then the session leaves."""
        session = self.session()
        session.line_received(b"hi")
        session.input_ended()
        self.joined(b"")
        self.answer(b"")
        self.assertEqual(self.sent(), [b"1 Alice", b"2 hi", b"4"])
        self.answer(b"")
        self.assertEqual(self.successResultOf(session.closed), 0)

    def test_commands_refuse_unexpected_arguments(self):
        """/poll now, /help me, /quit now: a usage line, and nothing done."""
        session = self.session()
        self.joined(b"")
        for line in (b"/poll now", b"/help me", b"/quit now"):
            session.line_received(line)
        self.assertEqual(self.sent(), [b"1 Alice"])
        self.assertEqual(
            self.screen.said[1:],
            [
                ("usage: /poll, with nothing after it", console.PROBLEM),
                ("usage: /help, with nothing after it", console.PROBLEM),
                ("usage: /quit, with nothing after it", console.PROBLEM),
            ],
        )
        self.assertNoResult(session.closed)

    def test_help_fits_in_80_columns(self):
        """Every line of /help fits on an 80-column terminal, and each command is in it."""
        lines = console.HELP.splitlines()
        self.assertEqual([line for line in lines if console.columns(line) >= 80], [])
        for command in ("/nick NEW", "/poll", "/join [NAME]", "/raw LINE", "/quit", "/help"):
            self.assertIn(f"  {command} ", "\n".join(lines))

    def test_raw_leave_means_out_of_the_group(self):
        """A leave through /raw 4 takes the session out: messages wait for /join."""
        session = self.session()
        self.joined(b"")
        session.line_received(b"/raw 4")
        self.answer(b"")
        session.line_received(b"hi")
        self.assertEqual(self.sent(), [b"1 Alice", b"4"])
        self.assertEqual(
            self.screen.said[-1],
            (NOT_IN_GROUP, console.PROBLEM),
        )

    def test_hostile_server_lines_reach_the_screen_decoded(self):
        """Bytes that are not UTF-8 in the server's lines are shown as U+FFFD."""
        session = self.session()
        self.joined(b"B\xff")
        session.line_received(b"/poll")
        self.answer(b"B\xff: \xfe")
        self.assertEqual(
            self.screen.said,
            [("In the group: B\ufffd", console.EVENT), ("B\ufffd: \ufffd", console.PLAIN)],
        )


class LineScreenTests(ChatSessionTestCase):
    """
    --name without a terminal: L{console.LineScreen} on stdio, plain lines
    for scripts, problems on stderr.
    """

    def screen_for(self, session):
        """A L{console.LineScreen} on a L{FakeStdio}, kept as C{self.stdio}."""
        self.stdio = FakeStdio(console.LineScreen(session, complain=self.complaints.append))
        return self.stdio.protocol

    def test_lines_become_messages_and_commands_work(self):
        """Lines are said, commands act, bad lines are explained on stderr, no control codes."""
        session = self.session()
        stdin = self.stdio.protocol
        self.joined(b"Bo")
        stdin.dataReceived(b"hello\n")
        self.answer(b"")
        stdin.dataReceived(b"/poll\n/nick Al\n/raw 2 raw\n/bogus\n2 \x01\n//slash\n   \n")
        for reply in (b"Bo: hi Alice\nBo changed his name to Bob", b"", b"", b""):
            self.answer(reply)
        stdin.readConnectionLost()
        self.answer(b"")
        self.assertEqual(self.successResultOf(session.closed), 0)
        self.assertEqual(
            self.sent(), [b"1 Alice", b"2 hello", b"5", b"3 Al", b"2 raw", b"2 /slash", b"4"]
        )
        self.assertEqual(
            self.stdio.lines(),
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
            self.complaints,
            [
                "unknown command /bogus: /help lists the commands",
                "not sent: a message cannot hold control characters (a tab aside) or line "
                "separators",
                "not sent: a message cannot be blank",
            ],
        )
        self.assertNotIn(b"\x1b", self.stdio.output)

    def test_help_and_quit_without_the_end_of_input(self):
        """/help prints the commands; /quit leaves and ends with 0; lines after it are not sent."""
        session = self.session()
        self.joined(b"Bo")
        self.stdio.protocol.dataReceived(b"/help\n/quit\nafter\n")
        self.answer(b"")
        self.assertEqual(self.successResultOf(session.closed), 0)
        self.assertEqual(self.sent(), [b"1 Alice", b"4"])
        self.assertEqual(self.stdio.lines()[1:], console.HELP.splitlines())
        self.assertTrue(self.stdio.closed)

    def test_controls_from_the_server_are_shown_escaped(self):
        """A server's escape sequences and bidi overrides reach stdout escaped."""
        self.session()
        self.joined("B\u202eo".encode())
        self.stdio.protocol.dataReceived(b"/poll\n")
        self.answer(HOSTILE_REPLY)
        self.assertEqual(
            self.stdio.lines(), ["In the group: B\\u202eo", *HOSTILE_REPLY_SHOWN]
        )

    def test_a_line_too_long_for_any_request_is_refused_before_it_ends(self):
        """A line longer than /raw and the largest request is explained, never sent."""
        self.session()
        self.joined(b"")
        for piece in (b"y" * 1500, b"y" * 1500, b"\nok\n"):  # as a pipe brings it
            self.stdio.protocol.dataReceived(piece)
        self.assertEqual(self.sent(), [b"1 Alice", b"2 ok"])
        self.assertEqual(
            self.complaints,
            ["not sent: the line is too long (a message holds at most 1024 bytes of UTF-8)"],
        )

    def test_missing_replies_are_summed_up_at_the_end(self):
        """Messages with no reply: each reported, then a summary, and exit status 1."""
        session = self.session()
        self.joined(b"")
        self.stdio.protocol.dataReceived(b"hi\n")
        self.stdio.protocol.readConnectionLost()
        self.clock.advance(2)
        self.answer(b"")
        self.assertEqual(self.successResultOf(session.closed), NO_REPLY)
        self.assertEqual(
            self.complaints,
            [
                NO_REPLY_WARNING,
                "(not delivered: no reply from the server) Alice: hi",
                "1 request got no reply",
            ],
        )

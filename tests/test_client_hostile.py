"""
The real client against a hostile server: a plain UDP socket in the test
(L{ScriptedServer}) that sends escape sequences, bytes that are not UTF-8,
a reply of 65,000 bytes, and datagrams nobody asked for.  Through a pipe
the raw client passes every reply on byte for byte; on a pseudo-terminal
it, and the chat mode, show what a terminal would obey escaped.
"""

import os
import pty
import select
import socket
import subprocess
import sys
import tempfile
import threading

from twisted.trial.unittest import SkipTest

from tests.harness import DEADLINE
from tests.test_client import HOSTILE_REPLY, HOSTILE_REPLY_SHOWN, CommandTestCase, reap
from tests.test_console import TerminalClient

# 65,000 bytes of lines, each with an escape sequence: more than Twisted's
# default read of 8,192 bytes, less than the 65,507 a server may send.
BIG_LINE = b"Bo: \x1b[31m" + b"x" * 54 + b"\n"  # 64 bytes
BIG_REPLY = BIG_LINE * 1015 + b"Bo: the end" + b"." * 29  # 65,000 bytes
BIG_REPLY_SHOWN = "Bo: \\x1b[31m" + "x" * 54 + "\n"


def open_pty():
    """A pseudo-terminal's C{(master, slave)}, or the test skips."""
    try:
        return pty.openpty()
    except OSError as e:
        raise SkipTest(f"no pseudo-terminal to be had: {e}") from None


class TerminalOutput:
    """
    All that a process writes to the pseudo-terminal it has as stdout, read
    by a thread until the process has closed it.
    """

    def __init__(self, master):
        self.data = b""
        self._master = master
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        while True:
            select.select([self._master], [], [], DEADLINE)
            try:
                data = os.read(self._master, 65536)
            except OSError:  # EIO: every writer has closed the slave
                return
            if not data:
                return
            self.data += data

    def text(self):
        """What was written, as lines (the terminal turns LF into CR LF)."""
        return self.data.replace(b"\r\n", b"\n").decode("utf-8")

    def join(self):
        self._thread.join(DEADLINE)


class HostileServerTests(CommandTestCase):
    """
    What reaches the user's output from a server that sends what it likes.
    """

    def raw_client(self, port, stdout):
        """The raw client of 127.0.0.1 C{port}, stdin and stderr pipes, on C{stdout}."""
        cwd = tempfile.TemporaryDirectory()
        self.addCleanup(cwd.cleanup)
        process = subprocess.Popen(
            [sys.executable, "-m", "udpchat.client", "127.0.0.1", str(port),
             "--poll-interval", "0", "--timeout", "5"],
            cwd=cwd.name,
            stdin=subprocess.PIPE,
            stdout=stdout,
            stderr=subprocess.PIPE,
        )
        self.addCleanup(reap, process)
        return process

    def converse(self, server, process):
        """
        Play the hostile server for a raw client that has C{5} typed three
        times: a hostile reply; a stranger's datagram before the reply it
        would stand in for, and a reply of 65,000 bytes; a short reply, and
        a datagram nobody asked for.
        """
        stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(stranger.close)
        for reply in (HOSTILE_REPLY, BIG_REPLY, b"last"):
            process.stdin.write(b"5\n")
            process.stdin.flush()
            self.assertEqual(server.receive(), b"5")
            if reply is BIG_REPLY:
                stranger.sendto(b"\x1b[2J forged", server.client_address)
            server.answer(reply)
        server.answer(b"\x1b[2J unasked")  # nothing is outstanding any more

    def test_raw_client_through_a_pipe_is_byte_exact(self):
        """Through a pipe every reply is on stdout as sent, whole; nothing else is."""
        server = self.scripted_server()
        process = self.raw_client(server.port, subprocess.PIPE)
        self.converse(server, process)
        stdout, stderr = process.communicate(timeout=DEADLINE)  # the end of input
        self.assertEqual((process.returncode, stderr), (0, b""))
        self.assertEqual(stdout, HOSTILE_REPLY + b"\n" + BIG_REPLY + b"\nlast\n")

    def test_raw_client_on_a_terminal_shows_controls_escaped(self):
        """
        With a terminal as stdout, the same replies are shown escaped, the
        big one whole: the client writes no control character but TAB and
        the line ends.
        """
        server = self.scripted_server()
        master, slave = open_pty()
        self.addCleanup(os.close, master)
        process = self.raw_client(server.port, slave)
        os.close(slave)
        output = TerminalOutput(master)
        self.converse(server, process)
        _, stderr = process.communicate(timeout=DEADLINE)
        self.assertEqual((process.returncode, stderr), (0, b""))
        output.join()
        self.assertEqual(
            output.text(),
            "\n".join(HOSTILE_REPLY_SHOWN) + "\n" + BIG_REPLY_SHOWN * 1015
            + "Bo: the end" + "." * 29 + "\nlast\n",
        )

    def test_chat_mode_on_a_terminal_shows_controls_escaped(self):
        """
        The chat mode shows a hostile member list and lines escaped, bidi
        overrides included, and a reply of 65,000 bytes whole.
        """
        server = self.scripted_server()
        alice = TerminalClient(
            server.port, "--name", "Al", "--poll-interval", "0", "--timeout", "5", columns=200
        )
        self.addCleanup(alice.close)
        self.assertRegex(server.receive(), rb"\A6 [0-9a-f]{32} Al\Z")
        token = b"ab" * 16
        names = "B\u202eo, \x1b]0;title\x07Eve, ".encode() + b"\xff"
        server.answer(b"0 %s 3\n%s" % (token, names))
        alice.wait_for_row("* In the group: B\\u202eo, \\x1b]0;title\\x07Eve, \ufffd")
        alice.type("/poll\r")
        self.assertEqual(server.receive(), b"8 %s 1 3" % token)
        server.answer(b"1 5\n" + HOSTILE_REPLY)
        alice.wait_for_row(HOSTILE_REPLY_SHOWN[0].expandtabs(8))
        alice.wait_for_row(HOSTILE_REPLY_SHOWN[1])
        alice.type("/poll\r")
        self.assertEqual(server.receive(), b"8 %s 2 5" % token)
        server.answer(b"2 1020\n" + BIG_REPLY)
        alice.wait_for_row("Bo: the end" + "." * 29)
        raw = alice.raw()
        self.assertEqual(raw.count(b"Bo: \\x1b[31m" + b"x" * 54), 1015)
        for obeyed in (b"\x1b]", b"\x1b[31m", "\u202e".encode(), b"\x07", b"\xc2\x9b"):
            self.assertNotIn(obeyed, raw)
        alice.type("/quit\r")
        self.assertEqual(server.receive(), b"0 %s 3" % token)
        server.answer(b"3")
        self.assertEqual(alice.wait(), 0, alice.stderr.text())
        self.assertEqual(alice.stderr.lines, [])

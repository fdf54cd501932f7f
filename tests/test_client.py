"""
End-to-end tests of the command-line client, C{python -m udpchat.client}.

The client runs as a real subprocess with its stdin a pipe (or /dev/null, or
closed), and talks over loopback either to the real C{twistd udpchat} or to
a scripted server: a plain UDP socket that shows exactly which datagrams the
client sent, and answers them as the test decides.
"""

import ast
import re
import signal
import subprocess
import sys
import tempfile
import time

from tests.harness import DEADLINE, Client, Member, Server, environment, free_port, lines_until, wait_for
from twisted.internet.task import Clock
from twisted.internet.testing import FakeDatagramTransport
from twisted.trial.unittest import SynchronousTestCase

from udpchat import client as client_module
from udpchat import session as session_module
from udpchat import wire

CLIENT = [sys.executable, "-m", "udpchat.client"]
REQUEST_LOGGED = re.compile(r"\] (\S+) sent (b['\"].*)$")
JOINED_FROM = re.compile(r"'Cy' joined from (\S+)$")
LONGEST_TEXT = 1024  # bytes of a chat text, as README.rst states


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


def stays(predicate, seconds):
    """
    Assert that C{predicate} stays true for C{seconds}: the one way to see
    that something (a poll, a line) does not happen.
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not predicate():
            raise AssertionError(f"{predicate} stopped holding")
        time.sleep(0.02)


def requests_from(server, source):
    """The datagrams a C{--log-level debug} server logged from C{source}."""
    found = []
    for line in list(server.output.lines):
        match = REQUEST_LOGGED.search(line)
        if match and match.group(1) == source:
            found.append(ast.literal_eval(match.group(2)))
    return found


def reap(process):
    """Kill C{process} if it is still running, and wait for it."""
    if process.poll() is None:
        process.kill()
        process.wait(DEADLINE)



class ClientTestCase(SynchronousTestCase):
    """
    Start servers, members and clients that are all stopped after the test.
    """

    def server(self, *options, **kwargs):
        server = Server(*options, **kwargs)
        self.addCleanup(server.stop)
        return server

    def member(self, server_address, name=None):
        member = Member(server_address)
        self.addCleanup(member.close)
        if name is not None:
            self.assertEqual(member.request(f"1 {name}".encode()), b"")
        return member

    def scripted_server(self):
        server = ScriptedServer()
        self.addCleanup(server.close)
        return server

    def client(self, *argv, **kwargs):
        client = Client(*argv, **kwargs)
        self.addCleanup(self._stop_client, client)
        return client

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

    def _stop_client(self, client):
        client.kill()
        if client.process.stdin is not None and not client.process.stdin.closed:
            client.process.stdin.close()

    def finish(self, client, status=0):
        """End the client's input; assert a clean exit with C{status}."""
        client.end_input()
        self.assertEqual(client.wait(), status, client.stderr.text())
        self.assertNotIn("Traceback", client.stderr.text())

    def client_source(self, server):
        """The address, as the server logs it, of the client that joined as Cy."""
        return wait_for(lambda: server.output.search(JOINED_FROM)).group(1)


class SessionTests(ClientTestCase):
    """
    A scripted session against the real server: requests in, replies out.
    """

    def test_scripted_session_gets_messages_by_automatic_poll(self):
        """A reply to 1, a said line and another member's line all arrive without typing 5."""
        server = self.server("--log-level", "debug")
        alice = self.member(server.address(), "A")
        client = self.local_client(server.port, "--poll-interval", "0.2", "--timeout", "1")
        client.type("1 Cy\n")
        wait_for(lambda: client.stdout.lines)
        client.type("2 hello\n")
        self.assertEqual(lines_until(alice, "Cy: hello"), ["Cy has joined", "Cy: hello"])
        self.assertEqual(alice.request(b"2 hi Cy"), b"")
        wait_for(lambda: len(client.stdout.lines) >= 2)
        self.assertEqual(client.stdout.lines, ["A", "A: hi Cy"])
        requests = requests_from(server, self.client_source(server))
        self.assertEqual(requests[:2], [b"1 Cy", b"2 hello"])
        self.assertEqual(set(requests[2:]), {b"5"})  # automatic polls, none typed
        self.finish(client)
        self.assertEqual(client.stderr.lines, [])
        self.assertEqual(client.stdout.lines, ["A", "A: hi Cy"])

    def test_output_reaches_a_pipe_while_the_client_runs(self):
        """An automatically polled line is readable from the pipe before the input ends."""
        server = self.server()
        alice = self.member(server.address(), "A")
        client = self.local_client(server.port, "--poll-interval", "0.2", "--timeout", "1")
        client.type("1 Cy\n")
        wait_for(lambda: client.stdout.lines)
        self.assertEqual(alice.request(b"2 are you there"), b"")
        wait_for(lambda: "A: are you there" in client.stdout.lines)
        self.assertIsNone(client.process.poll())
        self.assertFalse(client.process.stdin.closed)
        self.finish(client)

    def test_poll_reply_of_several_lines_prints_one_line_each(self):
        """A typed 5 fetching three queued lines prints three stdout lines, in order."""
        server = self.server()
        alice = self.member(server.address(), "A")
        client = self.local_client(server.port, "--poll-interval", "0", "--timeout", "1")
        client.type("1 Cy\n")
        wait_for(lambda: client.stdout.lines)
        for request in (b"2 one", b"2 two", b"3 Al"):
            self.assertEqual(alice.request(request), b"")
        client.type("5\n")
        self.finish(client)
        self.assertEqual(
            client.stdout.lines, ["A", "A: one", "A: two", "A changed his name to Al"]
        )

    def test_poll_interval_zero_polls_only_when_typed(self):
        """With --poll-interval 0 another member's line waits until the script types 5."""
        server = self.server("--log-level", "debug")
        alice = self.member(server.address(), "A")
        client = self.local_client(server.port, "--poll-interval", "0", "--timeout", "1")
        client.type("1 Cy\n")
        wait_for(lambda: client.stdout.lines)
        source = self.client_source(server)
        self.assertEqual(alice.request(b"2 hi Cy"), b"")
        stays(lambda: client.stdout.lines == ["A"], 1.5)
        self.assertEqual(requests_from(server, source), [b"1 Cy"])
        client.type("5\n")
        wait_for(lambda: len(client.stdout.lines) >= 2)
        self.assertEqual(client.stdout.lines, ["A", "A: hi Cy"])
        self.finish(client)

    def test_default_poll_interval_polls_by_itself(self):
        """Without --poll-interval the registered client still polls by itself."""
        server = self.server()
        alice = self.member(server.address(), "A")
        client = self.client("127.0.0.1", str(server.port))
        client.type("1 Cy\n")
        wait_for(lambda: client.stdout.lines)
        self.assertEqual(alice.request(b"2 ping"), b"")
        wait_for(lambda: len(client.stdout.lines) >= 2)
        self.assertEqual(client.stdout.lines, ["A", "A: ping"])
        self.finish(client)


class LeavingTests(ClientTestCase):
    """
    End of input and Ctrl-C leave the group, after the replies in flight.
    """

    def test_end_of_input_leaves_after_the_lines_before_it(self):
        """Closing stdin right after two lines sends both, then 4, and exits 0."""
        server = self.server()
        alice = self.member(server.address(), "A")
        client = self.local_client(server.port, "--poll-interval", "0.2", "--timeout", "1")
        client.type("1 Cy\n2 bye\n")
        self.finish(client)
        self.assertEqual(
            lines_until(alice, "Cy has left the group"),
            ["Cy has joined", "Cy: bye", "Cy has left the group"],
        )
        self.assertEqual(client.stdout.lines, ["A"])
        self.assertEqual(client.stderr.lines, [])

    def test_last_line_without_newline_is_sent(self):
        """A final line with no newline before the end of input is sent like any other."""
        server = self.server()
        alice = self.member(server.address(), "A")
        client = self.local_client(server.port, "--timeout", "1")
        client.type("1 Cy\n2 last words")
        self.finish(client)
        self.assertEqual(
            lines_until(alice, "Cy has left the group"),
            ["Cy has joined", "Cy: last words", "Cy has left the group"],
        )

    def test_interrupt_while_registered_leaves_and_exits_zero(self):
        """SIGINT to a registered client leaves the group and exits 0 without a traceback."""
        server = self.server()
        alice = self.member(server.address(), "A")
        client = self.interruptible_client(server.port, "--poll-interval", "0.2", "--timeout", "1")
        client.type("1 Cy\n")
        wait_for(lambda: client.stdout.lines)
        client.process.send_signal(signal.SIGINT)
        self.assertEqual(client.wait(), 0, client.stderr.text())
        self.assertNotIn("Traceback", client.stderr.text())
        self.assertEqual(
            lines_until(alice, "Cy has left the group"), ["Cy has joined", "Cy has left the group"]
        )

    def test_interrupt_waits_for_the_reply_in_flight_then_leaves(self):
        """After SIGINT the reply to the request in flight is still printed, then 4 is sent."""
        server = self.scripted_server()
        client = self.interruptible_client(server.port, "--poll-interval", "0", "--timeout", "5")
        client.type("1 Cy\n")
        self.assertEqual(server.receive(), b"1 Cy")
        server.answer(b"A")
        client.type("5\n")
        self.assertEqual(server.receive(), b"5")
        client.process.send_signal(signal.SIGINT)
        server.expect_silence(0.3)
        server.answer(b"A: late")
        self.assertEqual(server.receive(), b"4")
        server.answer(b"")
        self.assertEqual(client.wait(), 0, client.stderr.text())
        self.assertEqual(client.stdout.lines, ["A", "A: late"])
        self.assertNotIn("Traceback", client.stderr.text())

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
        self.assertEqual(client.wait(5), 130, client.stderr.text())
        self.assertEqual(len(client.stderr.lines), 1, client.stderr.lines)
        self.assertIn("interrupted again", client.stderr.text())

    def test_reader_of_output_gone_is_end_of_input(self):
        """When nobody reads stdout any more the client leaves and exits, stdin still open."""
        server = self.scripted_server()
        with tempfile.TemporaryDirectory() as cwd:
            process = subprocess.Popen(
                CLIENT + ["127.0.0.1", str(server.port), "--poll-interval", "0", "--timeout", "5"],
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

    def test_end_of_input_unregistered_sends_no_leave(self):
        """A client that never joined sends no 4 at the end of input."""
        server = self.scripted_server()
        client = self.local_client(server.port, "--timeout", "5")
        client.type("5\n")
        self.assertEqual(server.receive(), b"5")
        server.answer(b"Illegal message")
        self.finish(client)
        server.expect_silence(0.05)
        self.assertEqual(client.stdout.lines, ["Illegal message"])

    def test_closed_stdin_is_end_of_input(self):
        """With file descriptor 0 closed the client exits 0 at once, no traceback."""
        server = self.scripted_server()
        with tempfile.TemporaryDirectory() as cwd:
            # The shell closes fd 0, then becomes the client.
            script = 'exec "$0" -m udpchat.client "$@" <&-'
            argv = ["127.0.0.1", str(server.port), "--timeout", "1"]
            process = subprocess.Popen(
                ["sh", "-c", script, sys.executable, *argv],
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            self.addCleanup(reap, process)
            out, err = process.communicate(timeout=5)
        self.assertEqual((process.returncode, out), (0, b""), err)
        self.assertNotIn(b"Traceback", err)
        server.expect_silence(0.05)

    def test_null_stdin_is_end_of_input(self):
        """With stdin /dev/null, as in CI, the client exits 0 at once, no traceback."""
        server = self.scripted_server()
        client = self.local_client(server.port, "--timeout", "1", stdin=subprocess.DEVNULL)
        self.assertEqual(client.wait(5), 0, client.stderr.text())
        self.assertEqual((client.stdout.lines, client.stderr.lines), ([], []))


class RequestTests(ClientTestCase):
    """
    Requests as the scripted server sees them: one at a time, exactly as typed.
    """

    def test_lines_are_sent_exactly_as_typed(self):
        """Each line is one datagram, only its newline and one trailing CR removed."""
        server = self.scripted_server()
        client = self.local_client(server.port, "--poll-interval", "0", "--timeout", "5")
        client.process.stdin.write(
            b"2  two  spaces \r\n\n2 tab\there\r\r\n2 caf\xc3\xa9 \xff\n5 \n1 Cy\r\n"
        )
        client.process.stdin.flush()
        sent = []
        for _ in range(6):
            sent.append(server.receive())
            server.answer(b"")
        self.assertEqual(
            sent, [b"2  two  spaces ", b"", b"2 tab\there\r", b"2 caf\xc3\xa9 \xff", b"5 ", b"1 Cy"]
        )
        client.end_input()
        self.assertEqual(server.receive(), b"4")  # "1 Cy" was answered: registered
        server.answer(b"")
        self.assertEqual(client.wait(), 0)

    def test_one_request_outstanding_and_only_non_empty_replies_printed(self):
        """The next line waits for the reply to the last; empty replies print nothing."""
        server = self.scripted_server()
        client = self.local_client(server.port, "--poll-interval", "0", "--timeout", "5")
        client.type("5\n2 a\n2 b\n")
        self.assertEqual(server.receive(), b"5")
        server.expect_silence(0.3)
        server.answer(b"first")
        self.assertEqual(server.receive(), b"2 a")
        server.answer(b"")
        self.assertEqual(server.receive(), b"2 b")
        server.answer(b"third\nfourth")
        self.finish(client)
        self.assertEqual(client.stdout.lines, ["first", "third", "fourth"])
        self.assertEqual(client.stderr.lines, [])

    def test_missing_reply_is_reported_once_and_client_goes_on(self):
        """Two unanswered requests make one stderr line; the next request is still sent."""
        server = self.scripted_server()
        client = self.local_client(server.port, "--poll-interval", "0", "--timeout", "0.3")
        client.type("5\n5\n2 x\n")
        self.assertEqual(server.receive(), b"5")
        self.assertEqual(server.receive(), b"5")
        self.assertEqual(server.receive(), b"2 x")
        server.answer(b"Illegal message")
        wait_for(lambda: client.stdout.lines)
        self.finish(client, status=1)
        self.assertEqual(client.stdout.lines, ["Illegal message"])
        self.assertEqual(len(client.stderr.lines), 2, client.stderr.lines)
        self.assertIn("no reply from 127.0.0.1", client.stderr.lines[0])
        self.assertEqual(client.stderr.lines[1], "udpchat.client: 2 requests got no reply")

    def test_missing_reply_while_leaving_goes_on_with_the_next_line(self):
        """After the end of input a lost reply is counted, and the next line still sent."""
        server = self.scripted_server()
        client = self.local_client(server.port, "--poll-interval", "0", "--timeout", "0.5")
        client.type("1 Cy\n2 a\n2 b\n")
        client.end_input()
        self.assertEqual(server.receive(), b"1 Cy")
        server.answer(b"")
        self.assertEqual(server.receive(), b"2 a")  # and no reply to it
        self.assertEqual(server.receive(), b"2 b")
        server.answer(b"")
        self.assertEqual(server.receive(), b"4")
        server.answer(b"")
        self.assertEqual(client.wait(), 1, client.stderr.text())
        self.assertEqual(len(client.stderr.lines), 2, client.stderr.lines)
        self.assertIn("no reply from 127.0.0.1", client.stderr.lines[0])
        self.assertEqual(client.stderr.lines[1], "udpchat.client: 1 request got no reply")

    def test_stray_datagrams_are_ignored(self):
        """A datagram from another socket is neither printed nor taken as the reply."""
        server = self.scripted_server()
        stranger = self.member(("127.0.0.1", server.port))
        client = self.local_client(server.port, "--poll-interval", "0", "--timeout", "5")
        client.type("5\n")
        self.assertEqual(server.receive(), b"5")
        stranger.socket.sendto(b"stray", server.client_address)
        server.answer(b"real")
        wait_for(lambda: client.stdout.lines)
        client.type("5\n")
        self.assertEqual(server.receive(), b"5")
        stranger.socket.sendto(b"stray again", server.client_address)
        server.answer(b"again")
        self.finish(client)
        self.assertEqual(client.stdout.lines, ["real", "again"])

    def test_unreachable_server_is_reported_and_exit_one(self):
        """Nothing listening on the port: one line, a summary, exit 1 at the end of input."""
        client = self.local_client(free_port(), "--timeout", "0.5")
        client.type("1 Cy\n")
        self.finish(client, status=1)
        self.assertEqual(len(client.stderr.lines), 2, client.stderr.lines)
        self.assertEqual(client.stderr.lines[1], "udpchat.client: 1 request got no reply")
        self.assertEqual(client.stdout.lines, [])


class PollingTests(ClientTestCase):
    """
    Automatic polling: when it starts, how it drains, and when it stops.
    """

    def test_automatic_poll_waits_the_interval_and_drains_at_once(self):
        """Polls come an interval apart, but at once after a non-empty reply."""
        server = self.scripted_server()
        client = self.local_client(server.port, "--poll-interval", "1", "--timeout", "5")
        client.type("1 Cy\n")
        self.assertEqual(server.receive(), b"1 Cy")
        server.answer(b"A")
        answered = time.monotonic()
        self.assertEqual(server.receive(), b"5")
        self.assertGreater(time.monotonic() - answered, 0.7)
        server.answer(b"A: one\nA: two")
        answered = time.monotonic()
        self.assertEqual(server.receive(), b"5")
        self.assertLess(time.monotonic() - answered, 0.5)
        server.answer(b"")
        server.expect_silence(0.5)
        self.assertEqual(server.receive(), b"5")
        server.answer(b"")
        self.assertEqual(client.stdout.lines, ["A", "A: one", "A: two"])
        client.end_input()
        self.assertEqual(server.receive(), b"4")
        server.answer(b"")
        self.assertEqual(client.wait(), 0)
        self.assertEqual(client.stderr.lines, [])

    def test_refused_join_starts_no_polling(self):
        """A 1 answered Illegal message does not register; a later accepted 1 does."""
        server = self.scripted_server()
        client = self.local_client(server.port, "--poll-interval", "0.2", "--timeout", "5")
        client.type("1 Cy\n")
        self.assertEqual(server.receive(), b"1 Cy")
        server.answer(b"Illegal message")
        server.expect_silence(1.0)
        client.type("1 Cy\n")
        self.assertEqual(server.receive(), b"1 Cy")
        server.answer(b"")
        self.assertEqual(server.receive(), b"5")
        server.answer(b"")
        client.end_input()
        self.assertEqual(server.receive(), b"4")
        server.answer(b"")
        self.assertEqual(client.wait(), 0)
        self.assertEqual(client.stdout.lines, ["Illegal message"])

    def test_automatic_poll_refused_stops_polling_quietly(self):
        """An automatic 5 answered Illegal message: one stderr line, no stdout, no more polls."""
        server = self.scripted_server()
        client = self.local_client(server.port, "--poll-interval", "0.2", "--timeout", "5")
        client.type("1 Cy\n")
        self.assertEqual(server.receive(), b"1 Cy")
        server.answer(b"")
        self.assertEqual(server.receive(), b"5")
        server.answer(b"")
        self.assertEqual(server.receive(), b"5")
        server.answer(b"Illegal message")
        wait_for(lambda: client.stderr.lines)
        server.expect_silence(1.0)
        self.assertEqual(client.stdout.lines, [])
        client.type("5\n")  # a typed 5 shows its reply, whatever it is
        self.assertEqual(server.receive(), b"5")
        server.answer(b"Illegal message")
        self.finish(client)
        server.expect_silence(0.05)  # no longer a member: no 4
        self.assertEqual(client.stdout.lines, ["Illegal message"])
        self.assertEqual(len(client.stderr.lines), 1, client.stderr.lines)

    def test_poll_refused_after_a_lost_one_stops_polling_with_a_clear_message(self):
        """A lost poll, then one refused: two stderr lines saying what to do; exit 0."""
        server = self.scripted_server()
        client = self.local_client(server.port, "--poll-interval", "0.2", "--timeout", "0.3")
        client.type("1 Cy\n")
        self.assertEqual(server.receive(), b"1 Cy")
        server.answer(b"")
        self.assertEqual(server.receive(), b"5")  # lost
        self.assertEqual(server.receive(), b"5")
        server.answer(b"Illegal message")
        wait_for(lambda: len(client.stderr.lines) == 2)
        server.expect_silence(0.5)
        self.finish(client)  # a lost automatic poll is no request of the user's
        self.assertIn("no reply", client.stderr.lines[0])
        self.assertIn("no longer knows this client as a member", client.stderr.lines[1])
        self.assertIn("join again", client.stderr.lines[1])
        self.assertEqual(client.stdout.lines, [])

    def test_server_restart_stops_automatic_polling(self):
        """A restarted server that forgot the client ends its polling without stdout noise."""
        first = self.server("--log-level", "debug")
        port = first.port
        client = self.local_client(port, "--poll-interval", "0.2", "--timeout", "0.5")
        client.type("1 Cy\n")
        source = self.client_source(first)
        wait_for(lambda: b"5" in requests_from(first, source))
        first.stop()
        second = self.server("--port", str(port), "--log-level", "debug")
        wait_for(lambda: requests_from(second, source))
        stays(lambda: requests_from(second, source) == [b"5"], 1.0)
        self.assertEqual(client.stdout.lines, [])
        # At most one line for a poll lost while no server ran, and one to say
        # that polling stopped: never the same line twice.
        stderr = list(client.stderr.lines)
        self.assertIn(len(stderr), (1, 2), stderr)
        self.assertEqual(len(set(stderr)), len(stderr), stderr)
        client.type("5\n")
        wait_for(lambda: client.stdout.lines)
        self.finish(client)
        self.assertEqual(client.stdout.lines, ["Illegal message"])
        self.assertEqual(client.stderr.lines, stderr)


class LongLineTests(ClientTestCase):
    """
    Lines too long to be legal requests are refused before they are sent.
    """

    def test_overlong_lines_are_refused_and_later_lines_work(self):
        """Lines of 2002 and 100000 bytes, and an overlong last line, are never sent."""
        server = self.server("--log-level", "debug")
        alice = self.member(server.address(), "A")
        client = self.local_client(server.port, "--poll-interval", "0", "--timeout", "1")
        client.type("1 Cy\n")
        source = self.client_source(server)
        client.type("2 " + "a" * 2000 + "\n")
        client.type("2 " + "b" * 99998 + "\n")
        client.type("2 after\n")
        self.assertEqual(lines_until(alice, "Cy: after"), ["Cy has joined", "Cy: after"])
        self.assertEqual(len(client.stderr.lines), 2, client.stderr.lines)
        client.type("2 " + "c" * 5000)
        self.finish(client)
        self.assertEqual(len(client.stderr.lines), 3, client.stderr.lines)
        self.assertEqual(lines_until(alice, "Cy has left the group"), ["Cy has left the group"])
        self.assertEqual(requests_from(server, source), [b"1 Cy", b"2 after", b"4"])

    def test_longest_legal_line_is_sent(self):
        """A 2 with a text of the largest legal size reaches the other member whole."""
        server = self.server()
        alice = self.member(server.address(), "A")
        client = self.local_client(server.port, "--poll-interval", "0", "--timeout", "1")
        text = "x" * LONGEST_TEXT
        client.type(f"1 Cy\n2 {text}\r\n")
        self.finish(client)
        self.assertEqual(
            lines_until(alice, "Cy has left the group"),
            ["Cy has joined", f"Cy: {text}", "Cy has left the group"],
        )
        self.assertEqual(client.stderr.lines, [])


class AddressTests(ClientTestCase):
    """
    HOST may be an IPv6 literal or a name.
    """

    def test_ipv6_literal_host(self):
        """HOST ::1 talks to a server listening on ::1."""
        server = self.server(interface="::1")
        alice = self.member(server.address("::1"), "A")
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
        alice = self.member(server.address(), "A")
        client = self.client("localhost", str(server.port), "--timeout", "1")
        client.type("1 Cy\n")
        self.finish(client)
        self.assertEqual(client.stdout.lines, ["A"])
        self.assertEqual(
            lines_until(alice, "Cy has left the group"), ["Cy has joined", "Cy has left the group"]
        )


class ArgumentTests(ClientTestCase):
    """
    A wrong command line is a usage error, never a traceback.
    """

    def test_bad_arguments_exit_2_with_usage(self):
        """Missing, malformed and out-of-range arguments exit 2 with the usage text."""
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
        with tempfile.TemporaryDirectory() as cwd:
            processes = {}
            for case, argv in cases.items():
                processes[case] = process = subprocess.Popen(
                    CLIENT + argv,
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
                outcomes[case] = (process.returncode, out, b"usage:" in err, b"Traceback" in err)
        self.assertEqual(outcomes, {case: (2, b"", True, False) for case in cases})

    def test_unresolvable_host_is_one_line(self):
        """A host name that does not resolve exits non-zero with one stderr line."""
        client = self.client("nonexistent.invalid", "12345", stdin=subprocess.DEVNULL)
        code = client.wait()
        self.assertNotEqual(code, 0)
        self.assertEqual(len(client.stderr.lines), 1, client.stderr.lines)
        self.assertNotIn("Traceback", client.stderr.text())
        self.assertEqual(client.stdout.lines, [])

    def test_host_label_too_long_is_one_line(self):
        """A host whose label is over 63 characters exits 1 with one stderr line."""
        client = self.client("a" * 64 + ".com", "12345", stdin=subprocess.DEVNULL)
        self.assertEqual(client.wait(), 1)
        self.assertEqual(len(client.stderr.lines), 1, client.stderr.lines)
        self.assertIn("cannot resolve", client.stderr.text())
        self.assertEqual(client.stdout.lines, [])

    def test_raw_client_does_not_import_conch(self):
        """The raw client imports neither the chat console nor Twisted's conch."""
        script = (
            "import sys, udpchat.client; "
            "print(sorted(m for m in sys.modules if 'conch' in m or m == 'udpchat.console'))"
        )
        with tempfile.TemporaryDirectory() as cwd:
            process = subprocess.run(
                [sys.executable, "-c", script], cwd=cwd, capture_output=True, timeout=DEADLINE
            )
        self.assertEqual(process.stdout, b"[]\n", process.stderr)

    def test_invalid_name_is_a_usage_error(self):
        """--name with a name that no server accepts exits 2 with the usage text."""
        for name in ("a,b", "x" * 33, " padded", ""):
            with tempfile.TemporaryDirectory() as cwd:
                process = subprocess.run(
                    CLIENT + ["127.0.0.1", "12345", "--name", name],
                    cwd=cwd,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=DEADLINE,
                )
            self.assertEqual(process.returncode, 2, name)
            self.assertIn(b"not a valid name", process.stderr)
            self.assertNotIn(b"Traceback", process.stderr)


SERVER = ("127.0.0.1", 12345)


class ChatClientTests(SynchronousTestCase):
    """
    L{client_module.ChatClient} against a fake transport and a fake clock.
    """

    def setUp(self):
        self.clock = Clock()
        self.shown = []
        self.warned = []
        self.transport = FakeDatagramTransport()
        self.client = session_module.ChatClient(
            SERVER,
            self.clock,
            show=self.shown.append,
            warn=self.warned.append,
            poll_interval=1.0,
            timeout=2.0,
        )
        self.client.makeConnection(self.transport)

    def sent(self):
        """The datagrams written so far."""
        return [datagram for datagram, address in self.transport.written]

    def answer(self, reply):
        self.client.datagramReceived(reply, SERVER)

    def test_each_line_queued_when_finishing_gets_its_own_timeout(self):
        """Finishing, a request with no reply is counted and the next one is sent."""
        self.client.send(b"1 Cy")
        self.answer(b"")
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

    def test_late_reply_is_ignored(self):
        """A reply arriving after its timeout, with nothing outstanding, is dropped."""
        self.client.send(b"5")
        self.clock.advance(2.0)
        self.answer(b"late")
        self.assertEqual(self.shown, [])

    def test_polls_and_leave_are_the_wire_requests(self):
        """The automatic poll and leave are wire.FETCH and wire.LEAVE, encoded by wire."""
        self.client.send(wire.encode_request(wire.Join("Cy")))
        self.answer(b"")
        self.clock.advance(1.0)
        self.assertEqual(self.sent()[-1], wire.encode_request(wire.FETCH))
        self.answer(b"A: hi")
        self.assertEqual(self.shown, [b"A: hi"])
        self.answer(b"")  # the drain poll sent at once after a non-empty reply
        self.client.finish()
        self.assertEqual(self.sent()[-1], wire.encode_request(wire.LEAVE))

    def test_request_codes_are_not_spelled_in_the_client(self):
        """No bytes literal in client.py is a request code: those live in wire.py."""
        tree = ast.Module(body=[], type_ignores=[])
        for module in (client_module, session_module):
            with open(module.__file__, encoding="utf-8") as source:
                tree.body.extend(ast.parse(source.read()).body)
        literals = {
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, bytes)
        }
        self.assertEqual(literals & {b"1", b"2", b"3", b"4", b"5"}, set())

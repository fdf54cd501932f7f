"""
The real daemon on a hostile network: its limits through its own options,
its shutdown summary, and a flood it must ride out while honest members
chat.  Every test narrows the loopback exemption (C{--exempt none}), since
all traffic here comes from loopback.
"""

import random
import signal
import socket
import threading
import time

from tests.harness import DEADLINE, ProcessTestCase, rss_bytes, wait_for

ILLEGAL = b"Illegal message"
NOT_EXEMPT = ("--exempt", "none")


class LimitedServerCase(ProcessTestCase):
    """
    Servers whose limits apply to loopback too.
    """

    def server(self, *options, **kwargs):
        """A running server without the loopback exemption; see L{ProcessTestCase.server}."""
        return super().server(*NOT_EXEMPT, *options, **kwargs)


class DaemonLimitTests(LimitedServerCase):
    """
    Each limit, set on the command line, holds against real sockets.
    """

    def test_max_members(self):
        """With --max-members 2 the third registration is refused."""
        server = self.server("--max-members", "2")
        replies = [self.member(server, f"127.0.{i}.1").request(b"1 m%d" % (i,)) for i in range(3)]
        self.assertEqual(replies, [b"", b"m0", ILLEGAL])

    def test_max_members_per_prefix(self):
        """With --max-members-per-prefix 2 a third member from one /24 is refused; another /24 is not."""
        server = self.server("--max-members-per-prefix", "2")
        replies = [self.member(server, f"127.0.0.{i + 1}").request(b"1 m%d" % (i,)) for i in range(3)]
        replies.append(self.member(server, "127.0.1.1").request(b"1 other"))
        self.assertEqual(replies, [b"", b"m0", ILLEGAL, b"m1, m0"])

    def test_max_pending(self):
        """With --max-pending 2, an overflowed backlog starts with the notice."""
        server = self.server("--max-pending", "2")
        al, bo = self.member(server, "127.0.0.1"), self.member(server, "127.0.1.1")
        al.request(b"1 Al")
        bo.request(b"1 Bo")
        for i in range(5):
            self.assertEqual(bo.request(b"2 %d" % (i,)), b"")
        self.assertEqual(
            (al.request(b"5"), al.request(b"5")),
            (b"[4 lines dropped]\nBo: 3\nBo: 4", b""),  # "Bo has joined" too
        )

    def test_idle_timeout(self):
        """With --idle-timeout 1, a silent member is removed and the others see it leave."""
        server = self.server("--idle-timeout", "1")
        al, bo = self.member(server, "127.0.0.1"), self.member(server, "127.0.1.1")
        al.request(b"1 Al")
        bo.request(b"1 Bo")
        bo.request(b"5")
        # Bo keeps talking; Al says nothing and must go within a few seconds.
        wait_for(lambda: b"Al has left the group" in bo.request(b"5"))
        self.assertEqual(al.request(b"5"), ILLEGAL)
        wait_for(lambda: server.output.search(r"'Al' at 127\.0\.0\.1:\d+ removed after 1 seconds of silence"))

    def test_request_rate(self):
        """Beyond --request-burst, requests from one address get no reply until tokens return."""
        server = self.server("--request-rate", "1", "--request-burst", "3")
        member = self.member(server)
        replies = [member.request(b"5") for _ in range(3)]
        member.socket.sendto(b"5", server.address())
        member.expect_silence(0.3)
        self.assertEqual(replies, [ILLEGAL] * 3)
        # One token a second: the member is answered again.
        self.assertEqual(wait_for(lambda: self._answered(member, server), timeout=5), ILLEGAL)

    def _answered(self, member, server):
        """The reply to one poll from C{member}, or None if none comes within 0.3 s."""
        member.socket.settimeout(0.3)
        try:
            member.socket.sendto(b"5", server.address())
            return member.socket.recv(100)
        except socket.timeout:
            return None
        finally:
            member.socket.settimeout(DEADLINE)

    def test_reply_budget(self):
        """Replies to one /24 stop once its --reply-burst cannot pay for the largest reply."""
        server = self.server("--reply-rate", "1", "--reply-burst", "1348")
        members = [self.member(server, f"127.0.0.{i + 1}") for i in range(5)]
        # Each "Illegal message" costs 15 + 28 bytes: from 1348, three fit
        # before less than 1200 + 48 is left.
        for member in members[:3]:
            self.assertEqual(member.request(b"5"), ILLEGAL)
        members[3].socket.sendto(b"5", server.address())
        members[3].expect_silence(0.3)
        self.assertEqual(self.member(server, "127.0.1.1").request(b"5"), ILLEGAL)

    def test_junk_is_summarised_not_logged_per_datagram(self):
        """Junk from many sockets is summarised in one line, never logged one by one."""
        server = self.server()
        member = self.member(server)
        for i in range(50):
            self.assertEqual(member.request(b"junk %d" % (i,)), ILLEGAL)
        server.stop()
        self.assertEqual(
            [line for line in server.output.lines if "junk" in line or "illegal" in line],
            [line for line in server.output.lines if "50 illegal requests refused" in line],
        )

    def test_receive_buffer(self):
        """--receive-buffer is accepted and the server serves."""
        server = self.server("--receive-buffer", "1048576")
        self.assertEqual(self.member(server).request(b"1 Al"), b"")

    def test_bad_limit_is_one_line_usage_error(self):
        """A nonsensical combination is a usage error: non-zero exit, no traceback."""
        self.assertEqual(
            self.usage_error("--max-members", "5", "--max-members-per-prefix", "6"),
            "--max-members-per-prefix must be a whole number from 1 to 5 (--max-members), not '6'",
        )


class ShutdownSummaryTests(LimitedServerCase):
    """
    What SIGTERM logs of a room that lives in memory.
    """

    def test_sigterm_states_what_was_dropped(self):
        """SIGTERM logs one line with the members and stored lines dropped."""
        server = self.server()
        al, bo = self.member(server, "127.0.0.1"), self.member(server, "127.0.1.1")
        al.request(b"1 Al")
        bo.request(b"1 Bo")
        bo.request(b"2 unread")
        self.assertIn(server.stop(), (0, -signal.SIGTERM))
        self.assertTrue(
            server.output.search(r"udpchat stopped: 2 members and 2 stored lines dropped"),
            server.output.text(),
        )


class FloodTests(LimitedServerCase):
    """
    Garbage and forged-member datagrams from many sockets, at a bounded rate
    below the server's capacity, while two honest members chat.
    """

    FLOOD_SOCKETS = 60
    FLOOD_DATAGRAMS = 9000
    FLOOD_RATE = 3000  # datagrams per second, in all
    RSS_BOUND = 64 * 1024 * 1024  # measured: about 35 MiB

    def flood(self, server, stop):
        """Send junk to C{server} at C{FLOOD_RATE} until C{stop} is set or all is sent."""
        rng = random.Random(7)
        sockets = []
        for i in range(self.FLOOD_SOCKETS):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            # Four flooding addresses, each far over the request rate.
            sock.bind((f"127.{10 + i % 4}.0.1", 0))
            sockets.append(sock)
        kinds = [
            lambda: rng.randbytes(rng.randrange(0, 60)),
            lambda: b"1 f%d" % (rng.randrange(10**6),),
            lambda: b"2 spam",
            lambda: b"3 Al",
            lambda: b"5",
            lambda: b"4",
            lambda: b"2 " + b"x" * 2000,
            lambda: "1 \u202eAl".encode(),
        ]
        started = time.monotonic()
        try:
            for n in range(self.FLOOD_DATAGRAMS):
                if stop.is_set():
                    break
                rng.choice(sockets).sendto(rng.choice(kinds)(), server.address())
                ahead = n / self.FLOOD_RATE - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)  # pacing the flood, not waiting for an event
        finally:
            for sock in sockets:
                sock.close()

    def test_honest_members_chat_through_a_flood(self):
        """Every honest line arrives, in order, and the server's memory stays bounded."""
        server = self.server()
        al, bo = self.member(server, "127.0.0.2"), self.member(server, "127.0.1.2")
        self.assertEqual(al.request(b"1 Al"), b"")
        self.assertEqual(bo.request(b"1 Bo"), b"Al")
        stop = threading.Event()
        flooder = threading.Thread(target=self.flood, args=(server, stop))
        flooder.start()
        self.addCleanup(flooder.join)
        self.addCleanup(stop.set)
        sent, received = [], []
        for i in range(150):
            line = b"honest %d" % (i,)
            self.assertEqual(al.request(b"2 " + line), b"")
            sent.append(b"Al: " + line)
            reply = bo.request(b"5")
            received += [l for l in reply.split(b"\n") if l.startswith(b"Al: ")]
        flooder.join(60)
        for _ in range(20):
            reply = bo.request(b"5")
            received += [l for l in reply.split(b"\n") if l.startswith(b"Al: ")]
            if not reply:
                break
        rss = rss_bytes(server.process.pid)
        self.assertEqual(received, sent)
        self.assertLess(rss, self.RSS_BOUND)
        server.stop()
        self.assertNotIn("Traceback", server.output.text())
        self.assertTrue(server.output.search(r"datagrams dropped over the request rate"), server.output.text())

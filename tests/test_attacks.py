"""
The real server against what broke 1.0 (issue 11): forged datagrams that
start reply loops (finding 5), and a stall that expired every member
(finding 7).  The adapter's unit tests (tests/test_server.py) cover the
same behaviour on a fake clock; these check it end to end.
"""

import os
import re
import signal
import socket
import struct
import time

from twisted.trial.unittest import SkipTest

from tests.harness import ProcessTestCase, wait_for

SUMMARY = re.compile(r"in the last \d+ seconds: (.*)")


def raw_udp_socket():
    """
    A raw socket that sends UDP datagrams with any source port, or a skip
    saying why there is none: forging a source needs CAP_NET_RAW.
    """
    try:
        return socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
    except PermissionError:
        raise SkipTest(
            "needs root (CAP_NET_RAW) to forge a datagram's source port"
        ) from None


def forge(raw, source_port, destination_port, payload):
    """Send C{payload} on loopback as if from 127.0.0.1:C{source_port}."""
    # The kernel writes the IP header; a UDP checksum of 0 means none.
    header = struct.pack("!HHHH", source_port, destination_port, 8 + len(payload), 0)
    raw.sendto(header + payload, ("127.0.0.1", 0))


def summary(server):
    """Stop C{server}; return the summary line it logged on stopping."""
    server.stop()
    lines = [SUMMARY.search(line) for line in server.output.lines]
    return "; ".join(match.group(1) for match in lines if match)


class ReplyLoopTests(ProcessTestCase):
    """
    One forged datagram between two servers, or from a server to itself,
    ends within two datagrams, though loopback is exempt from every limit.
    """

    def setUp(self):
        self.raw = raw_udp_socket()
        self.addCleanup(self.raw.close)

    def quiet(self):
        # What is awaited is that nothing more happens: a loop on loopback
        # sends thousands of datagrams in this time.
        time.sleep(0.5)

    def test_two_servers(self):
        one, two = self.server(), self.server()
        for payload in (b"junk", b""):
            forge(self.raw, one.port, two.port, payload)
        self.quiet()
        self.assertEqual(
            (summary(one), summary(two)),
            (
                "2 datagrams not answered",
                "2 illegal requests refused",
            ),
        )

    def test_server_to_itself(self):
        server = self.server()
        forge(self.raw, server.port, server.port, b"junk")
        self.quiet()
        self.assertEqual(
            summary(server),
            "1 illegal request refused; 1 datagram not answered",
        )


class StallTests(ProcessTestCase):
    """
    A server stopped (SIGSTOP) for longer than the idle timeout, while its
    members keep sending, keeps them all: their datagrams waited in the
    socket, and the time it did not run does not count.
    """

    def test_sigstop(self):
        server = self.server("--idle-timeout", "2")
        members = [self.member(server, name=f"m{i}") for i in range(6)]
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            stopped = time.monotonic()
            # Each member sends while the server is stopped, twice the
            # idle timeout after its last reply.
            wait_for(lambda: time.monotonic() - stopped > 4, timeout=10)
            for member in members:
                member.socket.sendto(b"5", member.server_address)
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        replies = [member.socket.recv(70000) for member in members]
        self.assertNotIn(b"Illegal message", replies)
        self.assertEqual([member.request(b"5") for member in members], [b""] * 6)

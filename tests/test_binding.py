"""
Tests for L{udpchat.binding.bind_udp}'s C{reuse_port}: several sockets (the
daemons of one room) on one UDP port, and the kernel spreading clients over
them.

Every socket is on loopback, on a port the first socket was given; the
spreading is waited for with a deadline, never a sleep.
"""

import errno
import select
import socket
import sys
import textwrap
import time

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.harness import DEADLINE, as_nobody, run_isolated
from udpchat.binding import bind_udp

CLIENTS = 32  # all on one server by chance: 2 in 2**32


def has_ipv6_loopback():
    """Whether this host can bind ::1."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def require_linux_spreading():
    """Skip unless the kernel spreads datagrams over sockets sharing a port."""
    if not sys.platform.startswith("linux"):
        raise SkipTest("only Linux spreads datagrams over sockets sharing a port")


class ReusePortTests(SynchronousTestCase):
    """
    C{bind_udp(..., reuse_port=True)}: sockets that share one port.
    """

    def bind(self, interface, port=0, reuse_port=True):
        """Bind with L{bind_udp}; the socket closes after the test."""
        sock = bind_udp(interface, port, reuse_port=reuse_port)
        self.addCleanup(sock.close)
        return sock

    def share(self, interface, count=2):
        """C{count} sockets sharing one port of C{interface}."""
        first = self.bind(interface)
        port = first.getsockname()[1]
        return [first, *(self.bind(interface, port) for _ in range(count - 1))]

    def clients(self, family, count=CLIENTS):
        """C{count} client sockets, each on a port of its own; closed after the test."""
        clients = []
        for _ in range(count):
            client = socket.socket(family, socket.SOCK_DGRAM)
            self.addCleanup(client.close)
            clients.append(client)
        return clients

    def received(self, servers, expected):
        """
        Read C{servers} until they have C{expected} datagrams between them
        or the deadline passes; return the datagrams each got.
        """
        got = {server: [] for server in servers}
        deadline = time.monotonic() + DEADLINE
        while sum(map(len, got.values())) < expected:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            readable, _, _ = select.select(servers, [], [], left)
            for server in readable:
                got[server].append(server.recvfrom(64)[0])
        return [got[server] for server in servers]

    def assert_spread(self, servers, clients, address):
        """Each client sends one datagram to C{address}: every server gets some, none twice."""
        for number, client in enumerate(clients):
            client.sendto(b"%d" % number, address)
        got = self.received(servers, len(clients))
        self.assertEqual(
            sorted(int(datagram) for datagrams in got for datagram in datagrams),
            list(range(len(clients))),
        )
        for datagrams in got:
            self.assertTrue(datagrams, f"a server got none of {len(clients)}: {got}")

    def test_two_sockets_share_a_port(self):
        """Two sockets bound with reuse_port on one loopback port both bind."""
        first, second = self.share("127.0.0.1")
        self.assertEqual(first.getsockname(), second.getsockname())
        self.assertFalse(second.getblocking())

    def test_without_reuse_port_the_second_bind_fails(self):
        """Without reuse_port on both sockets, the second bind fails with EADDRINUSE."""
        for first, second in ((False, False), (True, False), (False, True)):
            port = self.bind("127.0.0.1", reuse_port=first).getsockname()[1]
            e = self.assertRaises(
                OSError, bind_udp, "127.0.0.1", port, reuse_port=second
            )
            self.assertEqual(e.errno, errno.EADDRINUSE, (first, second))

    def test_clients_are_spread_over_the_sockets(self):
        """Datagrams from many client sockets reach both sockets sharing the port."""
        require_linux_spreading()
        servers = self.share("127.0.0.1")
        self.assert_spread(servers, self.clients(socket.AF_INET), servers[0].getsockname())

    def test_every_interface_shares_the_dual_stack_socket(self):
        """Without an interface, dual-stack sockets share the port, and IPv4 clients reach both."""
        require_linux_spreading()
        servers = self.share(None)
        self.assertEqual(servers[0].getsockname(), servers[1].getsockname())
        port = servers[0].getsockname()[1]
        self.assert_spread(servers, self.clients(socket.AF_INET), ("127.0.0.1", port))

    def test_ipv6_loopback(self):
        """Two sockets share a port of ::1, and IPv6 clients reach both."""
        if not has_ipv6_loopback():
            raise SkipTest("this host has no IPv6 loopback (::1)")
        require_linux_spreading()
        servers = self.share("::1")
        self.assertEqual(servers[0].family, socket.AF_INET6)
        self.assert_spread(servers, self.clients(socket.AF_INET6), servers[0].getsockname()[:2])

    def test_another_user_cannot_share_the_port(self):
        """A socket made by another user cannot join the port, even with reuse_port."""
        port = self.bind("127.0.0.1").getsockname()[1]
        child = textwrap.dedent(f"""
            import errno
            from udpchat.binding import bind_udp
            try:
                bind_udp("127.0.0.1", {port}, reuse_port=True)
            except OSError as e:
                raise SystemExit(errno.errorcode[e.errno])
            raise SystemExit("bound")
        """)
        result = run_isolated(as_nobody([sys.executable, "-c", child]))
        self.assertEqual(result.stderr.decode().strip(), "EADDRINUSE")

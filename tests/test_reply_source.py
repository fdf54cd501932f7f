"""
Replies come from the address a request was sent to (issue 11, finding 4).

On a wildcard socket the kernel would pick a reply's source address by its
routing table: a client that sent to 127.0.0.2 heard from 127.0.0.1, and a
connected client (the bundled one) never heard at all.  These tests send
to addresses other than the one routing prefers, on a default server.
"""

import socket

from tests.harness import Client, ProcessTestCase, wait_for


def has_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


class ReplySourceTests(ProcessTestCase):
    def default_server(self, *options):
        """A server on every interface, as with no --interface."""
        return self.server(*options, interface=None)

    def test_reply_from_a_second_loopback_address(self):
        server = self.default_server()
        # Member.request asserts the reply came from the address it used.
        member = self.member(server.address("127.0.0.2"), host="127.0.0.1")
        self.assertEqual(member.request(b"1 Al"), b"")
        self.assertEqual(member.request(b"5"), b"")

    def test_reply_to_a_connected_socket(self):
        server = self.default_server()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            # connect(): the kernel drops datagrams from any other source.
            sock.connect(("127.0.0.2", server.port))
            sock.send(b"1 Al")
            self.assertEqual(sock.recv(100), b"")
            sock.send(b"junk")
            self.assertEqual(sock.recv(100), b"Illegal message")

    def test_reply_from_ipv6_loopback(self):
        if not has_ipv6_loopback():
            self.skipTest("this host has no IPv6 loopback (::1)")
        server = self.default_server()
        member = self.member(server.address("::1"))
        self.assertEqual(member.request(b"1 Al"), b"")
        # And IPv4 on the same dual-stack socket, from its second address.
        other = self.member(server.address("127.0.0.3"))
        self.assertEqual(other.request(b"1 Bo"), b"Al")

    def test_ipv4_wildcard(self):
        server = self.server(interface="0.0.0.0")
        member = self.member(server.address("127.0.0.2"))
        self.assertEqual(member.request(b"1 Al"), b"")

    def test_bundled_client_leaves_no_ghost(self):
        """
        The bundled client, pointed at 127.0.0.2, joins, speaks and leaves:
        it hears each reply, so no member is left behind.
        """
        server = self.default_server()
        listener = self.member(server, name="Bo")
        client = Client("127.0.0.2", str(server.port), "--timeout", "3")
        self.addCleanup(client.kill)
        client.type("1 Al\n2 hello\n")
        wait_for(lambda: b"Al: hello" in listener.request(b"5"))
        client.end_input()
        self.assertEqual(client.wait(), 0, client.stderr.text())
        # Al left when its input ended: Bo is alone.
        newcomer = self.member(server, name=None)
        self.assertEqual(newcomer.request(b"1 Cy"), b"Bo")


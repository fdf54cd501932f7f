"""
The chat mode's client (L{console.ChatSession} on L{reliable.SessionClient})
against the real room (L{udpchat.room.Room}, called directly) through a
simulated network that loses, duplicates, delays and so reorders datagrams
each way, and whose NAT may give a client a new source port: every line is
shown exactly once to every other member, in order per sender, and nobody
sees a join or a leave that did not happen.

Everything runs on one L{Clock}, the network's randomness seeded by
hypothesis, with the sizes and rates, so that a failure shrinks to a
small, repeatable case.  The
clients here never give up (their deadline is longer than any case needs):
giving up is a behaviour of its own, tested with the client alone
(tests/test_session_client.py).
"""

import random as random_module

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.test_console import FakeScreen
from udpchat import console, reliable
from udpchat.room import Room

SERVER = ("192.0.2.1", 12345)
NEVER = 10_000.0  # a deadline no case reaches: the clients never give up
LIMIT = 3_000.0  # simulated seconds within which every case must be over


class Network:
    """
    Datagrams between clients and a L{Room}, on a L{Clock}: each one, each
    way, is lost with probability C{loss}; otherwise delivered once, or
    twice with probability C{duplicate}, each copy after its own delay
    drawn from C{delays} (so copies arrive in any order).  A reply goes to
    the address its request came from: after a L{rebind}, replies to the
    old one are lost, as a NAT that forgot the mapping loses them.
    """

    def __init__(self, room, clock, random, loss, duplicate, delays):
        self.room = room
        self.clock = clock
        self.random = random
        self.loss = loss
        self.duplicate = duplicate
        self.delays = delays
        self.clients = {}  # address -> the client's protocol

    def attach(self, protocol, address):
        """Give C{protocol} a transport on this network, from C{address}."""
        transport = _Transport(self, address)
        self.clients[address] = protocol
        protocol.makeConnection(transport)
        return transport

    def rebind(self, transport, address):
        """The NAT gives the client behind C{transport} a new C{address}."""
        protocol = self.clients.pop(transport.address)
        transport.address = address
        self.clients[address] = protocol

    def _carry(self, deliver, *arguments):
        if self.random.random() < self.loss:
            return
        copies = 2 if self.random.random() < self.duplicate else 1
        for _ in range(copies):
            self.clock.callLater(self.random.uniform(*self.delays), deliver, *arguments)

    def to_server(self, source, datagram):
        self._carry(self._at_server, source, datagram)

    def _at_server(self, source, datagram):
        reply = self.room.receive(source, datagram, self.clock.seconds())
        if reply is not None:
            self._carry(self._at_client, source, reply)

    def _at_client(self, address, datagram):
        protocol = self.clients.get(address)
        if protocol is not None:
            protocol.datagramReceived(datagram, SERVER)


class _Transport:
    """A client's end of the L{Network}."""

    def __init__(self, network, address):
        self.network = network
        self.address = address

    def write(self, datagram, address):
        assert address == SERVER, address
        self.network.to_server(self.address, datagram)


class Member:
    """One user: a chat session without a terminal, its client, its screen."""

    def __init__(self, network, index):
        self.name = f"C{index}"
        self.screen = FakeScreen()
        self.complaints = []
        self.session = console.ChatSession(
            self.name, terminal=False, environ={}, complain=self.complaints.append
        )
        self.client = reliable.SessionClient(
            SERVER,
            network.clock,
            show=self.session.show,
            warn=self.session.warn,
            forgotten=self.session.forgotten,
            lost=self.session.lost,
            gave_up=self.session.gave_up,
            poll_interval=1.0,
            timeout=NEVER,
            new_nonce=lambda: network.random.randbytes(16).hex().encode(),
        )
        self.transport = network.attach(self.client, ("198.51.100.7", 40000 + index))
        self.session.attach(self.client, self.screen)

    def lines_from(self, name):
        """The chat lines shown that C{name} said."""
        prefix = f"{name}: "
        return [
            text
            for text, kind in self.screen.said
            if kind == console.PLAIN and text.startswith(prefix)
        ]

    def events(self):
        """The joins and leaves shown."""
        return [
            text
            for text, kind in self.screen.said
            if kind == console.EVENT and text.endswith(("has joined", "has left the group"))
        ]

    def problems(self):
        return [text for text, kind in self.screen.said if kind == console.PROBLEM]

    def say(self, lines):
        for line in lines:
            self.session.line_received(line.split(": ", 1)[1].encode())


def run_until(clock, done, limit=LIMIT):
    """Advance C{clock} from one timed call to the next until C{done()}."""
    while not done():
        calls = clock.getDelayedCalls()
        assert calls, "nothing left to happen"
        assert clock.seconds() < limit, f"not done after {limit} simulated seconds"
        clock.advance(max(0.0, min(call.getTime() for call in calls) - clock.seconds()))


def text(sender, index, padding):
    """The line C{sender} says C{index}-th: long enough, at times, to need several polls."""
    return f"line {index} of {sender} " + "x" * padding


class LossyNetworkTests(SynchronousTestCase):
    """
    Exactly-once delivery and roaming, through losses, duplicates and
    reordering.
    """

    @settings(max_examples=200, deadline=None)
    @given(
        seed=st.integers(0, 2**32),
        members=st.integers(2, 4),
        lines=st.integers(1, 6),
        padding=st.sampled_from([0, 200, 900]),
        loss=st.floats(0, 0.3),
        duplicate=st.floats(0, 0.3),
        slowest=st.floats(0.001, 0.5),
        roaming=st.one_of(st.none(), st.tuples(st.integers(0, 3), st.floats(0, 5))),
        reply_bytes=st.sampled_from([1200, 2400]),
    )
    def test_every_line_shown_once_in_order_and_no_false_join_or_leave(
        self, seed, members, lines, padding, loss, duplicate, slowest, roaming, reply_bytes
    ):
        """
        Each member sees each line of every other exactly once, in the order
        said; joins only of those who joined after it, each once; no leave
        until the end, and no member left at the end, even when one member
        roams to a new port mid-session.
        """
        clock = Clock()
        random = random_module.Random(seed)
        room = Room(max_reply_bytes=reply_bytes, new_token=lambda: random.randbytes(16).hex().encode())
        network = Network(room, clock, random, loss, duplicate, (0.001, slowest))
        everyone = []
        for index in range(members):
            everyone.append(Member(network, index))
            # Each registered before the next comes: the join order is known.
            run_until(clock, lambda: everyone[-1].client.registered)
        roamer = None
        if roaming is not None:
            roamer = everyone[roaming[0] % members]
            clock.callLater(
                roaming[1], network.rebind, roamer.transport, ("203.0.113.9", 50000)
            )
        said = {
            member.name: [f"{member.name}: {text(member.name, i, padding)}" for i in range(lines)]
            for member in everyone
        }
        for member in everyone:
            member.say(said[member.name])

        def all_arrived():
            return all(
                len(member.lines_from(other.name)) >= len(said[other.name])
                for member in everyone
                for other in everyone
            )

        run_until(clock, all_arrived)
        if roamer is not None:
            # Lines after the move too, each way.
            run_until(clock, lambda: roamer.transport.address[0] == "203.0.113.9")
            for member in everyone:
                after = [f"{member.name}: after the move"]
                said[member.name] += after
                member.say(after)
            run_until(clock, all_arrived)
        # Some polls more, so that a line shown twice would show.
        clock.advance(3)
        for index, member in enumerate(everyone):
            for other in everyone:
                # A member's own lines are shown once acknowledged.
                self.assertEqual(member.lines_from(other.name), said[other.name])
            self.assertEqual(
                member.events(),
                [f"{other.name} has joined" for other in everyone[index + 1 :]],
            )
            self.assertEqual((member.problems(), member.complaints), ([], []))
        for member in everyone:
            member.session.input_ended()
        run_until(clock, lambda: all(member.session.closed.called for member in everyone))
        self.assertEqual(
            [self.successResultOf(member.session.closed) for member in everyone],
            [0] * members,
        )
        self.assertEqual(room.members(), [])

"""
Tests for L{udpchat.server}: the datagram adapter around a room, its log
events, and the service that serves it on a socket bound beforehand.
"""

import socket

from twisted.internet import reactor
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import MessageLengthError
from twisted.internet.task import Clock
from twisted.internet.testing import FakeDatagramTransport
from twisted.internet.threads import deferToThread
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase, TestCase

from udpchat.binding import bind_udp
from udpchat import limits
from udpchat.room import Room
from udpchat.server import (
    ChatServerProtocol,
    ChatService,
    canonical_address,
    format_address,
)
from udpchat.wire import ILLEGAL

from tests.model import ModelRoom

AL = ("127.0.0.1", 4000)
BO = ("127.0.0.1", 4001)
MAPPED_AL = ("::ffff:127.0.0.1", 4000)

PROTOCOL_NAMESPACE = "udpchat.server.ChatServerProtocol"
SERVICE_NAMESPACE = "udpchat.server.ChatService"


def fields(events, *keys):
    """The given keys of each event, as dicts (missing keys are None)."""
    return [{key: event.get(key) for key in keys} for event in events]


def at_level(events, level):
    """The events logged at C{level}."""
    return [event for event in events if event.get("log_level") == level]


class AddressTests(SynchronousTestCase):
    """
    Tests for L{canonical_address} and L{format_address}.
    """

    def test_ipv4_mapped_address_becomes_ipv4(self):
        """An IPv4-mapped IPv6 host is written as the IPv4 address."""
        self.assertEqual(
            canonical_address(("::ffff:192.0.2.7", 5)), ("192.0.2.7", 5)
        )

    def test_ipv4_mapped_address_with_flow_and_scope_becomes_ipv4_pair(self):
        """A 4-tuple IPv4-mapped address becomes an IPv4 (host, port) pair."""
        self.assertEqual(
            canonical_address(("::ffff:192.0.2.7", 5, 0, 0)), ("192.0.2.7", 5)
        )

    def test_ipv4_address_is_unchanged(self):
        """An IPv4 address is returned as it is."""
        self.assertEqual(canonical_address(("192.0.2.7", 5)), ("192.0.2.7", 5))

    def test_ipv6_address_is_unchanged(self):
        """A plain IPv6 address is returned as it is."""
        self.assertEqual(canonical_address(("::1", 5)), ("::1", 5))
        self.assertEqual(
            canonical_address(("2001:db8::ffff:1", 5)), ("2001:db8::ffff:1", 5)
        )

    def test_ipv4_translated_address_is_unchanged(self):
        """An IPv4-translated host, as sockets write it, is not IPv4-mapped."""
        self.assertEqual(
            canonical_address(("::ffff:0:c000:207", 5)), ("::ffff:0:c000:207", 5)
        )

    def test_format_ipv4(self):
        """An IPv4 address is formatted as host:port."""
        self.assertEqual(format_address(("1.2.3.4", 5)), "1.2.3.4:5")

    def test_format_ipv6_in_brackets(self):
        """An IPv6 address is formatted as [host]:port."""
        self.assertEqual(format_address(("::1", 5)), "[::1]:5")

    def test_format_ignores_flow_and_scope(self):
        """A 4-tuple IPv6 address is formatted from its host and port only."""
        self.assertEqual(format_address(("::1", 5, 0, 0)), "[::1]:5")


class ProtocolTestMixin:
    """
    Build a L{ChatServerProtocol} on a fake transport and a fake clock.
    """

    def connect(self, log_level=None):
        """
        Return a connected protocol; its transport and clock are
        C{self.transport} and C{self.clock}.
        """
        self.clock = Clock()
        self.transport = FakeDatagramTransport()
        # No idle timeout, so that the only timer is the summary's; the
        # idle sweep has tests of its own.
        room = Room(idle_timeout=0)
        if log_level is None:
            proto = ChatServerProtocol(room, self.clock)
        else:
            proto = ChatServerProtocol(room, self.clock, log_level=log_level)
        proto.makeConnection(self.transport)
        return proto


class ChatServerProtocolTests(ProtocolTestMixin, SynchronousTestCase):
    """
    Tests for the replies of L{ChatServerProtocol}.
    """

    def setUp(self):
        self.proto = self.connect()

    def test_join_is_answered_to_source(self):
        """A join from an empty room gets an empty reply at its source."""
        self.proto.datagramReceived(b"1 Al", AL)
        self.assertEqual(self.transport.written, [(b"", AL)])

    def test_replies_are_the_rooms(self):
        """Each datagram gets the room's reply, sent to its own source."""
        proto = self.proto
        proto.datagramReceived(b"1 Al", AL)
        proto.datagramReceived(b"1 Bo", BO)
        proto.datagramReceived(b"2 hi", AL)
        proto.datagramReceived(b"5", BO)
        self.assertEqual(
            self.transport.written,
            [(b"", AL), (b"Al", BO), (b"", AL), (b"Al: hi", BO)],
        )

    def test_illegal_request_gets_illegal_message(self):
        """A request the room refuses gets C{Illegal message} and changes nothing."""
        self.proto.datagramReceived(b"9 x", AL)
        self.assertEqual(self.transport.written, [(ILLEGAL, AL)])
        self.assertEqual(self.proto.room.members(), [])

    def test_ipv4_mapped_source_is_kept_as_ipv4(self):
        """The room knows an IPv4-mapped source by its IPv4 address."""
        self.proto.datagramReceived(b"1 Al", MAPPED_AL)
        self.assertEqual(self.proto.room.members(), [(AL, "Al")])

    def test_reply_to_ipv4_mapped_source_goes_to_raw_address(self):
        """The reply to an IPv4-mapped source goes to the address as received."""
        self.proto.datagramReceived(b"1 Al", MAPPED_AL)
        self.assertEqual(self.transport.written, [(b"", MAPPED_AL)])

    def test_mapped_and_plain_ipv4_source_are_one_member(self):
        """An IPv4 peer is one member whether seen mapped or plain."""
        proto = self.proto
        proto.datagramReceived(b"1 Al", MAPPED_AL)
        proto.datagramReceived(b"1 Bo", AL)
        proto.datagramReceived(b"5", AL)
        self.assertEqual(
            self.transport.written, [(b"", MAPPED_AL), (ILLEGAL, AL), (b"", AL)]
        )
        self.assertEqual(proto.room.members(), [(AL, "Al")])

    def test_ipv6_source_is_kept_as_is(self):
        """The room knows a plain IPv6 source by its own address."""
        self.proto.datagramReceived(b"1 Al", ("::1", 4000))
        self.assertEqual(self.proto.room.members(), [(("::1", 4000), "Al")])
        self.assertEqual(self.transport.written, [(b"", ("::1", 4000))])

    def test_oversize_datagram_is_illegal(self):
        """A datagram of 1031 bytes gets C{Illegal message} and queues nothing."""
        proto = self.proto
        proto.datagramReceived(b"1 Al", AL)
        proto.datagramReceived(b"1 Bo", BO)
        datagram = b"2 " + b"a" * 1029
        self.assertEqual(len(datagram), 1031)
        proto.datagramReceived(datagram, AL)
        self.assertEqual(
            self.transport.written, [(b"", AL), (b"Al", BO), (ILLEGAL, AL)]
        )
        self.assertEqual(proto.room.pending(BO), [])

    def test_legal_request_with_trailing_byte_is_illegal(self):
        """The largest legal datagram plus one byte is refused, not cut to size."""
        proto = self.proto
        proto.datagramReceived(b"1 Al", AL)
        proto.datagramReceived(b"1 Bo", BO)
        proto.datagramReceived(b"2 " + b"a" * 1024 + b"\r\nx", AL)
        self.assertEqual(
            self.transport.written, [(b"", AL), (b"Al", BO), (ILLEGAL, AL)]
        )
        self.assertEqual(proto.room.pending(BO), [])

    def test_much_larger_datagram_is_illegal(self):
        """A datagram far over the limit gets C{Illegal message}."""
        self.proto.datagramReceived(b"1 " + b"A" * 8000, AL)
        self.assertEqual(self.transport.written, [(ILLEGAL, AL)])

    def test_largest_legal_datagram_is_accepted(self):
        """A 1024-byte chat text with its CRLF (1028 bytes) is accepted and queued."""
        proto = self.proto
        proto.datagramReceived(b"1 Al", AL)
        proto.datagramReceived(b"1 Bo", BO)
        datagram = b"2 " + b"a" * 1024 + b"\r\n"
        self.assertEqual(len(datagram), 1028)
        proto.datagramReceived(datagram, AL)
        self.assertEqual(
            self.transport.written, [(b"", AL), (b"Al", BO), (b"", AL)]
        )
        self.assertEqual(proto.room.pending(BO), [b"Al: " + b"a" * 1024])

    def test_changes_are_cleared_once_handled(self):
        """The room's list of changes is empty after each datagram."""
        proto = self.proto
        proto.datagramReceived(b"1 Al", AL)
        self.assertEqual(proto.room.changes, [])
        proto.datagramReceived(b"3 Cy", AL)
        self.assertEqual(proto.room.changes, [])
        proto.datagramReceived(b"4", AL)
        self.assertEqual(proto.room.changes, [])


class ChatServerProtocolLoggingTests(ProtocolTestMixin, SynchronousTestCase):
    """
    Tests for the log events of L{ChatServerProtocol}.
    """

    keys = ("log_level", "log_format", "log_namespace", "log_source")

    def test_start_and_stop_log_nothing(self):
        """The protocol is not noisy: starting and stopping log no event."""
        with capturedLogs() as events:
            proto = self.connect()
            proto.doStop()
        self.assertEqual(events, [])

    def test_join_logs_one_info_event(self):
        """A join logs one info event with the name and the formatted source."""
        proto = self.connect()
        with capturedLogs() as events:
            proto.datagramReceived(b"1 Al", AL)
        self.assertEqual(
            fields(events, *self.keys, "name", "source"),
            [
                {
                    "log_level": LogLevel.info,
                    "log_format": "{name!r} joined from {source}",
                    "log_namespace": PROTOCOL_NAMESPACE,
                    "log_source": proto,
                    "name": "Al",
                    "source": "127.0.0.1:4000",
                }
            ],
        )

    def test_rename_logs_one_info_event(self):
        """A rename logs one info event with both names and the source."""
        proto = self.connect()
        proto.datagramReceived(b"1 Al", AL)
        with capturedLogs() as events:
            proto.datagramReceived(b"3 Cy", AL)
        self.assertEqual(
            fields(events, *self.keys, "old", "new", "source"),
            [
                {
                    "log_level": LogLevel.info,
                    "log_format": "{old!r} at {source} renamed to {new!r}",
                    "log_namespace": PROTOCOL_NAMESPACE,
                    "log_source": proto,
                    "old": "Al",
                    "new": "Cy",
                    "source": "127.0.0.1:4000",
                }
            ],
        )

    def test_leave_logs_one_info_event(self):
        """A leave logs one info event with the name and the source."""
        proto = self.connect()
        proto.datagramReceived(b"1 Al", AL)
        with capturedLogs() as events:
            proto.datagramReceived(b"4", AL)
        self.assertEqual(
            fields(events, *self.keys, "name", "source"),
            [
                {
                    "log_level": LogLevel.info,
                    "log_format": "{name!r} at {source} left",
                    "log_namespace": PROTOCOL_NAMESPACE,
                    "log_source": proto,
                    "name": "Al",
                    "source": "127.0.0.1:4000",
                }
            ],
        )

    def test_mapped_source_is_logged_as_ipv4(self):
        """An IPv4-mapped source is logged as its IPv4 address."""
        proto = self.connect()
        with capturedLogs() as events:
            proto.datagramReceived(b"1 Al", MAPPED_AL)
        self.assertEqual(fields(events, "source"), [{"source": "127.0.0.1:4000"}])

    def test_ipv6_source_is_logged_in_brackets(self):
        """An IPv6 source is logged as [host]:port."""
        proto = self.connect()
        with capturedLogs() as events:
            proto.datagramReceived(b"1 Al", ("::1", 5))
        self.assertEqual(fields(events, "source"), [{"source": "[::1]:5"}])

    def test_chat_line_and_poll_log_nothing_at_info(self):
        """At the default level, chat lines and polls log no event."""
        proto = self.connect()
        proto.datagramReceived(b"1 Al", AL)
        proto.datagramReceived(b"1 Bo", BO)
        with capturedLogs() as events:
            proto.datagramReceived(b"2 hello", AL)
            proto.datagramReceived(b"5", BO)
            proto.datagramReceived(b"5", AL)
        self.assertEqual(events, [])
        self.assertEqual(
            self.transport.written[2:],
            [(b"", AL), (b"Al: hello", BO), (b"Bo has joined", AL)],
        )

    def test_chat_text_never_logged_at_info(self):
        """At the default level, no event holds any chat text."""
        proto = self.connect()
        with capturedLogs() as events:
            proto.datagramReceived(b"1 Al", AL)
            proto.datagramReceived(b"1 Bo", BO)
            proto.datagramReceived(b"2 sekrit words", AL)
            proto.datagramReceived(b"2 " + b"sekrit" * 200, AL)
            proto.datagramReceived(b"5", BO)
            proto.datagramReceived(b"3 Cy", AL)
            proto.datagramReceived(b"4", AL)
            self.clock.advance(60)
            proto.doStop()
        # Two joins, a rename, a leave, and the summary of the oversize line.
        self.assertEqual(len(events), 5)
        for event in events:
            for value in event.values():
                self.assertNotIn("sekrit", repr(value))
            self.assertNotIn("sekrit", formatEvent(event))

    def test_debug_logs_one_debug_event_per_datagram(self):
        """At debug, every datagram, legal or not, logs one debug event."""
        proto = self.connect(log_level=LogLevel.debug)
        oversize = b"2 " + b"a" * 1029
        with capturedLogs() as events:
            proto.datagramReceived(b"1 Al", AL)
            proto.datagramReceived(b"2 hi", MAPPED_AL)
            proto.datagramReceived(b"5", AL)
            proto.datagramReceived(b"junk", ("::1", 5))
            proto.datagramReceived(oversize, AL)
        debug = at_level(events, LogLevel.debug)
        self.assertEqual(
            {event["log_namespace"] for event in debug}, {PROTOCOL_NAMESPACE}
        )
        self.assertEqual(
            fields(debug, "source", "datagram"),
            [
                {"source": "127.0.0.1:4000", "datagram": b"1 Al"},
                {"source": "127.0.0.1:4000", "datagram": b"2 hi"},
                {"source": "127.0.0.1:4000", "datagram": b"5"},
                {"source": "[::1]:5", "datagram": b"junk"},
                {"source": "127.0.0.1:4000", "datagram": oversize},
            ],
        )

    def test_debug_still_logs_joins_at_info(self):
        """At debug, a join logs its info event besides the debug one."""
        proto = self.connect(log_level=LogLevel.debug)
        with capturedLogs() as events:
            proto.datagramReceived(b"1 Al", AL)
        self.assertEqual(
            fields(events, "log_level", "name"),
            [
                {"log_level": LogLevel.debug, "name": None},
                {"log_level": LogLevel.info, "name": "Al"},
            ],
        )

    def test_warn_logs_no_membership_change(self):
        """At warn, joins, renames and leaves log no event."""
        proto = self.connect(log_level=LogLevel.warn)
        with capturedLogs() as events:
            proto.datagramReceived(b"1 Al", AL)
            proto.datagramReceived(b"3 Cy", AL)
            proto.datagramReceived(b"4", AL)
        self.assertEqual(events, [])
        self.assertEqual(self.transport.written, [(b"", AL)] * 3)

    def test_warn_logs_no_illegal_summary(self):
        """At warn, the illegal-request summary is not logged."""
        proto = self.connect(log_level=LogLevel.warn)
        with capturedLogs() as events:
            proto.datagramReceived(b"junk", AL)
            self.clock.advance(60)
            proto.datagramReceived(b"junk", AL)
            proto.doStop()
        self.assertEqual(events, [])


class IllegalRequestSummaryTests(ProtocolTestMixin, SynchronousTestCase):
    """
    Tests for the periodic summary of illegal requests.
    """

    keys = ("log_level", "log_namespace", "illegal", "seconds")

    def summary(self, count, seconds):
        """The expected fields of one summary event."""
        return {
            "log_level": LogLevel.info,
            "log_namespace": PROTOCOL_NAMESPACE,
            "illegal": count,
            "seconds": seconds,
        }

    def test_burst_is_logged_once_after_interval(self):
        """1000 illegal requests log nothing at once and one event 60s later."""
        proto = self.connect()
        with capturedLogs() as events:
            for port in range(1000):
                proto.datagramReceived(b"junk", ("127.0.0.1", 10000 + port))
            self.assertEqual(events, [])
            self.clock.advance(59)
            self.assertEqual(events, [])
            self.clock.advance(1)
        self.assertEqual(fields(events, *self.keys), [self.summary(1000, 60)])
        self.assertEqual(
            self.transport.written,
            [(ILLEGAL, ("127.0.0.1", 10000 + port)) for port in range(1000)],
        )

    def test_one_delayed_call_per_interval(self):
        """However many illegal requests arrive, one summary is scheduled."""
        proto = self.connect()
        for _ in range(100):
            proto.datagramReceived(b"junk", AL)
        self.assertEqual(
            [call.getTime() for call in self.clock.getDelayedCalls()], [60]
        )

    def test_legal_requests_are_not_counted(self):
        """Only illegal requests are counted in the summary."""
        proto = self.connect()
        proto.datagramReceived(b"1 Al", AL)
        with capturedLogs() as events:
            proto.datagramReceived(b"junk", AL)
            proto.datagramReceived(b"2 hi", AL)
            proto.datagramReceived(b"1 Bo", AL)  # already a member: illegal
            proto.datagramReceived(b"5", AL)
            self.clock.advance(60)
        self.assertEqual(fields(events, *self.keys), [self.summary(2, 60)])

    def test_no_summary_without_illegal_requests(self):
        """Without illegal requests nothing is scheduled or logged."""
        proto = self.connect()
        proto.datagramReceived(b"1 Al", AL)
        with capturedLogs() as events:
            proto.datagramReceived(b"2 hi", AL)
            proto.datagramReceived(b"5", AL)
            self.clock.advance(600)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(events, [])

    def test_illegal_request_after_summary_starts_new_interval(self):
        """After a summary, the next illegal request starts a new interval."""
        proto = self.connect()
        for _ in range(5):
            proto.datagramReceived(b"junk", AL)
        self.clock.advance(60)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(30)
        with capturedLogs() as events:
            proto.datagramReceived(b"junk", AL)
            self.assertEqual(
                [call.getTime() for call in self.clock.getDelayedCalls()], [150]
            )
            self.clock.advance(59)
            self.assertEqual(events, [])
            self.clock.advance(1)
        self.assertEqual(fields(events, *self.keys), [self.summary(1, 60)])

    def test_stop_flushes_pending_summary_once(self):
        """Stopping logs the pending summary once and cancels its call."""
        proto = self.connect()
        with capturedLogs() as events:
            for _ in range(3):
                proto.datagramReceived(b"junk", AL)
            self.clock.advance(10)
            proto.doStop()
            self.assertEqual(self.clock.getDelayedCalls(), [])
            self.clock.advance(60)
        self.assertEqual(fields(events, *self.keys), [self.summary(3, 10)])

    def test_stop_without_pending_summary_logs_nothing(self):
        """Stopping after the summary was logged logs nothing more."""
        proto = self.connect()
        proto.datagramReceived(b"junk", AL)
        self.clock.advance(60)
        with capturedLogs() as events:
            proto.doStop()
        self.assertEqual(events, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])


def limited_protocol(clock, exempt="none", **options):
    """
    A protocol with every traffic limit, on a fake transport, whose room and
    limiter are built as twistd would build them from C{options}.
    """
    config = {
        "request-rate": 1000,
        "request-burst": 1000,
        "reply-rate": 10**6,
        "reply-burst": 10**6,
        "max-reply-bytes": 1200,
    }
    config.update(options)
    limiter = limits.Limiter(
        limits.Classifier(limits.parse_networks(exempt)),
        requests=limits.TokenBuckets(config["request-rate"], config["request-burst"]),
        replies=limits.TokenBuckets(config["reply-rate"], config["reply-burst"]),
        max_reply_bytes=config["max-reply-bytes"],
    )
    room = Room(idle_timeout=config.get("idle-timeout", 0), group_of=limiter.group_of, max_members_per_group=2)
    proto = ChatServerProtocol(room, clock, limiter=limiter)
    proto.makeConnection(FakeDatagramTransport())
    return proto


class BrokenTransport(FakeDatagramTransport):
    """A transport whose every write fails as C{transport.write} can."""

    def __init__(self, error):
        FakeDatagramTransport.__init__(self)
        self.error = error

    def write(self, packet, addr=None):
        raise self.error


class ProtocolLimitsTests(SynchronousTestCase):
    """
    L{ChatServerProtocol} with a limiter: dropped datagrams get no reply and
    never reach the room; drops are summarised, never logged one by one.
    """

    def setUp(self):
        self.clock = Clock()

    def test_bad_sources_get_nothing(self):
        """Port 0, unspecified, broadcast and multicast sources are dropped unanswered."""
        proto = limited_protocol(self.clock, exempt="127.0.0.0/8")
        with capturedLogs() as events:
            for source in [("127.0.0.1", 0), ("192.0.2.1", 0), ("0.0.0.0", 5), ("255.255.255.255", 5), ("::", 5), ("ff02::1", 5), ("224.0.0.9", 5)]:
                proto.datagramReceived(b"1 Al", source)
        self.assertEqual((proto.transport.written, proto.room.members(), events), ([], [], []))

    def test_over_rate_is_dropped_unanswered_and_summarised(self):
        """Requests beyond the burst get no reply and change nothing; one summary line counts them."""
        proto = limited_protocol(self.clock, **{"request-rate": 1, "request-burst": 2})
        source = ("192.0.2.1", 5)
        with capturedLogs() as events:
            for name in (b"Al", b"Bo", b"Cy", b"Di"):
                proto.datagramReceived(b"3 " + name, source)  # not a member: illegal
            proto.datagramReceived(b"1 Al", source)
            self.clock.advance(60)
        self.assertEqual(
            (len(proto.transport.written), proto.room.members(), [e["log_format"] for e in events], events[-1]["dropped"], events[-1]["illegal"]),
            (2, [], ["in the last {seconds:.0f} seconds: {summary}"], {limits.OVER_RATE: 3}, 2),
        )
        self.assertEqual(
            formatEvent(events[-1]),
            "in the last 60 seconds: 2 illegal requests refused; 3 datagrams dropped over the request rate",
        )

    def test_members_per_prefix(self):
        """A third member from one /24 is refused; another /24 is not."""
        proto = limited_protocol(self.clock)
        for i, name in enumerate((b"Al", b"Bo", b"Cy")):
            proto.datagramReceived(b"1 " + name, ("192.0.2.%d" % (i + 1,), 5))
        proto.datagramReceived(b"1 Di", ("192.0.3.1", 5))
        self.assertEqual(
            [reply for reply, _ in proto.transport.written],
            [b"", b"Al", ILLEGAL, b"Bo, Al"],
        )

    def test_reply_budget_bounds_what_a_victim_is_sent(self):
        """However many forged requests name a /24, it is sent at most its budget."""
        proto = limited_protocol(self.clock, **{"reply-rate": 100, "reply-burst": 5000})
        for i in range(1000):
            proto.datagramReceived(b"5", ("192.0.2.%d" % (i % 250 + 1,), 1000 + i))
        sent = sum(len(reply) + 28 for reply, _ in proto.transport.written)
        # Each "Illegal message" costs 15 + 28 bytes; a request is handled
        # while the budget could still pay for a 1200-byte reply.
        self.assertEqual((sent <= 5000, len(proto.transport.written)), (True, (5000 - 1228) // 43 + 1))

    def test_write_errors_are_counted_not_raised(self):
        """A reply that cannot be sent is counted; the request's effect stays."""
        for error in (OSError(101, "Network is unreachable"), MessageLengthError("too long")):
            proto = ChatServerProtocol(Room(idle_timeout=0), self.clock)
            proto.makeConnection(BrokenTransport(error))
            with capturedLogs() as events:
                proto.datagramReceived(b"1 Al", AL)
                proto.datagramReceived(b"2 hi", AL)
                self.clock.advance(60)
            self.assertEqual(
                (proto.room.members(), [e.get("unsent") for e in events if "unsent" in e], [e for e in events if e.get("log_failure")]),
                ([(AL, "Al")], [2], []),
            )

    def test_idle_members_are_swept_without_traffic(self):
        """With no datagram at all, a silent member is removed, logged at info."""
        proto = limited_protocol(self.clock, **{"idle-timeout": 30})
        proto.datagramReceived(b"1 Al", ("192.0.2.1", 5))
        proto.datagramReceived(b"1 Bo", ("192.0.2.2", 5))
        with capturedLogs() as events:
            self.clock.advance(29)
            proto.datagramReceived(b"5", ("192.0.2.2", 5))
            for _ in range(2):
                self.clock.advance(1)
        self.assertEqual(
            (proto.room.members(), [formatEvent(e) for e in events]),
            ([(("192.0.2.2", 5), "Bo")], ["'Al' at 192.0.2.1:5 removed after 30 seconds of silence"]),
        )
        proto.doStop()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class RoomWithABug(Room):
    """A room whose handling of C{2} fails half-way, as a bug would."""

    def _say(self, source, member, request, now):
        raise ZeroDivisionError("a bug")


class FaultIsolationTests(SynchronousTestCase):
    """
    Nothing a datagram carries can raise out of the adapter.
    """

    def test_bug_gets_no_reply_and_one_traceback_per_interval(self):
        """A request hitting a bug gets no reply; its traceback is logged once per interval, then counted."""
        clock = Clock()
        proto = ChatServerProtocol(RoomWithABug(idle_timeout=0), clock)
        proto.makeConnection(FakeDatagramTransport())
        proto.datagramReceived(b"1 Al", AL)
        with capturedLogs() as events:
            for _ in range(100):
                proto.datagramReceived(b"2 boom", AL)
            proto.datagramReceived(b"5", AL)
            clock.advance(60)
            proto.datagramReceived(b"2 boom", AL)
        failures = [e for e in events if e.get("log_failure")]
        summaries = [e for e in events if "faults" in e]
        self.assertEqual(
            (
                [reply for reply, _ in proto.transport.written],
                len(failures),
                failures[0]["log_failure"].type,
                [e["faults"] for e in summaries],
                proto.room.members(),
            ),
            ([b"", b""], 2, ZeroDivisionError, [100], [(AL, "Al")]),
        )
        self.flushLoggedErrors(ZeroDivisionError)

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.one_of(
                    st.sampled_from([("192.0.2.1", 5), ("192.0.2.2", 5), ("2001:db8::1", 7), ("::ffff:192.0.2.1", 5), ("192.0.2.3", 0), ("255.255.255.255", 5), ("ff02::1", 5), ("::", 9)]),
                    st.tuples(st.ip_addresses().map(str), st.integers(0, 65535)),
                ),
                st.one_of(
                    st.binary(max_size=40),
                    st.sampled_from([b"1 Al", b"1 Bo", b"2 hi", b"3 Cy", b"4", b"5", b"5\n"]),
                ),
            ),
            max_size=40,
        )
    )
    def test_any_datagram_from_any_address(self, datagrams):
        """Arbitrary datagrams from arbitrary addresses: never an exception; no reply, or the model's reply."""
        proto = limited_protocol(Clock())
        model = ModelRoom(1200, group_of=proto.room.group_of, max_members_per_group=2)
        with capturedLogs() as events:
            for address, datagram in datagrams:
                written = len(proto.transport.written)
                proto.datagramReceived(datagram, address)
                source = canonical_address(address)
                if address[1] == 0 or limits.Classifier([]).classify(source[0]) is limits._BAD:
                    self.assertEqual(len(proto.transport.written), written)
                else:
                    reply, to = proto.transport.written[-1]
                    self.assertEqual((reply, to), (model.receive(source, datagram), address))
        self.assertEqual([e for e in events if e.get("log_failure")], [])


def udp_client(testcase):
    """A blocking IPv4 UDP socket on loopback, closed after the test."""
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    testcase.addCleanup(client.close)
    client.bind(("127.0.0.1", 0))
    client.settimeout(5)
    return client


def receive(client):
    """A Deferred firing with the next datagram C{client} receives."""
    return deferToThread(client.recvfrom, 65536)


class ChatServiceTests(TestCase):
    """
    Tests for L{ChatService}, on the real reactor and loopback sockets.
    """

    def start(self, interface="127.0.0.1"):
        """
        Start a service on a socket bound to C{interface}; return it and its
        port number.  The protocol's clock is C{self.clock}.
        """
        sock = bind_udp(interface, 0)
        port = sock.getsockname()[1]
        self.clock = Clock()
        self.protocol = ChatServerProtocol(Room(), self.clock)
        service = ChatService(sock, self.protocol, reactor)
        with capturedLogs() as events:
            service.startService()
        self.addCleanup(self.stop, service)
        self.start_events = [
            e for e in events if e.get("log_namespace") == SERVICE_NAMESPACE
        ]
        return service, port

    def stop(self, service):
        """Stop C{service} unless the test did."""
        if service.running:
            return service.stopService()

    def test_start_logs_bound_host_and_port(self):
        """Starting logs one info event with the bound host and port."""
        service, port = self.start()
        self.assertNotEqual(port, 0)
        self.assertEqual(
            fields(self.start_events, "log_level", "host", "port"),
            [{"log_level": LogLevel.info, "host": "127.0.0.1", "port": port}],
        )

    def test_start_adopts_socket(self):
        """Starting serves on the given socket's port and closes the original."""
        sock = bind_udp("127.0.0.1", 0)
        port = sock.getsockname()[1]
        service = ChatService(sock, ChatServerProtocol(Room(), Clock()), reactor)
        service.startService()
        self.addCleanup(self.stop, service)
        self.assertTrue(service.running)
        self.assertEqual(service.port.getHost().port, port)
        self.assertEqual(sock.fileno(), -1)

    @inlineCallbacks
    def test_real_client_gets_reply(self):
        """A loopback client's join is answered and its address kept."""
        service, port = self.start()
        client = udp_client(self)
        client.sendto(b"1 Al", ("127.0.0.1", port))
        reply = yield receive(client)
        self.assertEqual(reply, (b"", ("127.0.0.1", port)))
        self.assertEqual(
            self.protocol.room.members(), [(client.getsockname(), "Al")]
        )

    @inlineCallbacks
    def test_oversize_datagram_is_read_whole(self):
        """A datagram whose first 1028 bytes are a legal request is refused whole."""
        service, port = self.start()
        client = udp_client(self)
        client.sendto(b"1 Al", ("127.0.0.1", port))
        yield receive(client)
        datagram = b"2 " + b"a" * 1024 + b"\r\nx"
        client.sendto(datagram, ("127.0.0.1", port))
        reply, _ = yield receive(client)
        self.assertEqual(reply, ILLEGAL)

    @inlineCallbacks
    def test_dual_stack_socket_serves_ipv4_client(self):
        """On an IPv6 socket, an IPv4 client is answered and kept as IPv4."""
        service, port = self.start("::ffff:127.0.0.1")
        self.assertEqual(
            fields(self.start_events, "host", "port"),
            [{"host": "127.0.0.1", "port": port}],
        )
        client = udp_client(self)
        client.sendto(b"1 Al", ("127.0.0.1", port))
        reply, _ = yield receive(client)
        self.assertEqual(reply, b"")
        self.assertEqual(
            self.protocol.room.members(), [(client.getsockname(), "Al")]
        )

    @inlineCallbacks
    def test_stop_returns_deferred_that_fires(self):
        """Stopping returns a Deferred that fires once the port is free again."""
        service, port = self.start()
        d = service.stopService()
        self.assertIsInstance(d, Deferred)
        yield d
        self.assertFalse(service.running)
        again = bind_udp("127.0.0.1", port)
        again.close()

    @inlineCallbacks
    def test_stop_flushes_illegal_summary(self):
        """Losing the port logs the pending illegal summary once."""
        service, port = self.start()
        client = udp_client(self)
        client.sendto(b"junk", ("127.0.0.1", port))
        reply, _ = yield receive(client)
        self.assertEqual(reply, ILLEGAL)
        with capturedLogs() as events:
            yield service.stopService()
        self.assertEqual(
            fields(
                [e for e in events if e.get("log_namespace") == PROTOCOL_NAMESPACE],
                "log_level",
                "illegal",
            ),
            [{"log_level": LogLevel.info, "illegal": 1}],
        )
        self.assertEqual(self.clock.getDelayedCalls(), [])

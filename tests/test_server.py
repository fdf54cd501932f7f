"""
Tests for L{udpchat.server}: the datagram adapter around a room, its log
events, and the service that serves it on a socket bound beforehand.
"""

import ipaddress
import os
import socket
import sqlite3
import tempfile
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import MessageLengthError
from twisted.internet.task import Clock
from twisted.internet.testing import FakeDatagramTransport
from twisted.internet.threads import deferToThread
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase, TestCase

from udpchat.binding import bind_udp
from udpchat import limits
from udpchat.room import Changes, MemberState, Renamed, Room
from udpchat.server import (
    CHECKPOINT_INTERVAL,
    EVENT_LOG_BURST,
    EXPIRY_INTERVAL,
    SUMMARY_INTERVAL,
    ChatServerProtocol,
    ChatService,
    canonical_address,
    format_address,
    loggable,
    periodic_services,
)
from udpchat.store import LOG_BYTES, Store
from udpchat.wire import ILLEGAL

from tests.model import ModelRoom
from tests.test_store import read_back

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


def start_timers(testcase, protocol, clock):
    """
    Start the timer services of C{protocol} on C{clock}, as makeService
    does (each runs once at once); they stop when the test ends.
    """
    services = periodic_services(protocol, clock)
    for service in services:
        service.startService()
        testcase.addCleanup(stop_service, service)
    return services


def stop_service(service):
    """Stop C{service} unless it is stopped already."""
    if service.running:
        service.stopService()


class ProtocolTestMixin:
    """
    Build a L{ChatServerProtocol} on a fake transport and a fake clock.
    """

    def connect(self, log_level=None, transport=None, **kwargs):
        """
        Return a connected protocol; its transport and clock are
        C{self.transport} and C{self.clock}.  Without a store it sends each
        reply at once; it ends its batches C{clock.callLater(0)}.
        """
        self.clock = Clock()
        self.transport = FakeDatagramTransport() if transport is None else transport
        # No idle timeout, so that the only timer is the summary's; the
        # idle sweep has tests of its own.
        room = Room(idle_timeout=0)
        if log_level is not None:
            kwargs["log_level"] = log_level
        proto = ChatServerProtocol(room, self.clock, **kwargs)
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

    def test_changes_are_taken_at_the_end_of_each_batch(self):
        """At the end of a batch the adapter has taken all the room reported: nothing is left for anyone else."""
        proto = self.proto
        proto.datagramReceived(b"1 Al", AL)
        proto.datagramReceived(b"3 Cy", AL)
        self.clock.advance(0)
        after_first = proto.room.take_changes()
        proto.datagramReceived(b"4", AL)
        self.clock.advance(0)
        self.assertEqual(
            (after_first, proto.room.take_changes(), self.clock.getDelayedCalls()),
            (Changes([], [], [], [], 2, 1), Changes([], [], [], [], 3, 1), []),
        )

    def test_one_batch_end_is_scheduled_per_batch(self):
        """However many datagrams arrive before the batch ends, one call ends it."""
        proto = self.proto
        for _ in range(10):
            proto.datagramReceived(b"junk", AL)
        pending = [call.getTime() for call in self.clock.getDelayedCalls()]
        proto.flush()
        self.assertEqual((pending, self.clock.getDelayedCalls()), ([0], []))


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
            self.clock.advance(0)
        self.assertEqual(
            fields(events, *self.keys, "name", "source"),
            [
                {
                    "log_level": LogLevel.info,
                    "log_format": "{quoted_name} joined from {source}",
                    "log_namespace": PROTOCOL_NAMESPACE,
                    "log_source": proto,
                    "name": "Al",
                    "source": "127.0.0.1:4000",
                }
            ],
        )

    def test_membership_events_carry_host_and_port(self):
        """Join, rename, leave and removal carry the member's host and port as fields of their own, for a JSON log; the text is as it was."""
        clock = Clock()
        proto = ChatServerProtocol(Room(idle_timeout=10), clock)
        proto.makeConnection(FakeDatagramTransport())
        with capturedLogs() as events:
            for datagram, source in ((b"1 Al", ("::1", 4000)), (b"3 Cy", ("::1", 4000)),
                                     (b"4", ("::1", 4000)), (b"1 Bo", BO)):
                proto.datagramReceived(datagram, source)
                clock.advance(0)
            clock.advance(10)
            proto.sweep()
        self.assertEqual(
            [(e["host"], e["port"], formatEvent(e)) for e in events],
            [
                ("::1", 4000, "'Al' joined from [::1]:4000"),
                ("::1", 4000, "'Al' at [::1]:4000 renamed to 'Cy'"),
                ("::1", 4000, "'Cy' at [::1]:4000 left"),
                ("127.0.0.1", 4001, "'Bo' joined from 127.0.0.1:4001"),
                ("127.0.0.1", 4001, "'Bo' at 127.0.0.1:4001 removed after 10 seconds of silence"),
            ],
        )

    def test_rename_logs_one_info_event(self):
        """A rename logs one info event with both names and the source."""
        proto = self.connect()
        proto.datagramReceived(b"1 Al", AL)
        self.clock.advance(0)
        with capturedLogs() as events:
            proto.datagramReceived(b"3 Cy", AL)
            self.clock.advance(0)
        self.assertEqual(
            fields(events, *self.keys, "old", "new", "source"),
            [
                {
                    "log_level": LogLevel.info,
                    "log_format": "{quoted_old} at {source} renamed to {quoted_new}",
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
        self.clock.advance(0)
        with capturedLogs() as events:
            proto.datagramReceived(b"4", AL)
            self.clock.advance(0)
        self.assertEqual(
            fields(events, *self.keys, "name", "source"),
            [
                {
                    "log_level": LogLevel.info,
                    "log_format": "{quoted_name} at {source} left",
                    "log_namespace": PROTOCOL_NAMESPACE,
                    "log_source": proto,
                    "name": "Al",
                    "source": "127.0.0.1:4000",
                }
            ],
        )

    def test_changes_are_logged_once_at_the_end_of_the_batch(self):
        """The membership changes of a batch are logged when it ends, in order, once."""
        proto = self.connect()
        with capturedLogs() as events:
            proto.datagramReceived(b"1 Al", AL)
            proto.datagramReceived(b"1 Bo", BO)
            proto.datagramReceived(b"3 Cy", AL)
            proto.datagramReceived(b"4", BO)
            during = list(events)
            self.clock.advance(0)
            proto.flush()
        self.assertEqual(
            (during, fields(events, "log_format", "name", "old", "new")),
            (
                [],
                [
                    {"log_format": "{quoted_name} joined from {source}", "name": "Al", "old": None, "new": None},
                    {"log_format": "{quoted_name} joined from {source}", "name": "Bo", "old": None, "new": None},
                    {"log_format": "{quoted_old} at {source} renamed to {quoted_new}", "name": None, "old": "Al", "new": "Cy"},
                    {"log_format": "{quoted_name} at {source} left", "name": "Bo", "old": None, "new": None},
                ],
            ),
        )

    def test_mapped_source_is_logged_as_ipv4(self):
        """An IPv4-mapped source is logged as its IPv4 address."""
        proto = self.connect()
        with capturedLogs() as events:
            proto.datagramReceived(b"1 Al", MAPPED_AL)
            self.clock.advance(0)
        self.assertEqual(fields(events, "source"), [{"source": "127.0.0.1:4000"}])

    def test_ipv6_source_is_logged_in_brackets(self):
        """An IPv6 source is logged as [host]:port."""
        proto = self.connect()
        with capturedLogs() as events:
            proto.datagramReceived(b"1 Al", ("::1", 5))
            self.clock.advance(0)
        self.assertEqual(fields(events, "source"), [{"source": "[::1]:5"}])

    def test_chat_line_and_poll_log_nothing_at_info(self):
        """At the default level, chat lines and polls log no event."""
        proto = self.connect()
        proto.datagramReceived(b"1 Al", AL)
        proto.datagramReceived(b"1 Bo", BO)
        self.clock.advance(0)
        with capturedLogs() as events:
            proto.datagramReceived(b"2 hello", AL)
            proto.datagramReceived(b"5", BO)
            proto.datagramReceived(b"5", AL)
            self.clock.advance(0)
        self.assertEqual(events, [])
        self.assertEqual(
            self.transport.written[2:],
            [(b"", AL), (b"Al: hello", BO), (b"Bo has joined", AL)],
        )

    def test_chat_text_never_logged_at_info(self):
        """At the default level, no event holds any chat text."""
        proto = self.connect()
        with capturedLogs() as events:
            start_timers(self, proto, self.clock)
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
            self.clock.advance(0)
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
            self.clock.advance(0)
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
            self.clock.advance(0)
        self.assertEqual(events, [])
        self.assertEqual(self.transport.written, [(b"", AL)] * 3)

    def test_warn_logs_no_illegal_summary(self):
        """At warn, the illegal-request summary is not logged."""
        proto = self.connect(log_level=LogLevel.warn)
        with capturedLogs() as events:
            start_timers(self, proto, self.clock)
            proto.datagramReceived(b"junk", AL)
            self.clock.advance(60)
            proto.datagramReceived(b"junk", AL)
            proto.doStop()
        self.assertEqual((events, proto.requests()), ([], {("illegal", "refused"): 2}))


class SummaryTests(ProtocolTestMixin, SynchronousTestCase):
    """
    Tests for the summary line: what was refused, dropped, unsent or failed
    since the last one, logged by a timer every SUMMARY_INTERVAL seconds.
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

    def test_periodic_services(self):
        """The summary always has a timer; the idle sweep one with an idle timeout, the checkpoint one with a store."""
        clock = Clock()
        plain = ChatServerProtocol(Room(idle_timeout=0), clock)
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        saved = Store(os.path.join(directory.name, "room.db"))
        full = ChatServerProtocol(Room(idle_timeout=30, track_state=True), clock, store=saved)
        self.assertEqual(
            [[(service.step, service.call[0]) for service in periodic_services(p, clock)] for p in (plain, full)],
            [
                [(SUMMARY_INTERVAL, plain.log_summary)],
                [(SUMMARY_INTERVAL, full.log_summary), (EXPIRY_INTERVAL, full.sweep), (CHECKPOINT_INTERVAL, full.checkpoint)],
            ],
        )

    def test_burst_is_logged_once_after_interval(self):
        """1000 illegal requests log nothing at once and one event at the end of the interval."""
        proto = self.connect()
        start_timers(self, proto, self.clock)
        with capturedLogs() as events:
            for port in range(1000):
                proto.datagramReceived(b"junk", ("127.0.0.1", 10000 + port))
            self.clock.advance(0)
            self.assertEqual(events, [])
            self.clock.advance(59)
            self.assertEqual(events, [])
            self.clock.advance(1)
        self.assertEqual(fields(events, *self.keys), [self.summary(1000, 60)])
        self.assertEqual(
            self.transport.written,
            [(ILLEGAL, ("127.0.0.1", 10000 + port)) for port in range(1000)],
        )

    def test_summary_is_one_timer_however_much_arrives(self):
        """However many illegal requests arrive, the only timer is the summary's."""
        proto = self.connect()
        start_timers(self, proto, self.clock)
        for _ in range(100):
            proto.datagramReceived(b"junk", AL)
        self.clock.advance(0)
        self.assertEqual(
            [call.getTime() for call in self.clock.getDelayedCalls()], [60]
        )

    def test_legal_requests_are_not_counted(self):
        """Only illegal requests are counted in the summary."""
        proto = self.connect()
        start_timers(self, proto, self.clock)
        proto.datagramReceived(b"1 Al", AL)
        self.clock.advance(0)
        with capturedLogs() as events:
            proto.datagramReceived(b"junk", AL)
            proto.datagramReceived(b"2 hi", AL)
            proto.datagramReceived(b"1 Bo", AL)  # already a member: illegal
            proto.datagramReceived(b"5", AL)
            self.clock.advance(60)
        self.assertEqual(fields(events, *self.keys), [self.summary(2, 60)])

    def test_no_summary_without_illegal_requests(self):
        """An interval with nothing to count logs nothing; the timer keeps its pace."""
        proto = self.connect()
        start_timers(self, proto, self.clock)
        proto.datagramReceived(b"1 Al", AL)
        self.clock.advance(0)
        with capturedLogs() as events:
            proto.datagramReceived(b"2 hi", AL)
            proto.datagramReceived(b"5", AL)
            self.clock.advance(600)
        self.assertEqual(
            (events, [call.getTime() for call in self.clock.getDelayedCalls()]), ([], [660])
        )

    def test_summary_covers_the_interval_since_the_last(self):
        """Each summary counts what came since the previous tick of the timer, not since the first count."""
        proto = self.connect()
        start_timers(self, proto, self.clock)
        with capturedLogs() as events:
            self.clock.advance(30)
            proto.datagramReceived(b"junk", AL)
            self.clock.advance(30)  # t=60: the first summary
            first = fields(events, *self.keys)
            self.clock.advance(60)  # t=120: nothing to count, nothing logged
            self.clock.advance(10)
            proto.datagramReceived(b"junk", AL)
            proto.datagramReceived(b"junk", AL)
            self.clock.advance(49)
            before_tick = len(events)
            self.clock.advance(1)  # t=180
        self.assertEqual(
            (first, before_tick, fields(events, *self.keys)),
            ([self.summary(1, 60)], 1, [self.summary(1, 60), self.summary(2, 60)]),
        )

    def test_counts_keep_totals_while_summaries_report_differences(self):
        """The counts only grow, for a scrape to read; each summary reports what they grew by."""
        clock = Clock()
        proto = limited_protocol(clock, **{"request-rate": 1, "request-burst": 2})
        start_timers(self, proto, clock)
        source = ("192.0.2.1", 5)
        with capturedLogs() as events:
            for _ in range(4):
                proto.datagramReceived(b"junk", source)  # 2 illegal, 2 over the rate
            clock.advance(60)
            after_first = (proto.requests(), proto.dropped())
            proto.datagramReceived(b"junk", source)  # the bucket refilled
            clock.advance(60)
        self.assertEqual(
            (after_first, (proto.requests(), proto.dropped()), fields(events, "illegal", "dropped")),
            (
                ({("illegal", "refused"): 2}, {limits.OVER_RATE: 2}),
                ({("illegal", "refused"): 3}, {limits.OVER_RATE: 2}),
                [
                    {"illegal": 2, "dropped": {limits.OVER_RATE: 2}},
                    {"illegal": 1, "dropped": {}},
                ],
            ),
        )

    def test_log_summary_reports_since_the_last_summary(self):
        """Called by hand, the summary counts what came since the last one, over the time since."""
        proto = self.connect()
        with capturedLogs() as events:
            self.clock.advance(5)
            proto.datagramReceived(b"junk", AL)
            self.clock.advance(10)
            proto.log_summary()
            proto.log_summary()  # nothing since: nothing logged
            proto.datagramReceived(b"junk", AL)
            self.clock.advance(20)
            proto.log_summary()
        self.assertEqual(fields(events, *self.keys), [self.summary(1, 15), self.summary(1, 20)])

    def test_stop_logs_what_the_last_summary_did_not_count(self):
        """Stopping logs one summary of what came since the last, and leaves no timer."""
        proto = self.connect()
        services = start_timers(self, proto, self.clock)
        with capturedLogs() as events:
            for _ in range(3):
                proto.datagramReceived(b"junk", AL)
            self.clock.advance(10)
            for service in reversed(services):  # as MultiService stops them
                service.stopService()
            proto.doStop()
            self.assertEqual(self.clock.getDelayedCalls(), [])
            self.clock.advance(60)
        self.assertEqual(fields(events, *self.keys), [self.summary(3, 10)])

    def test_stop_right_after_a_summary_logs_nothing(self):
        """Stopping just after a summary, with nothing new counted, logs nothing more."""
        proto = self.connect()
        services = start_timers(self, proto, self.clock)
        proto.datagramReceived(b"junk", AL)
        self.clock.advance(60)
        with capturedLogs() as events:
            for service in reversed(services):
                service.stopService()
            proto.doStop()
        self.assertEqual((events, self.clock.getDelayedCalls()), ([], []))


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
            self.clock.advance(0)
        self.assertEqual((proto.transport.written, proto.room.members(), events), ([], [], []))

    def test_over_rate_is_dropped_unanswered_and_summarised(self):
        """Requests beyond the burst get no reply and change nothing; one summary line counts them."""
        proto = limited_protocol(self.clock, **{"request-rate": 1, "request-burst": 2})
        start_timers(self, proto, self.clock)
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
                proto.log_summary()
            self.assertEqual(
                (proto.room.members(), [e.get("unsent") for e in events if "unsent" in e], [e for e in events if e.get("log_failure")], proto.counts),
                ([(AL, "Al")], [2], [], Counter({"unsent": 2})),
            )

    def test_idle_members_are_swept_without_traffic(self):
        """With no datagram at all, a silent member is removed, logged at info."""
        proto = limited_protocol(self.clock, **{"idle-timeout": 30})
        services = start_timers(self, proto, self.clock)
        proto.datagramReceived(b"1 Al", ("192.0.2.1", 5))
        proto.datagramReceived(b"1 Bo", ("192.0.2.2", 5))
        self.clock.advance(0)
        with capturedLogs() as events:
            self.clock.pump([1] * 29)  # the sweep runs each second
            proto.datagramReceived(b"5", ("192.0.2.2", 5))
            for _ in range(2):
                self.clock.advance(1)
        self.assertEqual(
            (proto.room.members(), [formatEvent(e) for e in events]),
            ([(("192.0.2.2", 5), "Bo")], ["'Al' at 192.0.2.1:5 removed after 30 seconds of silence"]),
        )
        for service in reversed(services):
            service.stopService()
        proto.doStop()
        self.assertEqual(self.clock.getDelayedCalls(), [])


def cannot_be_a_peer(source):
    """
    Whether C{source} (canonical) is no address a datagram can really come
    from: port 0, or an unspecified, "this network", broadcast or multicast
    host.
    """
    host, port = source
    address = ipaddress.ip_address(host)
    if address.version == 4:
        this_network = address in ipaddress.ip_network("0.0.0.0/8")
        return not port or this_network or address.is_multicast or host == "255.255.255.255"
    return not port or address.is_unspecified or address.is_multicast


class RoomWithABug(Room):
    """A room that fails on C{2 boom}, as a bug would."""

    def receive(self, source, datagram, now):
        if datagram == b"2 boom":
            raise ZeroDivisionError("a bug")
        return Room.receive(self, source, datagram, now)


class FaultIsolationTests(SynchronousTestCase):
    """
    Nothing a datagram carries can raise out of the adapter.
    """

    def test_bug_gets_no_reply_and_one_traceback_per_interval(self):
        """A request hitting a bug gets no reply; its traceback is logged once per interval, then counted."""
        clock = Clock()
        proto = ChatServerProtocol(RoomWithABug(idle_timeout=0), clock)
        proto.makeConnection(FakeDatagramTransport())
        start_timers(self, proto, clock)
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
                proto.counts,
            ),
            ([b"", b""], 2, ZeroDivisionError, [100], [(AL, "Al")], Counter({"fault": 101})),
        )
        self.flushLoggedErrors(ZeroDivisionError)

    def test_tracebacks_are_limited_by_time_not_by_count(self):
        """After a traceback, the next is logged only SUMMARY_INTERVAL seconds later, however few bugs came between."""
        clock = Clock()
        proto = ChatServerProtocol(RoomWithABug(idle_timeout=0), clock)
        proto.makeConnection(FakeDatagramTransport())
        logged = []
        with capturedLogs() as events:
            for at in (0, 30, 59.5, 60, 61, 119, 130):
                clock.advance(at - clock.seconds())
                before = len(events)
                proto.datagramReceived(b"2 boom", AL)
                if len(events) > before:
                    logged.append(at)
        self.assertEqual(
            (logged, [e["source"] for e in events], proto.counts),
            ([0, 60, 130], ["127.0.0.1:4000"] * 3, Counter({"fault": 7})),
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
        """Arbitrary datagrams from arbitrary addresses: never an exception; no reply, or the model's reply; the model's events, logged."""
        clock = Clock()
        proto = limited_protocol(clock)
        model = ModelRoom(1200, group_of=proto.room.group_of, max_members_per_group=2)
        with capturedLogs() as events:
            for address, datagram in datagrams:
                written = len(proto.transport.written)
                proto.datagramReceived(datagram, address)
                source = canonical_address(address)
                if cannot_be_a_peer(source):
                    self.assertEqual(len(proto.transport.written), written)
                elif datagram == ILLEGAL:  # a server's reply: not answered
                    self.assertIsNone(model.receive(source, datagram))
                    self.assertEqual(len(proto.transport.written), written)
                else:
                    reply, to = proto.transport.written[-1]
                    self.assertEqual((reply, to), (model.receive(source, datagram), address))
            clock.advance(0)
        self.assertEqual(
            (
                [e for e in events if e.get("log_failure")],
                [(e.get("name"), e.get("old"), e.get("new")) for e in events],
            ),
            (
                [],
                [
                    (None, e.old, e.new) if isinstance(e, Renamed) else (e.name, None, None)
                    for e in model.take_events()
                ],
            ),
        )


class StoreProtocolTests(ProtocolTestMixin, SynchronousTestCase):
    """
    L{ChatServerProtocol} with a store: a reply leaves only once what it
    tells is committed, at the end of its batch.
    """

    def setUp(self):
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        self.path = os.path.join(directory.name, "room.db")

    def connect_stored(self, transport=None, idle_timeout=0, now=0, shared=False, log_bytes=LOG_BYTES):
        """
        A protocol on a room tracked in a new store at C{self.path}; a
        C{shared} one, for faults made through a second connection.
        """
        saved = Store(self.path, shared=shared, log_bytes=log_bytes)
        saved.open()
        self.addCleanup(saved.close)
        room = Room(idle_timeout=idle_timeout, track_state=True)
        saved.load(room, now)
        self.clock = Clock()
        self.clock.advance(now)
        self.transport = FakeDatagramTransport() if transport is None else transport
        proto = ChatServerProtocol(room, self.clock, store=saved)
        proto.makeConnection(self.transport)
        return proto

    def test_no_reply_leaves_before_the_flush(self):
        """With a store, the replies of a batch wait for its end, then leave in order."""
        proto = self.connect_stored()
        proto.datagramReceived(b"1 Al", AL)
        proto.datagramReceived(b"1 Bo", BO)
        proto.datagramReceived(b"junk", AL)
        held = (list(self.transport.written), read_back(self.path).members())
        self.clock.advance(0)
        first_batch = (list(self.transport.written), read_back(self.path).members())
        proto.datagramReceived(b"5", AL)
        before_flush = list(self.transport.written)
        proto.flush()
        self.assertEqual(
            (held, first_batch, before_flush, self.transport.written, self.clock.getDelayedCalls()),
            (
                ([], []),
                ([(b"", AL), (b"Al", BO), (ILLEGAL, AL)], [(AL, "Al"), (BO, "Bo")]),
                [(b"", AL), (b"Al", BO), (ILLEGAL, AL)],
                [(b"", AL), (b"Al", BO), (ILLEGAL, AL), (b"Bo has joined", AL)],
                [],
            ),
        )

    def test_what_a_reply_tells_is_saved_before_it_leaves(self):
        """When a reply is written, the file already holds the change it tells of."""
        path = self.path

        class Witness(FakeDatagramTransport):
            # Reads the file back as each reply is written.
            def write(self, packet, addr=None):
                again = read_back(path)
                self.seen.append((packet, again.members(), {s: again.pending(s) for s, _ in again.members()}))
                FakeDatagramTransport.write(self, packet, addr)

        transport = Witness()
        transport.seen = []
        proto = self.connect_stored(transport)
        for datagram, source in [(b"1 Al", AL), (b"1 Bo", BO), (b"2 hi", BO), (b"5", AL)]:
            proto.datagramReceived(datagram, source)
            self.clock.advance(0)
        self.assertEqual(
            transport.seen,
            [
                (b"", [(AL, "Al")], {AL: []}),
                (b"Al", [(AL, "Al"), (BO, "Bo")], {AL: [b"Bo has joined"], BO: []}),
                (b"", [(AL, "Al"), (BO, "Bo")], {AL: [b"Bo has joined", b"Bo: hi"], BO: []}),
                (b"Bo has joined\nBo: hi", [(AL, "Al"), (BO, "Bo")], {AL: [], BO: []}),
            ],
        )

    def test_failed_commit_sends_no_reply_and_is_undone(self):
        """If the store fails, the batch's replies are dropped, the bug logged, and what the batch did undone: the next commit saves only its own changes."""
        # Every commit folds into the tables, where a trigger can fail it.
        proto = self.connect_stored(shared=True, log_bytes=0)
        proto.datagramReceived(b"1 Al", AL)
        proto.datagramReceived(b"1 Bo", BO)
        self.clock.advance(0)
        # Another connection makes every commit fail, as a full disk would.
        other = sqlite3.connect(self.path, isolation_level=None)
        self.addCleanup(other.close)
        other.execute("CREATE TRIGGER full BEFORE INSERT ON lines BEGIN SELECT RAISE(ABORT, 'full'); END")
        with capturedLogs() as events:
            proto.datagramReceived(b"2 hi", BO)
            self.clock.advance(0)
        other.execute("DROP TRIGGER full")
        proto.datagramReceived(b"2 again", BO)
        self.clock.advance(0)
        again = read_back(self.path)
        self.assertEqual(
            (
                self.transport.written,
                [(e.get("source"), e["log_failure"].type) for e in events if e.get("log_failure")],
                proto.counts,
                (proto.requests(), proto.commit_failures),
                (again.members(), again.pending(AL)),
            ),
            (
                [(b"", AL), (b"Al", BO), (b"", BO)],
                [("-", sqlite3.IntegrityError)],
                Counter({"fault": 1, "uncommitted": 1}),
                # The text the failed commit undid was handled all the same.
                ({("1", "ok"): 2, ("2", "ok"): 2}, 1),
                ([(AL, "Al"), (BO, "Bo")], [b"Bo has joined", b"Bo: again"]),
            ),
        )
        self.flushLoggedErrors(sqlite3.IntegrityError)

    def test_checkpoint_saves_every_idle_timer(self):
        """The checkpoint timer saves when each member was last heard from, which a poll alone does not."""
        proto = self.connect_stored(idle_timeout=100, now=1000)
        start_timers(self, proto, self.clock)
        proto.datagramReceived(b"1 Al", AL)
        self.clock.pump([1] * 30)  # the sweep runs each second
        proto.datagramReceived(b"5", AL)  # nothing new: only its timer changes
        self.clock.pump([1] * 29)
        before = read_back(self.path, now=1059).take_changes(everyone=True).members
        self.clock.advance(1)  # t=1060: the checkpoint
        after = read_back(self.path, now=1060).take_changes(everyone=True).members
        # Read back at the time of the last checkpoint, a member's timer
        # stands where it stood then.
        self.assertEqual(
            (before, after),
            ([MemberState(0, AL, "Al", 1, 0, 1059.0)], [MemberState(0, AL, "Al", 1, 0, 1030.0)]),
        )


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

    def start(self, interface="127.0.0.1", store=None):
        """
        Start a service on a socket bound to C{interface}, with C{store} if
        any; return it and its port number.  The protocol's clock is
        C{self.clock}.
        """
        sock = bind_udp(interface, 0)
        port = sock.getsockname()[1]
        self.clock = Clock()
        room = Room(track_state=store is not None)
        self.protocol = ChatServerProtocol(room, self.clock, store=store)
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
    def test_each_read_ends_a_batch(self):
        """On the socket, each read ends a batch: its changes are logged with no turn of the protocol's clock."""
        service, port = self.start()
        client = udp_client(self)
        with capturedLogs() as events:
            client.sendto(b"1 Al", ("127.0.0.1", port))
            yield receive(client)
        self.assertEqual(
            (fields(events, "log_namespace", "name"), self.clock.getDelayedCalls()),
            ([{"log_namespace": PROTOCOL_NAMESPACE, "name": "Al"}], []),
        )

    @inlineCallbacks
    def test_store_is_opened_and_replies_wait_for_it(self):
        """With a store, the service restores the room from it, and a reply leaves once its change is saved."""
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        path = os.path.join(directory.name, "room.db")
        earlier = Room(track_state=True)
        saved = Store(path)
        saved.open()
        saved.load(earlier, 0)
        earlier.receive(("192.0.2.1", 5), b"1 Bo", 0)
        saved.commit(earlier.take_changes(), 0)
        saved.close()
        service, port = self.start(store=Store(path))
        client = udp_client(self)
        client.sendto(b"1 Al", ("127.0.0.1", port))
        reply, _ = yield receive(client)
        members = read_back(path).members()
        with capturedLogs() as events:
            yield service.stopService()
        self.assertEqual(
            (
                fields(self.start_events[:1], "members", "lines", "path"),
                reply,
                members,
                fields([e for e in events if e.get("log_namespace") == SERVICE_NAMESPACE], "members", "path"),
            ),
            (
                [{"members": "1 member", "lines": "0 stored lines", "path": path}],
                b"Bo",
                [(("192.0.2.1", 5), "Bo"), (client.getsockname(), "Al")],
                [{"members": "2 members", "path": path}],
            ),
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


class ReplyLoopTests(ProtocolTestMixin, SynchronousTestCase):
    """
    A datagram that is exactly a server's C{Illegal message} gets no reply
    (issue 11, finding 5): one forged datagram cannot start an exchange
    between two servers, or between a server and itself.
    """

    def test_illegal_message_is_not_answered(self):
        """From a member or a stranger, C{Illegal message} gets no reply, and is counted."""
        proto = self.connect()
        proto.datagramReceived(b"1 Al", AL)
        proto.datagramReceived(ILLEGAL, AL)
        proto.datagramReceived(ILLEGAL, BO)
        self.assertEqual(
            (self.transport.written, proto.counts["unanswered"]), ([(b"", AL)], 2)
        )

    def test_unanswered_datagram_costs_no_reply_budget(self):
        """The reply budget set aside for it is given back: forged ones cannot spend a victim's."""
        clock = Clock()
        proto = limited_protocol(clock, **{"reply-burst": 2000, "reply-rate": 1})
        for _ in range(5):
            proto.datagramReceived(ILLEGAL, ("192.0.2.1", 5))
        proto.datagramReceived(b"1 Al", ("192.0.2.1", 5))
        self.assertEqual(
            (proto.transport.written, proto.counts["unanswered"]),
            ([(b"", ("192.0.2.1", 5))], 5),
        )

    def test_every_other_request_keeps_its_reply(self):
        """An empty datagram, and anything but exactly C{Illegal message}, is still refused aloud."""
        proto = self.connect()
        for datagram in (b"", ILLEGAL + b"\n", ILLEGAL[:-1], b"illegal message", b" " + ILLEGAL):
            proto.datagramReceived(datagram, AL)
        self.assertEqual([reply for reply, _ in self.transport.written], [ILLEGAL] * 5)

    def test_two_servers_stop_at_once(self):
        """
        Two servers wired to each other, one forged datagram from either:
        the exchange ends after two datagrams, exempt sources too.
        """
        one, two = self.connect(), self.connect()
        one_address, two_address = ("127.0.0.1", 1), ("127.0.0.1", 2)
        for forged in (b"", b"junk", b"5", b"Al, Bo"):
            traffic = [(two, forged, one_address)]  # as if "one" had sent it
            sent = 0
            while traffic and sent < 100:
                receiver, datagram, sender = traffic.pop(0)
                receiver.transport.written.clear()
                receiver.datagramReceived(datagram, sender)
                for reply, _ in receiver.transport.written:
                    sent += 1
                    other = one if receiver is two else two
                    here = two_address if receiver is two else one_address
                    traffic.append((other, reply, here))
            self.assertLessEqual(sent, 2, forged)

    def test_summary_counts_them(self):
        """The summary line says how many such datagrams went unanswered."""
        proto = self.connect()
        with capturedLogs() as events:
            proto.datagramReceived(ILLEGAL, AL)
            proto.log_summary()
        self.assertEqual(
            [formatEvent(e) for e in events],
            ["in the last 0 seconds: 1 datagram not answered"],
        )


class EventLogBoundTests(ProtocolTestMixin, SynchronousTestCase):
    """
    Membership events are logged one per line up to a budget, and counted
    beyond it (issue 11, finding 6); names are quoted compactly.
    """

    def test_names_are_quoted_compactly(self):
        """Ordinary text is written as itself, non-ASCII and private use too; what hides or breaks a line is escaped."""
        self.assertEqual(
            [
                loggable(name)
                for name in (
                    "Al",
                    "Zoë 李",
                    "\U000f0000" * 3,
                    "a\x1bb",
                    "r\u202eo",
                    "x\u00a0y",
                    "o'k\\",
                    "line\u2028break",
                )
            ],
            [
                "'Al'",
                "'Zoë 李'",
                "'" + "\U000f0000" * 3 + "'",
                "'a\\x1bb'",
                "'r\\u202eo'",
                "'x\\xa0y'",
                "'o\\'k\\\\'",
                "'line\\u2028break'",
            ],
        )

    def churn(self, proto, seconds, per_second):
        """
        Rename back and forth between two longest names (escaped at their
        widest in the log) from many addresses, for C{seconds}.
        """
        # U+3000 (a space other than " ") is escaped as six bytes.
        sources = [(f"2001:db8:{i:x}:ffff:ffff:ffff:ffff:ffff", 65535) for i in range(per_second)]
        for i, source in enumerate(sources):
            proto.datagramReceived(f"1 {i}".encode(), source)
        for second in range(seconds):
            for i, source in enumerate(sources):
                name = f"{i:02d}" + "\u3000" * 29 + "ab"[second % 2]
                proto.datagramReceived(f"3 {name}".encode(), source)
            self.clock.advance(1)

    def test_churn_is_summarised_beyond_the_budget(self):
        """A burst of joins logs EVENT_LOG_BURST lines and counts the rest in the summary."""
        proto = self.connect()
        with capturedLogs() as events:
            for i in range(EVENT_LOG_BURST + 40):
                proto.datagramReceived(f"1 m{i}".encode(), ("127.0.0.1", 5000 + i))
            self.clock.advance(0)
            proto.log_summary()
        texts = [formatEvent(e) for e in events]
        self.assertEqual(
            (len(texts), texts[-1]),
            (EVENT_LOG_BURST + 1, "in the last 0 seconds: 40 joins not logged one by one"),
        )

    def test_worst_case_log_bytes_per_minute(self):
        """
        Under the widest legal churn, at the default level, the log grows by
        at most what the README states: 64 KiB in the first minute, 32 KiB
        in each one after.
        """
        proto = self.connect()
        prefix = "2026-11-26T09:12:30+0000 [udpchat.server.ChatServerProtocol#info] "
        minutes = []
        for minute in range(3):
            with capturedLogs() as events:
                self.churn(proto, 60, 50)
                proto.log_summary()
            minutes.append(sum(len((prefix + formatEvent(e) + "\n").encode()) for e in events))
        self.assertLessEqual(minutes[0], 64 * 1024)
        self.assertLessEqual(max(minutes[1:]), 32 * 1024)
        # And it is not much less than that: the bound is what churn costs.
        self.assertGreater(minutes[1], 16 * 1024)


class StallTests(SynchronousTestCase):
    """
    Time the server did not run does not count toward idle timeouts (issue
    11, finding 7): the sweep sees a stall, and datagrams that waited in
    the socket are credited before anyone expires.
    """

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.proto = limited_protocol(self.clock, **{"idle-timeout": 5})
        start_timers(self, self.proto, self.clock)
        self.members = [(f"192.0.{i}.1", 5000) for i in range(6)]
        for i, member in enumerate(self.members):
            self.proto.datagramReceived(f"1 m{i}".encode(), member)

    def keep_sending(self, seconds):
        for _ in range(seconds):
            self.clock.advance(1)
            for member in self.members:
                self.proto.datagramReceived(b"5", member)

    def test_stall_expires_nobody_who_kept_sending(self):
        """Stopped for 10 s (one jump of the clock), then the queued polls: all six stay."""
        self.keep_sending(3)
        self.clock.advance(10)  # SIGSTOP ... SIGCONT: the timers run first
        for member in self.members:
            self.proto.datagramReceived(b"5", member)
        self.keep_sending(3)
        self.assertEqual(len(self.proto.room.members()), 6)

    def test_stall_seen_first_by_the_batch(self):
        """If the queued datagrams are read before the sweep runs, they are credited first too."""
        self.keep_sending(3)
        self.clock.rightNow += 10  # no timer has run yet
        for member in self.members:
            self.proto.datagramReceived(b"5", member)
        self.clock.advance(0)
        self.keep_sending(3)
        self.assertEqual(len(self.proto.room.members()), 6)

    def test_clock_stepped_back(self):
        """A step back of the clock keeps members who kept sending, and still expires the silent in time."""
        silent = self.members.pop()
        self.keep_sending(2)
        self.clock.rightNow -= 3600
        self.keep_sending(2)
        self.assertEqual(len(self.proto.room.members()), 6)
        self.keep_sending(2)
        self.assertNotIn(silent, [source for source, _ in self.proto.room.members()])
        self.assertEqual(len(self.proto.room.members()), 5)

    def test_silent_members_still_expire(self):
        """A stall stops the timers; it does not reset them: the silent expire after 5 s of running time."""
        silent = self.members.pop()
        self.keep_sending(2)
        self.clock.advance(60)  # counts as one second
        self.keep_sending(1)
        self.assertEqual(len(self.proto.room.members()), 6)
        self.keep_sending(1)
        self.assertNotIn(silent, [source for source, _ in self.proto.room.members()])

    def test_stall_is_logged(self):
        """The stall is logged once, with how long it was."""
        with capturedLogs() as events:
            self.clock.advance(10)
        self.assertEqual(
            [formatEvent(e) for e in events if e["log_level"] is LogLevel.warn],
            [
                "10.0 seconds between two sweeps for idle members (the server was "
                "stopped or its clock stepped): 9.0 seconds of them do not count "
                "toward the idle timeout"
            ],
        )

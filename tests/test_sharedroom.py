"""
Tests for L{udpchat.sharedroom}: the adapter in front of a room in Redis,
with Twisted's helpers (a L{Clock}, a L{FakeDatagramTransport}) and the
script run by a real redis-server, or a link whose answers the test gives.
"""

import itertools

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import FakeDatagramTransport
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from udpchat.redisroom import SCRIPT, SCRIPT_SHA, RedisAddress, RedisRoom
from udpchat.sharedroom import (
    MAX_WAITING,
    WAITING,
    RedisLink,
    RedisUnavailable,
    SharedRoomProtocol,
)
from udpchat.server import UNANSWERED
from udpchat.wire import ILLEGAL

from tests.redisserver import requires_redis, shared_redis

A = ("127.0.0.1", 4000)
B = ("127.0.0.1", 4001)
ADDRESS = RedisAddress("127.0.0.1", 6379, 0, None, "secret")
_rooms = itertools.count()


class ScriptLink:
    """A link that runs each call at once, on a real Redis: what RedisLink does, without a reactor."""

    def __init__(self):
        self.address = ADDRESS
        self.redis = shared_redis().client()
        self.redis.call(b"SCRIPT", b"LOAD", SCRIPT)
        self.calls = 0

    def call(self, arguments):
        self.calls += 1
        return succeed(self.redis.call(b"EVALSHA", SCRIPT_SHA, *arguments))


class HeldLink:
    """A link whose calls wait until the test answers them."""

    address = ADDRESS

    def __init__(self):
        self.calls = []

    def call(self, arguments):
        called = Deferred()
        self.calls.append((arguments, called))
        return called


def protocol(link, **options):
    clock = Clock()
    room = RedisRoom(b"adapter%d" % next(_rooms), **options)
    proto = SharedRoomProtocol(room, link, clock)
    transport = FakeDatagramTransport()
    proto.makeConnection(transport)
    return proto, transport, clock


@requires_redis
class SharedRoomProtocolTests(SynchronousTestCase):
    """Datagrams in, one call per batch, replies out."""

    def test_a_batch_is_one_call_and_replies_go_to_their_sources(self):
        link = ScriptLink()
        proto, transport, clock = protocol(link)
        for datagram, source in ((b"1 Al", A), (b"1 Bo", B), (b"2 hi", A), (b"5", B), (b"junk", B)):
            proto.datagramReceived(datagram, source)
        self.assertEqual(transport.written, [])  # nothing before Redis answers
        clock.advance(0)
        self.assertEqual(link.calls, 1)
        self.assertEqual(
            transport.written, [(b"", A), (b"Al", B), (b"", A), (b"Al: hi", B), (ILLEGAL, B)]
        )
        self.assertEqual(
            proto.requests(),
            {("1", "ok"): 2, ("2", "ok"): 1, ("5", "ok"): 1, ("illegal", "refused"): 1},
        )

    def test_a_datagram_as_a_transport_delivers_it(self):
        link = ScriptLink()
        proto, transport, clock = protocol(link)
        proto.datagramReceived(b"1 Al", A)
        clock.advance(0)
        self.assertEqual(transport.written, [(b"", A)])

    def test_the_sweep_expires_idle_members_and_logs_them(self):
        link = ScriptLink()
        proto, transport, clock = protocol(link, idle_timeout=5)
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        proto.datagramReceived(b"1 Al", A)
        clock.advance(0)
        clock.advance(6)
        proto.sweep()
        self.assertEqual(proto.room.member_count, 0)
        self.assertIn("removed after", " ".join(e.get("log_format", "") for e in events))


class HeldLinkTests(SynchronousTestCase):
    """What the adapter does while Redis has not answered, or will not."""

    def test_no_reply_for_a_batch_redis_did_not_answer(self):
        link = HeldLink()
        proto, transport, clock = protocol(link)
        proto.datagramReceived(b"1 Al", A)
        proto.datagramReceived(b"2 hi", A)
        clock.advance(0)
        self.assertEqual((len(link.calls), proto.waiting), (1, 2))
        link.calls[0][1].errback(RedisUnavailable("gone"))
        self.assertEqual((transport.written, proto.waiting, proto.counts[UNANSWERED]), ([], 0, 2))
        self.assertEqual(proto.requests(), {("1", "unanswered"): 1, ("2", "unanswered"): 1})

    def test_calls_go_out_without_waiting_for_the_last_answer(self):
        link = HeldLink()
        proto, transport, clock = protocol(link)
        proto.datagramReceived(b"1 Al", A)
        clock.advance(0)
        proto.datagramReceived(b"5", A)
        clock.advance(0)
        self.assertEqual(len(link.calls), 2)

    def test_requests_beyond_the_most_that_may_wait_are_dropped(self):
        link = HeldLink()
        proto, transport, clock = protocol(link)
        proto.begin_batch()
        for _ in range(MAX_WAITING + 3):
            proto.request(b"5", A, A)
        clock.advance(0)
        arguments = link.calls[0][0]
        self.assertEqual((proto.waiting, proto.counts[WAITING]), (MAX_WAITING, 3))
        self.assertEqual(len(arguments), 9 + 7 * MAX_WAITING)


class FakeRedis:
    """What txredisapi's lazy connection offers that RedisLink uses."""

    def __init__(self):
        self.commands = []
        self.answers = []
        self.connected = True
        self._factory = self

    @property
    def size(self):
        return 1 if self.connected else 0

    def execute_command(self, *args):
        self.commands.append(args)
        answer = Deferred()
        self.answers.append(answer)
        return answer

    def disconnect(self):
        self.connected = False
        return succeed(None)


class RedisLinkTests(SynchronousTestCase):
    """Calls, time limits, and one log line per outage."""

    def setUp(self):
        self.clock = Clock()
        self.redis = FakeRedis()
        self.options = None

        def connect(**options):
            self.options = options
            return self.redis

        self.link = RedisLink(ADDRESS, self.clock, connect=connect, timeout=5)
        self.link.startService()
        self.logged = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    def errors(self):
        return [e for e in self.logged if e.get("log_namespace", "").endswith("RedisLink")]

    def test_connects_with_the_urls_parts_and_bytes(self):
        self.assertEqual(
            {key: self.options[key] for key in ("host", "port", "dbid", "password", "charset", "reconnect")},
            dict(host="127.0.0.1", port=6379, dbid=0, password="secret", charset=None, reconnect=True),
        )

    def test_a_call_is_evalsha_with_the_arguments(self):
        results = []
        self.link.call([b"1", b"room"]).addCallback(results.append)
        self.redis.answers[0].callback([[], [], 0, 0])
        self.assertEqual((self.redis.commands, results), ([(b"EVALSHA", SCRIPT_SHA, b"1", b"room")], [[[], [], 0, 0]]))

    def test_a_redis_that_forgot_the_script_is_given_it_whole(self):
        from txredisapi import ResponseError

        results = []
        self.link.call([b"1", b"room"]).addCallback(results.append)
        self.redis.answers[0].errback(ResponseError("NOSCRIPT No matching script"))
        self.assertEqual(self.redis.commands[1], (b"EVAL", SCRIPT, b"1", b"room"))
        self.redis.answers[1].callback("done")
        self.assertEqual(results, ["done"])

    def test_a_call_that_hangs_fails_after_the_time_limit(self):
        failures = []
        self.link.call([b"1"]).addErrback(failures.append)
        self.clock.advance(5)
        self.assertEqual(len(failures), 1)
        self.assertTrue(failures[0].check(RedisUnavailable))

    def test_an_outage_is_logged_once_and_its_end_once_without_the_password(self):
        self.link.call([b"1"])
        self.redis.answers[0].callback("ok")
        self.redis.connected = False
        for _ in range(3):
            self.link.call([b"1"]).addErrback(lambda f: None)
        self.redis.connected = True
        self.link.call([b"1"])
        self.redis.answers[-1].callback("ok")
        self.link.call([b"1"])
        self.redis.answers[-1].callback("ok")
        texts = [e["log_format"] for e in self.errors()]
        self.assertEqual(len(texts), 2, texts)
        self.assertIn("does not answer", texts[0])
        self.assertIn("answers again", texts[1])
        self.assertNotIn("secret", repr(self.errors()))

    def test_no_outage_is_logged_while_the_first_connection_is_made(self):
        self.redis.connected = False
        self.link.call([b"1"]).addErrback(lambda f: None)
        self.redis.answers[0].errback(RedisUnavailable("refused"))
        self.assertEqual(self.errors(), [])

    def test_calls_before_the_first_connection_wait_for_it(self):
        """Datagrams read as the daemon starts are not lost: txredisapi sends them once connected."""
        self.redis.connected = False
        self.link.call([b"1"])
        self.assertEqual(self.redis.commands, [(b"EVALSHA", SCRIPT_SHA, b"1")])

    def test_calls_fail_at_once_while_not_connected(self):
        self.link.call([b"1"])
        self.redis.answers[0].callback("ok")
        self.redis.connected = False
        failures = []
        self.link.call([b"1"]).addErrback(failures.append)
        self.assertEqual((len(failures), len(self.redis.commands)), (1, 1))

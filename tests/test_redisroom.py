"""
Tests for L{udpchat.redisroom} and its script: the room's rules as Redis runs
them, against the same model as the memory room (L{tests.model}), on a real
redis-server.
"""

import itertools
import json

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from udpchat.redisroom import (
    SCRIPT,
    SCRIPT_SHA,
    RedisAddress,
    RedisError,
    RedisRoom,
    check_redis,
    decode_source,
    encode_source,
    parse_redis_url,
)
from udpchat.room import Expired, Joined, Left, Moved, Renamed
from udpchat.wire import ILLEGAL

from tests.model import ModelRoom
from tests.redisserver import requires_redis, shared_redis
from tests.test_room import SOURCES, counting_tokens, session_datagrams

PROPERTY = settings(max_examples=100, deadline=None)

A, B, C, D, E = SOURCES
_prefixes = itertools.count()


class ScriptRoom:
    """
    A L{RedisRoom} driven one datagram at a time, the way a test drives a
    L{Room}: C{receive}, C{expire}, and what a test may observe (members,
    what each has pending), read from Redis's keys.
    """

    def __init__(self, redis, new_token=None, **options):
        self.redis = redis
        self.prefix = b"test%d" % next(_prefixes)
        # Every registration brings a new token, used or not; a test that
        # fixes tokens wants the next one drawn only once one is used.
        self._tokens = new_token and iter(lambda: new_token(), None)
        self._token = new_token and next(self._tokens)
        self.room = RedisRoom(self.prefix, new_token=new_token and (lambda: self._token), **options)
        self.events = []

    def _call(self, datagrams, now, encoded):
        answer = self.redis.call(b"EVALSHA", SCRIPT_SHA, *self.room.arguments(encoded, now))
        replies, events = self.room.results(answer, datagrams)
        if self._tokens and any(reply and reply.startswith(b"0 " + self._token) for reply in replies):
            self._token = next(self._tokens)
        self.events += events
        return replies

    def receive(self, source, datagram, now=0):
        return self._call([datagram], now, [self.room.encode(source, datagram)])[0]

    def expire(self, now):
        self._call([], now, [])

    def take_events(self):
        events, self.events = self.events, []
        return events

    def _key(self, name):
        return self.prefix + b":" + name

    def members(self):
        ids = self.redis.call(b"ZRANGE", self._key(b"ids"), 0, -1)
        members = []
        for id in ids:
            source, name = self._member(id)[:2]
            members.append((decode_source(source.encode()), name))
        return members

    def _member(self, id):
        return json.loads(self.redis.call(b"GET", self._key(b"m:" + id)))

    def pending(self, source):
        id = self.redis.call(b"HGET", self._key(b"src"), encode_source(source))
        position = self._member(id)[3]
        first = int(self.redis.call(b"HGET", self._key(b"meta"), b"first") or 0)
        start = max(position, first)
        entries = self.redis.call(b"XRANGE", self._key(b"log"), b"0-%d" % (start + 1), b"+")
        lines = [fields[3] for _, fields in entries if fields[1] != id]
        return lines[max(0, len(lines) - self.room.max_pending) :]

    def state(self):
        members = self.members()
        return members, {source: self.pending(source) for source, _ in members}


def script_room(**options):
    redis = shared_redis().client()
    redis.call(b"SCRIPT", b"LOAD", SCRIPT)
    return ScriptRoom(redis, **options)


class EncodingTests(SynchronousTestCase):
    """What a daemon sends Redis, and reads back, outside the script."""

    def test_sources_round_trip(self):
        """Every source form the adapter makes comes back as it went."""
        for source in SOURCES:
            self.assertEqual(decode_source(encode_source(source)), source)

    def test_each_request_is_parsed_once_into_the_scripts_values(self):
        """A request's code and fields; an illegal one as x, flagged if it is exactly Illegal message."""
        room = RedisRoom(new_token=counting_tokens())
        token = b"%032x" % 7
        self.assertEqual(
            [room.encode(A, d)[3:] for d in (b"1 Al", b"2 hi\n", b"5", b"6 %s Al" % token, b"8 %s 2 3" % token, b"junk", ILLEGAL)],
            [
                [b"1", b"Al", b"", b""],
                [b"2", b"hi", b"", b""],
                [b"5", b"", b"", b""],
                [b"6", token, b"Al", b"%032x" % 0],
                [b"8", token, b"2", b"3"],
                [b"x", b"", b"", b""],
                [b"x", b"1", b"", b""],
            ],
        )


class URLTests(SynchronousTestCase):
    """--state redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]."""

    def test_every_part(self):
        self.assertEqual(
            parse_redis_url("redis://me:s%40cret@example.org:7000/3"),
            RedisAddress("example.org", 7000, 3, "me", "s@cret"),
        )

    def test_defaults(self):
        self.assertEqual(parse_redis_url("redis://localhost"), RedisAddress("localhost", 6379, 0, None, None))
        self.assertEqual(parse_redis_url("redis://:pw@[::1]/"), RedisAddress("::1", 6379, 0, None, "pw"))

    def test_printed_without_its_password(self):
        self.assertEqual(str(parse_redis_url("redis://me:secret@h:1/2")), "redis://me@h:1/2")

    def test_bad_urls_are_refused_without_quoting_the_password(self):
        for url in ("redis://:secret@h:port", "redis://:secret@h/db", "redis://:secret@h?x=1", "redis://me@h", "redis:///0"):
            with self.assertRaises(ValueError) as caught:
                parse_redis_url(url)
            self.assertNotIn("secret", str(caught.exception))


@requires_redis
class CheckTests(SynchronousTestCase):
    """The check a daemon makes of its Redis before it starts."""

    def test_a_reachable_redis_is_accepted(self):
        server = shared_redis()
        self.assertRegex(check_redis(parse_redis_url(server.url)), r"\d+\.\d+")

    def test_an_unreachable_redis_is_one_line(self):
        from tests.redisserver import free_tcp_port

        with self.assertRaises(RedisError) as caught:
            check_redis(RedisAddress("127.0.0.1", free_tcp_port(), 0, None, None), timeout=2)
        self.assertIn("cannot reach Redis at 127.0.0.1:", str(caught.exception))
        self.assertNotIn("\n", str(caught.exception))


@requires_redis
class ScriptTests(SynchronousTestCase):
    """The rules in Redis, case by case, where the model tests seldom go."""

    def test_the_protocol_table(self):
        room = script_room(new_token=counting_tokens())
        self.assertEqual(
            [
                room.receive(A, b"1 Al"),
                room.receive(B, b"1 Bo"),
                room.receive(A, b"2 hi"),
                room.receive(B, b"5"),
                room.receive(B, b"3 Cy"),
                room.receive(A, b"5"),
                room.receive(A, b"4"),
                room.receive(A, b"5"),
                room.receive(B, b"5"),
                room.receive(C, ILLEGAL),
                room.receive(C, b"7"),
            ],
            [b"", b"Al", b"", b"Al: hi", b"", b"Bo has joined\nBo changed his name to Cy", b"", ILLEGAL,
             b"Al has left the group", None, ILLEGAL],
        )
        self.assertEqual(
            room.take_events(), [Joined(A, "Al"), Joined(B, "Bo"), Renamed(B, "Bo", "Cy"), Left(A, "Al")]
        )

    def test_sessions_roam_and_repeat(self):
        room = script_room(new_token=counting_tokens())
        token = b"%032x" % 0
        nonce = b"%032x" % 0xABC
        registered = room.receive(A, b"6 %s Al" % nonce)
        self.assertEqual(registered, b"0 %s 1" % token)
        room.receive(B, b"1 Bo")
        room.receive(B, b"2 one")
        self.assertEqual(room.receive(C, b"8 %s 1 1" % token), b"1 3\nBo has joined\nBo: one")
        self.assertEqual(room.receive(C, b"8 %s 1 1" % token), b"1 3\nBo has joined\nBo: one")
        self.assertEqual(room.receive(C, b"7 %s 2 hey" % token), b"2")
        self.assertEqual(room.receive(C, b"7 %s 2 hey" % token), b"2")
        self.assertEqual(room.receive(B, b"5"), b"Al: hey")
        self.assertEqual(room.take_events(), [Joined(A, "Al"), Joined(B, "Bo"), Moved(A, C, "Al")])

    def test_idle_members_expire_once(self):
        room = script_room(idle_timeout=5)
        room.receive(A, b"1 Al")
        room.receive(B, b"1 Bo", now=3)
        room.expire(5)
        room.expire(5)
        self.assertEqual(room.take_events(), [Joined(A, "Al"), Joined(B, "Bo"), Expired(A, "Al")])
        self.assertEqual(room.members(), [(B, "Bo")])

    def test_huge_numbers_are_compared_exactly(self):
        """Session numbers of 19 digits, beyond what a Lua number holds exactly."""
        room = script_room(new_token=counting_tokens())
        token = b"%032x" % 0
        room.receive(A, b"6 %032x Al" % 1)
        big = 9999999999999999998
        self.assertEqual(room.receive(A, b"7 %s %d x" % (token, big)), b"%d" % big)
        self.assertEqual(room.receive(A, b"7 %s %d y" % (token, big + 1)), b"%d" % (big + 1))
        self.assertIsNone(room.receive(A, b"7 %s %d z" % (token, big)))
        self.assertEqual(room.receive(A, b"8 %s %d 99999999999999999" % (token, big + 1)), b"%d refused position ahead" % (big + 1))


@requires_redis
class ScriptModelTests(SynchronousTestCase):
    """
    The script against the model, as the memory room is checked in
    tests/test_room.py: random datagrams, limits, sessions.
    """

    @PROPERTY
    @given(
        st.integers(24, 1300),
        st.lists(
            st.tuples(
                st.sampled_from(SOURCES),
                st.one_of(
                    st.sampled_from([b"4", b"5", b"5", b"5\n", b"", b"6", b"1", b"2 ", ILLEGAL]),
                    st.builds(
                        lambda code, name: code + b" " + name.encode(),
                        st.sampled_from([b"1", b"1", b"3"]),
                        st.one_of(
                            st.sampled_from(["Al", "Bo", "Cy", "Zo\u00eb", "\U0001f600" * 8, "x" * 32, "and 3 more"]),
                            st.text(st.characters(codec="utf-8"), min_size=1, max_size=34),
                        ),
                    ),
                    st.builds(
                        lambda text: b"2 " + text.encode(),
                        st.one_of(st.sampled_from(["hi", "x" * 300]), st.text(st.characters(codec="utf-8"), max_size=60)),
                    ),
                    st.binary(max_size=40),
                ),
            ),
            max_size=40,
        ),
    )
    def test_script_follows_protocol_table(self, cap, steps):
        """Random datagrams from a few sources: the script and the model reply alike and hold alike."""
        room, model = script_room(max_reply_bytes=cap), ModelRoom(cap)
        for source, datagram in steps:
            reply = room.receive(source, datagram)
            self.assertEqual(reply, model.receive(source, datagram), (source, datagram))
            self.assertEqual((room.state(), room.take_events()), (model.state(), model.take_events()))

    @PROPERTY
    @given(
        st.integers(60, 1300),
        st.integers(1, 6),
        st.booleans(),
        st.integers(1, 3),
        st.lists(
            st.tuples(
                st.sampled_from(SOURCES),
                st.one_of(
                    session_datagrams(),
                    session_datagrams(),
                    st.sampled_from([b"1 Al", b"1 Cy", b"2 hey", b"5", b"4", b"3 Di"]),
                ),
                st.integers(0, 3),
            ),
            max_size=50,
        ),
    )
    def test_script_with_sessions_and_limits_follows_the_model(self, cap, max_pending, sessions_only, per_group, steps):
        """Sessions, repeats, roaming, the backlog cap, the log's capacity, groups of addresses, idle expiry."""
        group_of = lambda source: source[0]  # noqa: E731
        options = dict(
            max_pending=max_pending, idle_timeout=5, sessions_only=sessions_only,
            group_of=group_of, max_members_per_group=per_group, max_members=4,
        )
        room = script_room(max_reply_bytes=cap, new_token=counting_tokens(), **options)
        model = ModelRoom(cap, new_token=counting_tokens(), **options)
        now = 0
        for source, datagram, wait in steps:
            now += wait
            reply = room.receive(source, datagram, now)
            self.assertEqual(reply, model.receive(source, datagram, now), (source, datagram))
            self.assertEqual(room.take_events(), model.take_events())
            self.assertEqual(room.state(), model.state())

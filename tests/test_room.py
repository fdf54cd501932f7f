"""
Tests for L{udpchat.room}: the protocol table, applied to bytes in and out.
"""

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from udpchat.room import Expired, Joined, Left, Reader, Renamed, Room, SharedLog
from udpchat.wire import ILLEGAL

from tests.model import ModelRoom

PROPERTY = settings(max_examples=200, deadline=None)

A = ("127.0.0.1", 4000)
B = ("127.0.0.1", 4001)
C = ("::1", 5)
D = ("10.0.0.4", 4000)
E = ("::ffff:127.0.0.1", 4000)
SOURCES = (A, B, C, D, E)


def state(room):
    """
    Everything the room lets a test observe, in one comparable value.
    """
    members = room.members()
    return (
        members,
        {source: room.pending(source) for source, _ in members},
        list(room.changes),
        room.stored_lines,
    )


def joined_room(*names, **kwargs):
    """
    A room in which C{SOURCES[i]} joined as C{names[i]}, in order.
    """
    room = Room(**kwargs)
    for source, name in zip(SOURCES, names):
        assert room.receive(source, b"1 " + name.encode(), 0) != ILLEGAL
    return room


def drained_room(*names, **kwargs):
    """
    Like L{joined_room}, with every member's queue then polled empty.
    """
    room = joined_room(*names, **kwargs)
    for source in SOURCES[: len(names)]:
        room.receive(source, b"5", 0)
    return room


class RoomTests(SynchronousTestCase):
    """
    Tests for L{Room.receive}, one row of the protocol table at a time.
    """

    def test_first_member_gets_empty_member_list(self):
        """Joining an empty room replies with empty bytes and makes a member."""
        room = Room()
        reply = room.receive(A, b"1 Al", 0)
        self.assertEqual(
            (reply, state(room)),
            (b"", ([(A, "Al")], {A: []}, [Joined(A, "Al")], 0)),
        )

    def test_join_replies_other_names_newest_first(self):
        """C{1 Name} replies with the others' names, most recently joined first."""
        room = joined_room("Al", "Bo", "Cy")
        self.assertEqual(room.receive(D, b"1 Di\r\n", 0), b"Cy, Bo, Al")

    def test_join_queues_has_joined_for_every_other_member(self):
        """C{Name has joined} is queued for each earlier member, not the joiner."""
        room = joined_room("Al", "Bo", "Cy")
        self.assertEqual(
            state(room),
            (
                [(A, "Al"), (B, "Bo"), (C, "Cy")],
                {A: [b"Bo has joined", b"Cy has joined"], B: [b"Cy has joined"], C: []},
                [Joined(A, "Al"), Joined(B, "Bo"), Joined(C, "Cy")],
                2,
            ),
        )

    def test_join_reply_counts_names_that_do_not_fit(self):
        """When the names exceed the cap the reply ends with C{and N more}."""
        room = Room(max_reply_bytes=20, max_members=1001)
        for i in range(998):
            room.receive(("10.1.%d.%d" % divmod(i, 256), 1), b"1 m%d" % (i,), 0)
        room.receive(A, b"1 Bo", 0)
        room.receive(B, b"1 Cy", 0)
        self.assertEqual(room.receive(C, b"1 Di", 0), b"Cy, Bo, and 998 more")

    def test_join_reply_is_capped_at_1200_bytes_by_default(self):
        """By default as many names as fit in 1200 bytes are listed, then the count."""
        room = Room()
        for i in range(250):
            room.receive(("10.2.0.%d" % (i,), 1), b"1 n%03d" % (i,), 0)
        reply = room.receive(A, b"1 Al", 0)
        expected = b", ".join([b"n%03d" % (i,) for i in range(249, 51, -1)] + [b"and 52 more"])
        self.assertEqual((reply, len(reply)), (expected, 1199))

    def test_join_reply_exactly_at_cap_is_whole(self):
        """A member list exactly as long as the cap is sent whole."""
        room = joined_room("Al", "Bo", "Cy", max_reply_bytes=10)
        self.assertEqual(room.receive(D, b"1 Di", 0), b"Cy, Bo, Al")

    def test_join_from_member_is_illegal(self):
        """A member sending C{1 Name}, under any name, gets C{Illegal message}."""
        room = joined_room("Al", "Bo")
        before = state(room)
        self.assertEqual(
            ([room.receive(A, b"1 Zed", 0), room.receive(A, b"1 Al", 0), room.receive(B, b"1 Al", 0)], state(room)),
            ([ILLEGAL] * 3, before),
        )

    def test_join_with_taken_name_is_illegal(self):
        """A name is unique in the room: joining under a member's name is illegal."""
        room = joined_room("Al", "Bo")
        before = state(room)
        self.assertEqual((room.receive(C, b"1 Bo", 0), state(room)), (ILLEGAL, before))

    def test_names_are_unique_by_exact_match(self):
        """Names differing in case or normalisation only are different names."""
        room = joined_room("Al", "Zo\u00eb")
        self.assertEqual(
            [room.receive(C, b"1 al", 0), room.receive(D, "1 Zoe\u0301".encode(), 0)],
            ["Zo\u00eb, Al".encode(), "al, Zo\u00eb, Al".encode()],
        )

    def test_join_with_invalid_name_is_illegal(self):
        """Names the wire rules refuse cannot join."""
        room = joined_room("Al")
        before = state(room)
        datagrams = [b"1 ", b"1  Bo", b"1 Bo ", b"1 B,o", b"1 " + b"x" * 33, b"1 Illegal message",
                     b"1 and 3 more", "1 B\u200bo".encode(), b"1 B\x00o", b"1 \xff"]
        self.assertEqual(
            ([room.receive(B, d, 0) for d in datagrams], state(room)),
            ([ILLEGAL] * len(datagrams), before),
        )

    def test_say_queues_line_for_every_other_member(self):
        """C{2 Text} replies empty and queues C{Name: Text} for the others only."""
        room = joined_room("Al", "Bo", "Cy")
        reply = room.receive(B, b"2 hello\n", 0)
        self.assertEqual(
            (reply, state(room)[:3]),
            (
                b"",
                (
                    [(A, "Al"), (B, "Bo"), (C, "Cy")],
                    {
                        A: [b"Bo has joined", b"Cy has joined", b"Bo: hello"],
                        B: [b"Cy has joined"],
                        C: [b"Bo: hello"],
                    },
                    [Joined(A, "Al"), Joined(B, "Bo"), Joined(C, "Cy")],
                ),
            ),
        )

    def test_say_delivers_text_exactly_as_sent(self):
        """Leading spaces, tabs and trailing spaces reach the others unchanged."""
        room = drained_room("Al", "Bo")
        room.receive(B, b"2   indented", 0)
        room.receive(B, b"2 \ttab  \r\n", 0)
        room.receive(B, "2 \u202ertl, \U0001f600".encode(), 0)
        self.assertEqual(
            room.receive(A, b"5", 0),
            b"Bo:   indented\nBo: \ttab  \n" + "Bo: \u202ertl, \U0001f600".encode(),
        )

    def test_say_from_non_member_is_illegal(self):
        """C{2 Text} from a source that has not joined is illegal."""
        room = joined_room("Al")
        before = state(room)
        self.assertEqual((room.receive(B, b"2 hi", 0), state(room)), (ILLEGAL, before))

    def test_say_with_invalid_text_is_illegal(self):
        """Blank, oversized or control-laden texts are refused and queue nothing."""
        room = joined_room("Al", "Bo")
        before = state(room)
        datagrams = [
            b"2 ", b"2  ", b"2 \t", b"2 " + b"x" * 1025, b"2 a\x00b", b"2 a\rb",
            "2 a\u2028b".encode(), b"2 \xc3", b"2 hi\n\n",
        ]
        self.assertEqual(
            ([room.receive(B, d, 0) for d in datagrams], state(room)),
            ([ILLEGAL] * len(datagrams), before),
        )

    def test_member_never_receives_its_own_lines(self):
        """A member's own lines are skipped, even when it has others' lines pending."""
        room = joined_room("Al", "Bo")
        room.receive(A, b"2 a1", 0)
        room.receive(B, b"2 b1", 0)
        room.receive(A, b"2 a2", 0)
        room.receive(A, b"3 Ann", 0)
        room.receive(B, b"2 b2", 0)
        self.assertEqual(
            (room.pending(A), room.pending(B)),
            (
                [b"Bo has joined", b"Bo: b1", b"Bo: b2"],
                [b"Al: a1", b"Al: a2", b"Al changed his name to Ann"],
            ),
        )
        self.assertEqual(
            [room.receive(A, b"5", 0), room.receive(B, b"5", 0), room.receive(A, b"5", 0), room.receive(B, b"5", 0)],
            [b"Bo has joined\nBo: b1\nBo: b2", b"Al: a1\nAl: a2\nAl changed his name to Ann", b"", b""],
        )

    def test_rename_queues_line_and_keeps_join_order(self):
        """C{3 New} replies empty, queues the change for the others, keeps the member's place."""
        room = joined_room("Al", "Bo", "Cy")
        reply = room.receive(A, b"3 Ann", 0)
        self.assertEqual(
            (reply, state(room)),
            (
                b"",
                (
                    [(A, "Ann"), (B, "Bo"), (C, "Cy")],
                    {
                        A: [b"Bo has joined", b"Cy has joined"],
                        B: [b"Cy has joined", b"Al changed his name to Ann"],
                        C: [b"Al changed his name to Ann"],
                    },
                    [Joined(A, "Al"), Joined(B, "Bo"), Joined(C, "Cy"), Renamed(A, "Al", "Ann")],
                    3,
                ),
            ),
        )

    def test_renamed_member_keeps_place_in_member_list(self):
        """The reply to a join lists a renamed member where it joined, under its new name."""
        room = joined_room("Al", "Bo")
        room.receive(A, b"3 Zed", 0)
        self.assertEqual(room.receive(C, b"1 Cy", 0), b"Bo, Zed")

    def test_rename_to_own_name_is_illegal(self):
        """C{3} with the member's current name is illegal."""
        room = joined_room("Al", "Bo")
        before = state(room)
        self.assertEqual((room.receive(A, b"3 Al", 0), state(room)), (ILLEGAL, before))

    def test_rename_to_taken_name_is_illegal(self):
        """C{3} with another member's name is illegal."""
        room = joined_room("Al", "Bo")
        before = state(room)
        self.assertEqual((room.receive(A, b"3 Bo\n", 0), state(room)), (ILLEGAL, before))

    def test_rename_to_invalid_name_is_illegal(self):
        """C{3} with a name the wire rules refuse is illegal."""
        room = joined_room("Al", "Bo")
        before = state(room)
        datagrams = [
            b"3", b"3 ", b"3 A,l", b"3 Al ", b"3 and 1 more", b"3 Illegal message",
            b"3 " + b"y" * 33, "3 \u2029".encode(),
        ]
        self.assertEqual(
            ([room.receive(A, d, 0) for d in datagrams], state(room)),
            ([ILLEGAL] * len(datagrams), before),
        )

    def test_rename_from_non_member_is_illegal(self):
        """C{3 New} from a source that has not joined is illegal."""
        room = joined_room("Al")
        before = state(room)
        self.assertEqual((room.receive(B, b"3 Bo", 0), state(room)), (ILLEGAL, before))

    def test_old_name_is_free_after_rename(self):
        """Once renamed, a member's old name may be taken by another."""
        room = joined_room("Al", "Bo")
        room.receive(A, b"3 Ann", 0)
        self.assertEqual(
            (room.receive(C, b"1 Al", 0), room.receive(B, b"3 Ann", 0), room.members()),
            (b"Bo, Ann", ILLEGAL, [(A, "Ann"), (B, "Bo"), (C, "Al")]),
        )

    def test_line_keeps_name_author_had_when_sent(self):
        """Queued lines keep the author's name at the time, across renames."""
        room = drained_room("Al", "Bo")
        room.receive(B, b"2 hi", 0)
        room.receive(B, b"3 Bob", 0)
        room.receive(B, b"2 yo", 0)
        room.receive(B, b"3 Rob", 0)
        self.assertEqual(
            room.receive(A, b"5", 0),
            b"Bo: hi\nBo changed his name to Bob\nBob: yo\nBob changed his name to Rob",
        )

    def test_leave_queues_line_and_drops_leavers_queue(self):
        """C{4} replies empty, queues C{Name has left the group}, forgets the member."""
        room = joined_room("Al", "Bo", "Cy")
        reply = room.receive(B, b"4\r\n", 0)
        self.assertEqual(
            (reply, state(room)),
            (
                b"",
                (
                    [(A, "Al"), (C, "Cy")],
                    {
                        A: [b"Bo has joined", b"Cy has joined", b"Bo has left the group"],
                        C: [b"Bo has left the group"],
                    },
                    [Joined(A, "Al"), Joined(B, "Bo"), Joined(C, "Cy"), Left(B, "Bo")],
                    3,
                ),
            ),
        )

    def test_left_member_is_no_longer_a_member(self):
        """After C{4}, requests 2 to 5 from that source are illegal."""
        room = joined_room("Al", "Bo")
        room.receive(B, b"4", 0)
        before = state(room)
        self.assertEqual(
            ([room.receive(B, d, 0) for d in (b"2 hi", b"3 Bob", b"4", b"5")], state(room)),
            ([ILLEGAL] * 4, before),
        )

    def test_rejoining_starts_with_empty_queue(self):
        """A member that left and joins again sees nothing from before, and its name is free."""
        room = joined_room("Al", "Bo")
        room.receive(A, b"2 before", 0)
        room.receive(B, b"4", 0)
        room.receive(A, b"2 between", 0)
        self.assertEqual(
            (room.receive(B, b"1 Bo", 0), room.pending(B), room.receive(B, b"5", 0), room.members()),
            (b"Al", [], b"", [(A, "Al"), (B, "Bo")]),
        )

    def test_leave_from_non_member_is_illegal(self):
        """C{4} from a source that has not joined is illegal."""
        room = joined_room("Al")
        before = state(room)
        self.assertEqual((room.receive(B, b"4", 0), state(room)), (ILLEGAL, before))

    def test_last_member_can_leave(self):
        """The only member leaving empties the room."""
        room = joined_room("Al")
        self.assertEqual(
            (room.receive(A, b"4", 0), state(room)),
            (b"", ([], {}, [Joined(A, "Al"), Left(A, "Al")], 0)),
        )

    def test_fetch_returns_pending_lines_oldest_first_and_takes_them(self):
        """C{5} replies with the pending lines joined by LF, and empties the queue."""
        room = joined_room("Al", "Bo")
        room.receive(B, b"2 x", 0)
        room.receive(B, b"2 y", 0)
        reply = room.receive(A, b"5", 0)
        self.assertEqual(
            (reply, room.pending(A), room.pending(B)),
            (b"Bo has joined\nBo: x\nBo: y", [], []),
        )

    def test_fetch_with_nothing_pending_replies_empty(self):
        """C{5} with nothing queued replies with empty bytes."""
        room = joined_room("Al", "Bo")
        self.assertEqual((room.receive(B, b"5", 0), room.receive(B, b"5\n", 0)), (b"", b""))

    def test_fetch_from_non_member_is_illegal(self):
        """C{5} from a source that has not joined is illegal."""
        room = joined_room("Al")
        before = state(room)
        self.assertEqual((room.receive(B, b"5", 0), state(room)), (ILLEGAL, before))

    def test_fetch_only_takes_whole_lines_that_fit(self):
        """When the pending lines exceed the cap, the oldest that fit go now, the rest wait."""
        room = joined_room("Al", "Bo", max_reply_bytes=28)
        room.receive(B, b"2 aaaaaaaaaa", 0)
        room.receive(B, b"2 bbbbbbbbbb", 0)
        room.receive(B, b"2 cc", 0)
        first = room.receive(A, b"5", 0)  # 13 + 1 + 14 bytes: exactly the cap
        after_first = room.pending(A)
        self.assertEqual(
            (first, after_first, room.receive(A, b"5", 0), room.receive(A, b"5", 0)),
            (
                b"Bo has joined\nBo: aaaaaaaaaa",
                [b"Bo: bbbbbbbbbb", b"Bo: cc"],
                b"Bo: bbbbbbbbbb\nBo: cc",
                b"",
            ),
        )

    def test_fetch_leaves_line_that_would_overshoot_cap_by_one_byte(self):
        """A line that would make the reply one byte longer than the cap waits."""
        room = joined_room("Al", "Bo", max_reply_bytes=27)
        room.receive(B, b"2 aaaaaaaaaa", 0)
        self.assertEqual(
            (room.receive(A, b"5", 0), room.pending(A), room.receive(A, b"5", 0)),
            (b"Bo has joined", [b"Bo: aaaaaaaaaa"], b"Bo: aaaaaaaaaa"),
        )

    def test_fetch_is_capped_at_1200_bytes_by_default(self):
        """By default a reply to C{5} holds at most 1200 bytes of whole lines."""
        room = drained_room("Al", "Bo")
        text = b"t" * 1024
        room.receive(B, b"2 " + text, 0)
        room.receive(B, b"2 " + text, 0)
        room.receive(B, b"2 short", 0)
        self.assertEqual(
            [room.receive(A, b"5", 0), room.receive(A, b"5", 0), room.receive(A, b"5", 0)],
            [b"Bo: " + text, b"Bo: " + text + b"\nBo: short", b""],
        )

    def test_new_member_sees_only_lines_queued_after_joining(self):
        """A joiner's queue starts empty, whatever the others still have pending."""
        room = joined_room("Al", "Bo")
        room.receive(B, b"2 before", 0)
        room.receive(C, b"1 Cy", 0)
        room.receive(B, b"2 after", 0)
        self.assertEqual(
            (room.pending(A), room.pending(C)),
            ([b"Bo has joined", b"Bo: before", b"Cy has joined", b"Bo: after"], [b"Bo: after"]),
        )

    def test_sources_are_opaque_hashable_values(self):
        """Addresses differing only in port or family are different members."""
        room = Room()
        replies = [
            room.receive(("127.0.0.1", 4000), b"1 Al", 0),
            room.receive(("127.0.0.1", 4001), b"1 Bo", 0),
            room.receive(("::1", 5), b"1 Cy", 0),
            room.receive("anything hashable", b"1 Di", 0),
        ]
        self.assertEqual(
            (replies, room.members()),
            (
                [b"", b"Al", b"Bo, Al", b"Cy, Bo, Al"],
                [
                    (("127.0.0.1", 4000), "Al"),
                    (("127.0.0.1", 4001), "Bo"),
                    (("::1", 5), "Cy"),
                    ("anything hashable", "Di"),
                ],
            ),
        )

    def test_malformed_requests_are_illegal_and_change_nothing(self):
        """Every kind of bad request, from members and strangers, leaves the whole state alone."""
        room = joined_room("Al", "Bo", "Cy")
        room.receive(A, b"3 Ann", 0)
        room.receive(B, b"2 hi", 0)
        room.receive(C, b"5", 0)
        before = state(room)
        datagrams = [
            b"", b"\n", b"\xff\xfe", b"0", b"6", b"6 x", b" 5", b"+5", "\u0665".encode(), b"5 ", b"4 ",
            b"4 x", b"5 x", b"1", b"2", b"3", b"2 ", b"1 Bo", b"1 Cy", b"3 Bo", b"3 Ann",
            b"3 and 2 more", b"2 \x00", b"2 " + b"x" * 1025, b"5\n\n", b"2 " + b"x" * 1024 + b"\r\n\n",
        ]
        replies = [room.receive(source, d, 0) for source in (A, B, C, D) for d in datagrams]
        self.assertEqual((replies, state(room)), ([ILLEGAL] * (4 * len(datagrams)), before))

    def test_illegal_requests_leave_state_untouched(self):
        """An illegal request changes no member, name, queue, change list or storage."""
        room = joined_room("Al", "Bo", "Cy")
        room.receive(B, b"2 hi", 0)
        room.receive(C, b"3 Cyd", 0)
        room.receive(A, b"5", 0)
        before = state(room)
        datagrams = [b"1 Bo", b"1 Zed", b"3 Bo", b"3 Cyd", b"2 \x07", b"3 ,", b"4 now", b"5 please", b"7"]
        replies = [room.receive(source, d, 0) for source in (A, B, C) for d in datagrams]
        replies += [room.receive(D, d, 0) for d in (b"2 hi", b"3 Di", b"4", b"5", b"1 Bo", b"1 and 9 more")]
        self.assertEqual((replies, state(room)), ([ILLEGAL] * 33, before))

    @PROPERTY
    @given(
        st.integers(24, 1300),
        st.lists(
            st.tuples(
                st.sampled_from(SOURCES),
                st.one_of(
                    st.sampled_from(
                        [b"4", b"5", b"5", b"5\n", b"4\r\n", b"5 ", b" 5", b"", b"6", b"1", b"2 "]
                    ),
                    st.builds(
                        lambda code, name, end: code + b" " + name.encode() + end,
                        st.sampled_from([b"1", b"1", b"3"]),
                        st.one_of(
                            st.sampled_from(
                                [
                                    "Al", "Bo", "Cy", "Di", "Ed", "Zo\u00eb", "\U0001f600" * 8, "x" * 32,
                                    "Al ", "and 3 more", "Illegal message", "B,o", "\u200b",
                                ]
                            ),
                            st.text(st.characters(codec="utf-8"), min_size=1, max_size=34),
                        ),
                        st.sampled_from([b"", b"\n", b"\r\n"]),
                    ),
                    st.builds(
                        lambda text, end: b"2 " + text.encode() + end,
                        st.one_of(
                            st.sampled_from(["hi", "  hi", "\t", " ", "a\nb", "x" * 300]),
                            st.text(st.characters(codec="utf-8"), max_size=60),
                        ),
                        st.sampled_from([b"", b"\n", b"\r\n"]),
                    ),
                    st.binary(max_size=40),
                ),
            ),
            max_size=40,
        ),
    )
    def test_room_follows_protocol_table(self, cap, steps):
        """Random datagrams from a few sources get the table's replies, within the cap, never an exception."""
        room, model = Room(max_reply_bytes=cap), ModelRoom(cap)
        for source, datagram in steps:
            reply = room.receive(source, datagram, 0)
            self.assertEqual(reply, model.receive(source, datagram), (source, datagram))
            self.assertLessEqual(len(reply), cap)
            self.assertEqual(state(room)[:3], model.state())
            longest = max((len(q) for q in model.queues.values()), default=0)
            self.assertTrue(longest <= room.stored_lines <= model.broadcasts, room.stored_lines)
        # Everybody polls until nothing is left for it: then nothing is stored.
        stuck = False
        for source in list(model.names):
            for _ in range(len(steps) + 2):
                reply = room.receive(source, b"5", 0)
                self.assertEqual(reply, model.receive(source, b"5"))
                if reply == b"":
                    break
            stuck = stuck or model.queues[source] != []
        if not stuck:
            self.assertEqual((state(room)[1], room.stored_lines), ({s: [] for s in model.names}, 0))


class SharedStorageTests(SynchronousTestCase):
    """
    Tests that the room stores each line once, and only while a member needs it.
    """

    def test_room_of_one_stores_nothing(self):
        """A lone member's joins, lines and renames are stored for nobody."""
        room = Room()
        room.receive(A, b"1 Al", 0)
        for i in range(5):
            room.receive(A, b"2 line %d" % (i,), 0)
        room.receive(A, b"3 Ann", 0)
        self.assertEqual((room.stored_lines, room.pending(A), room.receive(A, b"5", 0)), (0, [], b""))

    def test_broadcast_is_stored_once_not_per_member(self):
        """K lines said in a room of N members are stored K times, not N*K."""
        names = ["m%d" % (i,) for i in range(10)]
        room = Room()
        sources = [("10.3.0.%d" % (i,), 9) for i in range(10)]
        for source, name in zip(sources, names):
            room.receive(source, b"1 " + name.encode(), 0)
        for source in sources:
            room.receive(source, b"5", 0)
        empty = room.stored_lines
        for i in range(7):
            room.receive(sources[0], b"2 news %d" % (i,), 0)
        lines = [b"m0: news %d" % (i,) for i in range(7)]
        self.assertEqual(
            (empty, room.stored_lines, [room.pending(s) for s in sources]),
            (0, 7, [[]] + [lines] * 9),
        )

    def test_lines_are_released_when_everybody_has_polled(self):
        """Once every member has polled everything, the room stores no line."""
        sources = [("10.4.0.%d" % (i,), 9) for i in range(5)]
        room = Room()
        for i, source in enumerate(sources):
            room.receive(source, b"1 m%d" % (i,), 0)
        for i, source in enumerate(sources):
            room.receive(source, b"2 from %d" % (i,), 0)
        counts = []
        for source in sources:
            room.receive(source, b"5", 0)
            counts.append(room.stored_lines)
        self.assertEqual((counts[-1], [room.pending(s) for s in sources]), (0, [[]] * 5))
        # Polling never adds to what is stored.
        self.assertEqual(counts, sorted(counts, reverse=True))

    def test_line_is_held_until_slowest_member_reads_it(self):
        """A line stays stored while any member has yet to fetch it."""
        room = drained_room("Al", "Bo", "Cy")
        room.receive(A, b"2 x", 0)
        held = [room.stored_lines]
        room.receive(B, b"5", 0)
        held.append(room.stored_lines)
        room.receive(C, b"5", 0)
        held.append(room.stored_lines)
        self.assertEqual(held, [1, 1, 0])

    def test_author_behind_on_its_queue_releases_after_polling(self):
        """An author with lines pending when it spoke lets go once it polls."""
        room = joined_room("Al", "Bo", "Cy")
        room.receive(A, b"2 hi", 0)  # Al has two joins pending
        room.receive(B, b"5", 0)
        room.receive(C, b"5", 0)
        before_al_polls = room.stored_lines
        reply = room.receive(A, b"5", 0)
        self.assertEqual(
            (before_al_polls > 0, reply, room.stored_lines),
            (True, b"Bo has joined\nCy has joined", 0),
        )

    def test_leaving_releases_lines_only_the_leaver_needed(self):
        """When a member leaves, lines nobody else is waiting for are released."""
        room = drained_room("Al", "Bo", "Cy")
        room.receive(B, b"2 x", 0)
        room.receive(B, b"2 y", 0)
        room.receive(A, b"5", 0)
        held = room.stored_lines  # only Cy still needs x and y
        room.receive(C, b"4", 0)
        self.assertEqual(
            (held, room.stored_lines, room.pending(A), room.pending(B)),
            (2, 1, [b"Cy has left the group"], [b"Cy has left the group"]),
        )

    def test_last_member_leaving_stores_nothing(self):
        """An emptied room holds no lines, whatever was pending."""
        room = joined_room("Al", "Bo", "Cy")
        room.receive(B, b"2 unread", 0)
        for source in (A, B, C):
            room.receive(source, b"4", 0)
        self.assertEqual(state(room)[:2] + (room.stored_lines,), ([], {}, 0))

    def test_many_lines_through_a_quiet_room_stay_bounded(self):
        """Thousands of lines, each fetched, never pile up in storage."""
        room = drained_room("Al", "Bo")
        peak = 0
        for i in range(3000):
            room.receive(A, b"2 %d" % (i,), 0)
            peak = max(peak, room.stored_lines)
            if i % 10 == 9:
                expected = b"\n".join(b"Al: %d" % (j,) for j in range(i - 9, i + 1))
                self.assertEqual(room.receive(B, b"5", 0), expected)
        self.assertEqual((peak, room.stored_lines), (10, 0))


class SharedLogTests(SynchronousTestCase):
    """
    Tests for L{SharedLog}, where each broadcast line is stored once.
    """

    def readers(self, log, count):
        """C{count} new readers, added to C{log} in order."""
        readers = [Reader() for _ in range(count)]
        for reader in readers:
            log.add_reader(reader)
        return readers

    def test_new_log_holds_nothing(self):
        """A new log is empty."""
        self.assertEqual(len(SharedLog()), 0)

    def test_line_without_readers_is_released_at_once(self):
        """A line appended with no reader to need it is not held."""
        log = SharedLog()
        log.append(None, b"x")
        self.assertEqual(len(log), 0)

    def test_line_is_held_until_its_reader_reads_it(self):
        """A line is held while a reader is before it, and released once read."""
        log = SharedLog()
        [reader] = self.readers(log, 1)
        log.append(None, b"x")
        held = len(log)
        self.assertEqual((held, log.read(reader, 100), reader.position, len(log)), (1, [b"x"], 1, 0))

    def test_new_reader_sees_only_later_lines(self):
        """A reader added after a line does not get it."""
        log = SharedLog()
        [first] = self.readers(log, 1)
        log.append(None, b"a")
        [second] = self.readers(log, 1)
        log.append(None, b"b")
        self.assertEqual(
            (log.read(second, 100), log.read(first, 100), len(log)),
            ([b"b"], [b"a", b"b"], 0),
        )

    def test_read_skips_readers_own_lines(self):
        """A reader is never given lines it is the author of, and reads past them."""
        log = SharedLog()
        me, other = self.readers(log, 2)
        log.append(other, b"theirs")  # "me" is now behind
        log.append(me, b"mine")
        log.append(other, b"theirs again")
        log.append(me, b"mine again")
        self.assertEqual(
            (log.peek(me), log.unread(me), log.read(me, 100), me.position, list(me.own)),
            ([b"theirs", b"theirs again"], 2, [b"theirs", b"theirs again"], 4, []),
        )

    def test_caught_up_author_skips_its_own_line_at_once(self):
        """An author with nothing unread is moved past its own line when it writes it."""
        log = SharedLog()
        me, other = self.readers(log, 2)
        log.append(me, b"mine")
        self.assertEqual((me.position, me.own, log.unread(me), log.peek(other)), (1, None, 0, [b"mine"]))

    def test_read_takes_whole_lines_that_fit(self):
        """Reading takes the oldest lines that fit the byte limit, separators included."""
        log = SharedLog()
        [reader] = self.readers(log, 1)
        for line in (b"aaaa", b"bbbb", b"cc"):
            log.append(None, line)
        first = log.read(reader, 8)
        second = log.read(reader, 9)
        self.assertEqual(
            (first, second, len(log), log.read(reader, 9), reader.position),
            ([b"aaaa"], [b"bbbb", b"cc"], 0, [], 3),
        )

    def test_line_is_held_until_every_reader_passes_it(self):
        """With two readers, a line goes only when both have read it."""
        log = SharedLog()
        r1, r2 = self.readers(log, 2)
        log.append(None, b"a")
        log.append(None, b"b")
        lengths = [len(log)]
        log.read(r1, 100)
        lengths.append(len(log))
        log.read(r2, 100)
        lengths.append(len(log))
        self.assertEqual(lengths, [2, 2, 0])

    def test_remove_reader_releases_what_only_it_needed(self):
        """Removing the slowest reader releases the lines the others have passed."""
        log = SharedLog()
        [slow] = self.readers(log, 1)
        log.append(None, b"a")
        [fast] = self.readers(log, 1)
        log.append(None, b"b")
        before = len(log)
        log.remove_reader(slow)
        after = len(log)
        self.assertEqual((before, after, log.read(fast, 100), len(log)), (2, 1, [b"b"], 0))

    def test_remove_one_of_two_readers_at_a_position(self):
        """Readers at the same position are counted: removing one keeps the lines for the other."""
        log = SharedLog()
        r1, r2 = self.readers(log, 2)
        log.append(None, b"a")
        log.remove_reader(r1)
        held = len(log)
        self.assertEqual((held, log.read(r2, 100), len(log)), (1, [b"a"], 0))

    def test_capacity_forgets_oldest_lines(self):
        """A log with a capacity never holds more lines than that, read or not."""
        log = SharedLog(capacity=3)
        [reader] = self.readers(log, 1)
        for i in range(5):
            log.append(None, b"%d" % (i,))
        self.assertEqual((len(log), log.peek(reader), log.unread(reader)), (3, [b"2", b"3", b"4"], 3))

    def test_discard_counts_forgotten_lines(self):
        """A reader behind forgotten lines loses them, and is told how many."""
        log = SharedLog(capacity=3)
        [reader] = self.readers(log, 1)
        for i in range(5):
            log.append(None, b"%d" % (i,))
        self.assertEqual(
            (log.discard(reader, 10), reader.position, log.read(reader, 100), log.discard(reader, 10)),
            (2, 2, [b"2", b"3", b"4"], 0),
        )

    def test_discard_keeps_newest_lines(self):
        """Discarding down to C{keep} lines drops the oldest unread ones."""
        log = SharedLog()
        [reader] = self.readers(log, 1)
        for i in range(5):
            log.append(None, b"%d" % (i,))
        self.assertEqual((log.discard(reader, 2), log.read(reader, 100), len(log)), (3, [b"3", b"4"], 0))

    def test_forgotten_own_lines_are_not_counted_as_lost(self):
        """A reader's own lines that the log forgot are not lines it lost."""
        log = SharedLog(capacity=4)
        me, other = self.readers(log, 2)
        log.append(other, b"o1")
        for i in range(5):
            log.append(me, b"m%d" % (i,))
        log.append(other, b"o2")
        # The log holds m2 m3 m4 o2: o1, m0 and m1 are forgotten.
        self.assertEqual(
            (me.own_forgotten, log.discard(me, 10), log.read(me, 100), list(me.own)),
            (2, 1, [b"o2"], []),
        )

    def test_discard_skips_own_lines_among_the_dropped(self):
        """Own lines are never counted toward what C{keep} keeps."""
        log = SharedLog()
        me, other = self.readers(log, 2)
        for line in (b"o1", b"m1", b"o2", b"m2", b"o3"):
            log.append(me if line.startswith(b"m") else other, line)
        self.assertEqual((log.unread(me), log.discard(me, 1), log.read(me, 100), len(log.peek(other))), (3, 2, [b"o3"], 2))

    @PROPERTY
    @given(
        st.integers(1, 6),
        st.lists(
            st.tuples(
                st.sampled_from(["add", "append", "append", "read", "remove", "discard"]),
                st.integers(0, 5),
                st.binary(min_size=1, max_size=12),
                st.integers(0, 40),
            ),
            max_size=80,
        ),
    )
    def test_log_agrees_with_a_list_per_reader(self, capacity, operations):
        """Any mix of operations gives what a naive list of lines gives, and holds only what is needed."""
        log = SharedLog(capacity=capacity)
        lines = []  # (author, line), all ever appended
        readers = {}  # Reader -> index into lines
        order = []
        for op, which, line, limit in operations:
            if op == "add":
                reader = Reader()
                log.add_reader(reader)
                readers[reader] = len(lines)
                order.append(reader)
            elif op == "append":
                author = order[which % len(order)] if order and which < 4 else None
                log.append(author, line)
                if author is not None and readers[author] == len(lines):
                    readers[author] += 1
                lines.append((author, line))
            elif not order:
                continue
            else:
                reader = order[which % len(order)]
                position = max(readers[reader], len(lines) - capacity)
                if op == "remove":
                    log.remove_reader(reader)
                    del readers[reader]
                    order.remove(reader)
                    continue
                if op == "discard":
                    theirs = [i for i in range(position, len(lines)) if lines[i][0] is not reader]
                    lost = len([i for i in range(readers[reader], position) if lines[i][0] is not reader])
                    dropped = theirs[: max(0, len(theirs) - limit)]
                    self.assertEqual(log.discard(reader, limit), lost + len(dropped))
                    readers[reader] = dropped[-1] + 1 if dropped else position
                    continue
                log.discard(reader, len(lines))
                taken, size, index = [], -1, position
                while index < len(lines):
                    author, text = lines[index]
                    if author is not reader:
                        size += 1 + len(text)
                        if size > limit:
                            break
                        taken.append(text)
                    index += 1
                self.assertEqual(log.read(reader, limit), taken)
                readers[reader] = index
            held = len(lines) - max(min(readers.values(), default=len(lines)), len(lines) - capacity)
            self.assertEqual(
                (len(log), [log.peek(r) for r in order]),
                (
                    held,
                    [
                        [text for author, text in lines[max(readers[r], len(lines) - capacity) :] if author is not r]
                        for r in order
                    ],
                ),
            )

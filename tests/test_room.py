"""
Tests for L{udpchat.room}: the protocol table, applied to bytes in and out.
"""

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from udpchat.room import Changes, Expired, Joined, Left, MemberState, Renamed, Room
from udpchat.wire import ILLEGAL

from tests.model import ModelRoom, replica

PROPERTY = settings(max_examples=200, deadline=None)

A = ("127.0.0.1", 4000)
B = ("127.0.0.1", 4001)
C = ("::1", 5)
D = ("10.0.0.4", 4000)
E = ("::ffff:127.0.0.1", 4000)
SOURCES = (A, B, C, D, E)


def held(room):
    """
    What the room holds, in one comparable value: its members, what each
    has pending, and how many lines it stores.
    """
    members = room.members()
    return (members, {source: room.pending(source) for source, _ in members}, room.stored_lines)


def state(room):
    """
    Everything the room lets a test observe, in one comparable value: its
    members, what each has pending, what it reports changed since it last
    reported (which it then reports no more), and how many lines it holds.
    """
    members, pending, stored = held(room)
    return (members, pending, room.take_changes(), stored)


def settled_state(room):
    """
    L{state} once the room has reported its changes: what a request that
    changes nothing leaves as it was.
    """
    room.take_changes()
    return state(room)


def reported(events, first, next_id):
    """
    What a room that does not track state reports: its events, where its
    log starts and the id the next member gets.
    """
    return Changes(events, [], [], [], first, next_id)


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
            (b"", ([(A, "Al")], {A: []}, reported([Joined(A, "Al")], 1, 1), 0)),
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
                reported([Joined(A, "Al"), Joined(B, "Bo"), Joined(C, "Cy")], 1, 3),
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
        room = joined_room("Al", "Bo", track_state=True)
        before = settled_state(room)
        self.assertEqual(
            ([room.receive(A, b"1 Zed", 0), room.receive(A, b"1 Al", 0), room.receive(B, b"1 Al", 0)], state(room)),
            ([ILLEGAL] * 3, before),
        )

    def test_join_with_taken_name_is_illegal(self):
        """A name is unique in the room: joining under a member's name is illegal."""
        room = joined_room("Al", "Bo", track_state=True)
        before = settled_state(room)
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
        room = joined_room("Al", track_state=True)
        before = settled_state(room)
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
            (reply, state(room)),
            (
                b"",
                (
                    [(A, "Al"), (B, "Bo"), (C, "Cy")],
                    {
                        A: [b"Bo has joined", b"Cy has joined", b"Bo: hello"],
                        B: [b"Cy has joined"],
                        C: [b"Bo: hello"],
                    },
                    reported([Joined(A, "Al"), Joined(B, "Bo"), Joined(C, "Cy")], 1, 3),
                    3,
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
        room = joined_room("Al", track_state=True)
        before = settled_state(room)
        self.assertEqual((room.receive(B, b"2 hi", 0), state(room)), (ILLEGAL, before))

    def test_say_with_invalid_text_is_illegal(self):
        """Blank, oversized or control-laden texts are refused and queue nothing."""
        room = joined_room("Al", "Bo", track_state=True)
        before = settled_state(room)
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
                    reported([Joined(A, "Al"), Joined(B, "Bo"), Joined(C, "Cy"), Renamed(A, "Al", "Ann")], 1, 3),
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
        room = joined_room("Al", "Bo", track_state=True)
        before = settled_state(room)
        self.assertEqual((room.receive(A, b"3 Al", 0), state(room)), (ILLEGAL, before))

    def test_rename_to_taken_name_is_illegal(self):
        """C{3} with another member's name is illegal."""
        room = joined_room("Al", "Bo", track_state=True)
        before = settled_state(room)
        self.assertEqual((room.receive(A, b"3 Bo\n", 0), state(room)), (ILLEGAL, before))

    def test_rename_to_invalid_name_is_illegal(self):
        """C{3} with a name the wire rules refuse is illegal."""
        room = joined_room("Al", "Bo", track_state=True)
        before = settled_state(room)
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
        room = joined_room("Al", track_state=True)
        before = settled_state(room)
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
                    reported([Joined(A, "Al"), Joined(B, "Bo"), Joined(C, "Cy"), Left(B, "Bo")], 1, 3),
                    3,
                ),
            ),
        )

    def test_left_member_is_no_longer_a_member(self):
        """After C{4}, requests 2 to 5 from that source are illegal."""
        room = joined_room("Al", "Bo", track_state=True)
        room.receive(B, b"4", 0)
        before = settled_state(room)
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
        room = joined_room("Al", track_state=True)
        before = settled_state(room)
        self.assertEqual((room.receive(B, b"4", 0), state(room)), (ILLEGAL, before))

    def test_last_member_can_leave(self):
        """The only member leaving empties the room."""
        room = joined_room("Al")
        self.assertEqual(
            (room.receive(A, b"4", 0), state(room)),
            (b"", ([], {}, reported([Joined(A, "Al"), Left(A, "Al")], 2, 1), 0)),
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
        room = joined_room("Al", track_state=True)
        before = settled_state(room)
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
        room = joined_room("Al", "Bo", "Cy", track_state=True)
        room.receive(A, b"3 Ann", 0)
        room.receive(B, b"2 hi", 0)
        room.receive(C, b"5", 0)
        before = settled_state(room)
        datagrams = [
            b"", b"\n", b"\xff\xfe", b"0", b"6", b"6 x", b" 5", b"+5", "\u0665".encode(), b"5 ", b"4 ",
            b"4 x", b"5 x", b"1", b"2", b"3", b"2 ", b"1 Bo", b"1 Cy", b"3 Bo", b"3 Ann",
            b"3 and 2 more", b"2 \x00", b"2 " + b"x" * 1025, b"5\n\n", b"2 " + b"x" * 1024 + b"\r\n\n",
        ]
        replies = [room.receive(source, d, 0) for source in (A, B, C, D) for d in datagrams]
        self.assertEqual((replies, state(room)), ([ILLEGAL] * (4 * len(datagrams)), before))

    def test_illegal_requests_leave_state_untouched(self):
        """An illegal request changes no member, name, queue, change list or storage."""
        room = joined_room("Al", "Bo", "Cy", track_state=True)
        room.receive(B, b"2 hi", 0)
        room.receive(C, b"3 Cyd", 0)
        room.receive(A, b"5", 0)
        before = settled_state(room)
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
        """Random datagrams from a few sources get the table's replies, within the cap, never an exception; what the room reports changed rebuilds it."""
        room, model = Room(max_reply_bytes=cap, track_state=True), ModelRoom(cap)
        known = room.take_changes()

        def request(source, datagram):
            # The room and the model answer alike; then a room rebuilt from
            # all the room reported holds what the room holds.
            nonlocal known
            reply = room.receive(source, datagram, 0)
            self.assertEqual(reply, model.receive(source, datagram), (source, datagram))
            self.assertLessEqual(len(reply or b""), cap)  # None: no reply
            changes = room.take_changes()
            known = known.then(changes)
            copy = replica(known, max_reply_bytes=cap)
            # Every member's whole state, which a later poll could reveal.
            everyone = room.take_changes(everyone=True)
            known = known.then(everyone)
            self.assertEqual(
                (held(room)[:2], changes.events, held(copy), copy.take_changes(everyone=True)),
                (model.state(), model.take_events(), held(room), everyone),
            )
            return reply

        for source, datagram in steps:
            request(source, datagram)
            longest = max((len(q) for q in model.queues.values()), default=0)
            self.assertTrue(longest <= room.stored_lines <= model.broadcasts, room.stored_lines)
        # Everybody polls until nothing is left for it: then nothing is stored.
        stuck = False
        for source in list(model.names):
            for _ in range(len(steps) + 2):
                if request(source, b"5") == b"":
                    break
            stuck = stuck or model.queues[source] != []
        if not stuck:
            self.assertEqual(held(room)[1:], ({s: [] for s in model.names}, 0))


class TakeChangesTests(SynchronousTestCase):
    """
    Tests for L{Room.take_changes}: what changed, handed out once, as one
    value, for the adapter to pass to the log and the store.
    """

    def tracked(self, *joins, **kwargs):
        """
        A room that tracks its state, in which C{SOURCES[i]} joined at time
        C{joins[i][1]} as C{joins[i][0]}, its joins already reported.
        """
        room = Room(track_state=True, **kwargs)
        for source, (name, now) in zip(SOURCES, joins):
            room.receive(source, b"1 " + name.encode(), now)
        room.take_changes()
        return room

    def test_untracked_room_reports_events_only(self):
        """Without track_state, the changes are the events and the numbering, even for everyone."""
        room = Room()
        for source, datagram in [(A, b"1 Al"), (B, b"1 Bo"), (B, b"2 hi"), (A, b"5")]:
            room.receive(source, datagram, 0)
        self.assertEqual(
            (room.take_changes(), room.take_changes(everyone=True)),
            (reported([Joined(A, "Al"), Joined(B, "Bo")], 3, 2), reported([], 3, 2)),
        )

    def test_join_reports_the_member_and_the_line(self):
        """A join reports the event, the new member's whole state, and the line the others will read."""
        room = Room(track_state=True)
        room.receive(A, b"1 Al", 5)
        first = room.take_changes()
        room.receive(B, b"1 Bo", 6)
        self.assertEqual(
            (first, room.take_changes()),
            (
                Changes([Joined(A, "Al")], [MemberState(0, A, "Al", 1, 0, 5)], [], [], 1, 1),
                Changes(
                    [Joined(B, "Bo")],
                    [MemberState(1, B, "Bo", 2, 0, 6)],
                    [],
                    [(1, None, b"Bo has joined")],
                    1,
                    2,
                ),
            ),
        )

    def test_each_change_is_reported_once(self):
        """Once taken, changes are not reported again."""
        room = self.tracked(("Al", 0), ("Bo", 0))
        self.assertEqual(room.take_changes(), Changes([], [], [], [], 1, 2))

    def test_say_reports_the_line_and_a_caught_up_author(self):
        """A line is reported with its author's id; an author with nothing unread is reported moved past it."""
        room = self.tracked(("Al", 0), ("Bo", 0))
        room.receive(A, b"5", 1)
        room.take_changes()
        room.receive(A, b"2 hi", 7)
        caught_up = room.take_changes()
        room.receive(B, b"2 yo", 8)  # Bo has "Al: hi" unread: it stays put
        self.assertEqual(
            (caught_up, room.take_changes()),
            (
                Changes([], [MemberState(0, A, "Al", 3, 0, 7)], [], [(2, 0, b"Al: hi")], 2, 2),
                Changes([], [], [], [(3, 1, b"Bo: yo")], 2, 2),
            ),
        )

    def test_fetch_reports_the_new_position(self):
        """A poll that takes lines reports the member's new position; a poll with nothing new reports nothing."""
        room = self.tracked(("Al", 0), ("Bo", 0))
        room.receive(B, b"2 x", 1)
        room.take_changes()
        reply = room.receive(A, b"5", 3)
        fetched = room.take_changes()
        room.receive(A, b"5", 4)
        self.assertEqual(
            (reply, fetched, room.take_changes()),
            (
                b"Bo has joined\nBo: x",
                Changes([], [MemberState(0, A, "Al", 3, 0, 3)], [], [], 3, 2),
                Changes([], [], [], [], 3, 2),
            ),
        )

    def test_rename_reports_the_new_name(self):
        """A rename reports the event, the member under its new name, and the line."""
        room = self.tracked(("Al", 0), ("Bo", 0))
        room.receive(A, b"3 Ann", 2)
        self.assertEqual(
            room.take_changes(),
            Changes(
                [Renamed(A, "Al", "Ann")],
                [MemberState(0, A, "Ann", 1, 0, 2)],
                [],
                [(2, 0, b"Al changed his name to Ann")],
                1,
                2,
            ),
        )

    def test_leave_reports_the_member_removed(self):
        """A leave reports the event, the id of the member removed, and the line."""
        room = self.tracked(("Al", 0), ("Bo", 0))
        room.receive(B, b"4", 3)
        self.assertEqual(
            room.take_changes(),
            Changes([Left(B, "Bo")], [], [1], [(2, None, b"Bo has left the group")], 1, 2),
        )

    def test_expiry_reports_the_member_removed(self):
        """An expired member is reported removed, as if it had left."""
        room = self.tracked(("Al", 0), ("Bo", 5), idle_timeout=10)
        room.expire(10)
        self.assertEqual(
            room.take_changes(),
            Changes([Expired(A, "Al")], [], [0], [(2, None, b"Al has left the group")], 2, 2),
        )

    def test_everyone_reports_every_member_with_its_idle_time(self):
        """Requests that change only when a member was heard from are reported for everyone only."""
        room = self.tracked(("Al", 0), ("Bo", 1))
        room.receive(A, b"5", 5)
        room.take_changes()
        room.receive(B, b"5", 6)  # nothing new for Bo
        room.receive(A, b"junk", 7)
        self.assertEqual(
            (room.take_changes(), room.take_changes(everyone=True)),
            (
                Changes([], [], [], [], 2, 2),
                Changes(
                    [], [MemberState(0, A, "Al", 2, 0, 7), MemberState(1, B, "Bo", 2, 0, 6)], [], [], 2, 2
                ),
            ),
        )

    def test_member_whose_own_line_was_forgotten_is_reported(self):
        """When the log forgets a member's own unread line, the member is reported with its new position."""
        room = self.tracked(("Al", 0), ("Bo", 0), max_pending=1)  # the log holds 2 lines
        room.receive(A, b"2 a1", 0)
        room.receive(A, b"2 a2", 0)  # "Bo has joined" forgotten: Al lost it
        lines = room.take_changes()
        room.receive(A, b"2 a3", 0)  # a1 forgotten: Al's own
        self.assertEqual(
            (lines, room.take_changes(), room.receive(A, b"5", 0)),
            (
                Changes([], [], [], [(2, 0, b"Al: a1"), (3, 0, b"Al: a2")], 2, 2),
                Changes([], [MemberState(0, A, "Al", 2, 0, 0)], [], [(4, 0, b"Al: a3")], 3, 2),
                b"[1 line dropped]",
            ),
        )

    def test_then_merges_changes_in_order(self):
        """Changes followed by later ones: all events, the latest state of members not removed, the lines still held."""
        earlier = Changes(
            [Joined(B, "Bo")],
            [MemberState(0, A, "Al", 1, 0, 0), MemberState(1, B, "Bo", 1, 0, 0)],
            [],
            [(1, 0, b"x"), (2, 1, b"y")],
            1,
            2,
        )
        later = Changes([Left(B, "Bo")], [MemberState(0, A, "Ann", 3, 0, 1)], [1], [(3, None, b"z")], 2, 3)
        self.assertEqual(
            earlier.then(later),
            Changes(
                [Joined(B, "Bo"), Left(B, "Bo")],
                [MemberState(0, A, "Ann", 3, 0, 1)],
                [1],
                [(2, 1, b"y"), (3, None, b"z")],
                2,
                3,
            ),
        )

    def test_changes_are_true_when_something_changed(self):
        """Changes are false when they hold nothing to save but the numbering."""
        self.assertEqual(
            [
                bool(Changes([], [], [], [], 4, 5)),
                bool(Changes([Joined(A, "Al")], [], [], [], 0, 0)),
                bool(Changes([], [MemberState(0, A, "Al", 1, 0, 0)], [], [], 0, 0)),
                bool(Changes([], [], [0], [], 0, 0)),
                bool(Changes([], [], [], [(0, None, b"x")], 0, 0)),
            ],
            [False, True, True, True, True],
        )

    def test_restored_room_reports_no_change(self):
        """A room rebuilt from what another reported has nothing to report itself."""
        room = Room(track_state=True)
        for source, datagram, now in [(A, b"1 Al", 0), (B, b"1 Bo", 1), (A, b"2 hi", 2)]:
            room.receive(source, datagram, now)
        copy = replica(room.take_changes())  # all since it was made
        self.assertEqual(
            (copy.take_changes(), held(copy)),
            (Changes([], [], [], [], 1, 2), held(room)),
        )

    def test_restore_into_a_smaller_log_reports_the_members_it_moved(self):
        """Restored with a smaller backlog, the room reports the members whose own lines it forgot, so a second restart counts only the lines they lost."""
        room = Room(track_state=True, max_pending=50, idle_timeout=0)
        room.receive(A, b"1 Al", 0)
        room.receive(B, b"1 Bo", 0)
        for i in range(80):
            room.receive(A, b"2 %d" % (i,), 0)  # Al still has "Bo has joined" unread
        known = room.take_changes()  # all since it was made
        first = replica(known, max_pending=2, idle_timeout=0)
        moved = first.take_changes()
        second = replica(known.then(moved), max_pending=2, idle_timeout=0)
        polls = [b"[1 line dropped]", b"[78 lines dropped]\nAl: 78\nAl: 79"]
        self.assertEqual(
            (moved, [second.receive(s, b"5", 0) for s in (A, B)], [first.receive(s, b"5", 0) for s in (A, B)]),
            (Changes([], [MemberState(0, A, "Al", 77, 0, 0)], [], [], 78, 2), polls, polls),
        )


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


def counting_tokens():
    """Tokens 0, 1, 2... as 32 hex digits: randomness injected, and fixed."""
    count = iter(range(10**6))
    return lambda: b"%032x" % next(count)


TOKENS = [b"%032x" % i for i in range(4)]
NONCES = [b"%032x" % (0xABC0 + i) for i in range(3)]


def session_datagrams():
    """Session requests as a client (or a confused one) might send them."""
    token, seq = st.sampled_from(TOKENS), st.integers(0, 5)  # 0: malformed
    return st.one_of(
        st.builds(lambda n, name: b"6 %s %s" % (n, name), st.sampled_from(NONCES), st.sampled_from([b"Al", b"Bo", b"Sy"])),
        st.builds(lambda t, q, text: b"7 %s %d %s" % (t, q, text), token, seq, st.sampled_from([b"hi", b"x" * 200])),
        st.builds(lambda t, q, p: b"8 %s %d %d" % (t, q, p), token, seq, st.integers(0, 30)),
        st.builds(lambda t, q, name: b"9 %s %d %s" % (t, q, name), token, seq, st.sampled_from([b"Al", b"Ty"])),
        st.builds(lambda t, q: b"0 %s %d" % (t, q), token, seq),
    )


class SessionModelTests(SynchronousTestCase):
    """
    The room with sessions against the model: repeats, reordering and
    duplicates (random numbers and positions), roaming (random sources),
    legacy requests from a session's address, the backlog cap and the log's
    capacity (a small C{max_pending}), and unproven addresses.
    """

    @PROPERTY
    @given(
        st.integers(60, 1300),
        st.integers(1, 6),
        st.booleans(),
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
    def test_room_with_sessions_follows_the_model(self, cap, max_pending, sessions_only, steps):
        """Random session and 1.0 datagrams from a few sources, at advancing times: the room and the model reply alike, report the same events, hold the same; what the room reports rebuilds it."""
        options = dict(max_reply_bytes=cap, max_pending=max_pending, idle_timeout=5, sessions_only=sessions_only)
        room = Room(track_state=True, new_token=counting_tokens(), **options)
        model = ModelRoom(cap, max_pending=max_pending, idle_timeout=5, new_token=counting_tokens(), sessions_only=sessions_only)
        known = room.take_changes()
        now = 0
        for source, datagram, wait in steps:
            now += wait
            reply = room.receive(source, datagram, now)
            self.assertEqual(reply, model.receive(source, datagram, now), (source, datagram))
            self.assertLessEqual(len(reply or b""), cap)
            changes = room.take_changes()
            self.assertEqual(changes.events, model.take_events())
            self.assertEqual(held(room)[:2], model.state())
            known = known.then(changes)
            copy = replica(known, **options)
            everyone = room.take_changes(everyone=True)
            known = known.then(everyone)
            # Idle timers are reported only with everyone (they change with
            # every request): the rest of each member is reported as it
            # changes.
            self.assertEqual(
                (held(copy), timeless(copy.take_changes(everyone=True))), (held(room), timeless(everyone))
            )


def timeless(changes):
    """The members of C{changes}, their idle timers left out."""
    return sorted(state._replace(last_seen=None) for state in changes.members)


class SessionTests(SynchronousTestCase):
    """Sessions, rule by rule (README.rst, Sessions)."""

    def setUp(self):
        self.room = Room(new_token=counting_tokens())

    def receive(self, source, datagram):
        return self.room.receive(source, datagram, 0)

    def test_registration_is_answered_with_a_token_and_a_position(self):
        """6 Nonce Name joins like 1 Name and replies 0 Token Position, and the others' names."""
        self.receive(B, b"1 Bo")
        reply = self.receive(A, b"6 %s Al" % NONCES[0])
        self.assertEqual((reply, self.receive(B, b"5")), (b"0 %s 2\nBo" % TOKENS[0], b"Al has joined"))

    def test_repeated_registration_gets_the_same_reply_and_joins_once(self):
        """A repeat of the registration (its reply was lost) gets the same reply, and nobody sees a second join."""
        first = self.receive(A, b"6 %s Al" % NONCES[0])
        self.receive(B, b"1 Bo")
        again = self.receive(A, b"6 %s Al" % NONCES[0])
        self.assertEqual((again, self.room.members()), (first, [(A, "Al"), (B, "Bo")]))

    def test_repeated_say_is_queued_once(self):
        """7 with the same number twice: one line, the same acknowledgement."""
        self.receive(A, b"6 %s Al" % NONCES[0])
        self.receive(B, b"1 Bo")
        replies = [self.receive(A, b"7 %s 1 hi" % TOKENS[0]) for _ in range(3)]
        self.assertEqual((replies, self.receive(B, b"5")), ([b"1"] * 3, b"Al: hi"))

    def test_lost_poll_reply_is_repaired_by_repeating_the_poll(self):
        """A poll names what arrived: repeating it gets the same lines; the next one releases them."""
        self.receive(A, b"6 %s Al" % NONCES[0])
        self.receive(B, b"1 Bo")
        self.receive(B, b"2 one")
        first = self.receive(A, b"8 %s 1 1" % TOKENS[0])
        again = self.receive(A, b"8 %s 1 1" % TOKENS[0])
        self.receive(B, b"2 two")
        later = self.receive(A, b"8 %s 2 3" % TOKENS[0])
        self.assertEqual((first, again, later), (b"1 3\nBo has joined\nBo: one", first, b"2 4\nBo: two"))

    def test_older_request_gets_no_reply_and_changes_nothing(self):
        """A request older than the newest seen (reordered, or a late duplicate) is ignored."""
        self.receive(A, b"6 %s Al" % NONCES[0])
        self.receive(B, b"1 Bo")
        self.receive(A, b"7 %s 2 new" % TOKENS[0])
        self.assertEqual(
            (self.receive(A, b"7 %s 1 old" % TOKENS[0]), self.receive(B, b"5")), (None, b"Al: new")
        )

    def test_roaming_moves_the_member_without_a_join_or_leave(self):
        """A valid request from a new address moves the member; nobody is told."""
        self.receive(A, b"6 %s Al" % NONCES[0])
        self.receive(B, b"1 Bo")
        self.receive(A, b"8 %s 1 1" % TOKENS[0])  # its address has shown it receives
        self.assertEqual(self.receive(D, b"7 %s 2 from afar" % TOKENS[0]), b"2")
        self.assertEqual(
            (self.room.members(), self.receive(B, b"5"), self.receive(A, b"5")),
            ([(D, "Al"), (B, "Bo")], b"Al: from afar", ILLEGAL),
        )

    def test_older_request_from_a_new_address_does_not_move_the_member(self):
        """Only a request not older than the newest seen may move a member."""
        self.receive(A, b"6 %s Al" % NONCES[0])
        self.receive(A, b"7 %s 2 hi" % TOKENS[0])
        self.assertEqual((self.receive(D, b"7 %s 1 old" % TOKENS[0]), self.room.members()), (None, [(A, "Al")]))

    def test_legacy_requests_from_a_session_members_address_are_refused(self):
        """2 to 5 from the address of a session member change nothing: only the token acts for it."""
        self.receive(A, b"6 %s Al" % NONCES[0])
        self.receive(B, b"1 Bo")
        replies = [self.receive(A, d) for d in (b"2 forged", b"3 Evil", b"4", b"5", b"1 Al2")]
        self.assertEqual(
            (replies, self.room.members(), self.receive(B, b"5")),
            ([ILLEGAL] * 5, [(A, "Al"), (B, "Bo")], b""),
        )

    def test_repeated_poll_tells_of_the_dropped_lines_its_first_reply_told(self):
        """Whichever reply to a poll arrives, its notice counts the same lines: drops since are told by the next poll."""
        self.room = Room(new_token=counting_tokens(), max_pending=2)
        self.receive(A, b"6 %s Al" % NONCES[0])
        self.receive(B, b"1 Bo")
        for text in (b"a", b"b", b"c"):
            self.receive(B, b"2 " + text)
        first = self.receive(A, b"8 %s 1 1" % TOKENS[0])  # Bo's join and a dropped
        for text in (b"d", b"e"):
            self.receive(B, b"2 " + text)
        again = self.receive(A, b"8 %s 1 1" % TOKENS[0])
        position = int(first.split(b"\n")[0].split()[1])
        later = self.receive(A, b"8 %s 2 %d" % (TOKENS[0], position))
        self.assertEqual(
            (first, again, later),
            (b"1 5\n[2 lines dropped]\nBo: b\nBo: c", b"1 7\n[2 lines dropped]\nBo: d\nBo: e", b"2 7\n[2 lines dropped]\nBo: d\nBo: e"),
        )

    def test_unknown_token_is_told(self):
        """A request with a token no session has: Seq unknown, so that the client registers again."""
        self.assertEqual(self.receive(A, b"8 %s 4 0" % TOKENS[3]), b"4 unknown")

    def test_leave_ends_the_session(self):
        """0 leaves as 4 does; a repeat then finds no session."""
        self.receive(A, b"6 %s Al" % NONCES[0])
        self.receive(B, b"1 Bo")
        self.assertEqual(
            (self.receive(A, b"0 %s 1" % TOKENS[0]), self.receive(A, b"0 %s 1" % TOKENS[0]), self.receive(B, b"5")),
            (b"1", b"1 unknown", b"Al has left the group"),
        )

    def test_unproven_address_gets_at_most_three_times_what_it_sent(self):
        """After a move, replies to the new address add up to at most 3x the bytes from it, until it shows it receives."""
        self.room = Room(new_token=counting_tokens())
        self.receive(A, b"6 %s Al" % NONCES[0])
        self.receive(B, b"1 Bo")
        self.receive(A, b"8 %s 1 1" % TOKENS[0])
        for n in range(20):
            self.receive(B, b"2 " + b"%02d" % n + b"x" * 100)
        poll = b"8 %s 2 2" % TOKENS[0]
        moved = self.receive(D, poll)
        again = self.receive(D, poll)
        position = int(again.split(b"\n")[0].split()[1])
        proven = self.receive(D, b"8 %s 3 %d" % (TOKENS[0], position))
        self.assertLessEqual(len(moved) + len(again), 3 * 2 * len(poll))
        self.assertGreater(len(proven), 3 * len(poll))

    def test_sessions_only_refuses_join(self):
        """With sessions_only, 1 Name is refused and 6 Nonce Name accepted."""
        self.room = Room(new_token=counting_tokens(), sessions_only=True)
        self.assertEqual(
            (self.receive(A, b"1 Al"), self.receive(B, b"6 %s Bo" % NONCES[0])), (ILLEGAL, b"0 %s 1" % TOKENS[0])
        )

    def test_idle_timeout_counts_from_the_last_valid_session_request(self):
        """Forged legacy requests from its address do not keep a session member; its session requests do."""
        self.room = Room(new_token=counting_tokens(), idle_timeout=10)
        self.room.receive(A, b"6 %s Al" % NONCES[0], 0)
        self.room.receive(A, b"5", 9)
        self.room.receive(B, b"1 Bo", 11)
        self.assertEqual(self.room.members(), [(B, "Bo")])


class RegistrationRefusalTests(SynchronousTestCase):
    """A registration refused by a server with sessions says so in the session's words."""

    def test_taken_name_is_refused_in_the_sessions_words(self):
        """0 refused name taken, never Illegal message (which means a server without sessions)."""
        room = Room(max_members=2, new_token=counting_tokens())
        room.receive(A, b"1 Al", 0)
        self.assertEqual(
            [
                room.receive(B, b"6 %s Al" % NONCES[0], 0),
                room.receive(A, b"6 %s Zed" % NONCES[1], 0),
                room.receive(C, b"1 Cy", 0) and room.receive(D, b"6 %s Di" % NONCES[2], 0),
            ],
            [b"0 refused name taken", b"0 refused already a member", b"0 refused room full"],
        )

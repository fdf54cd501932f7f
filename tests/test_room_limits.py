"""
Tests for the limits the room enforces itself: room size, members per group
of addresses, backlog length, idle members.  The traffic limits, which act
before the room, are in test_limits.
"""

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from udpchat.room import Changes, Expired, Room
from udpchat.wire import ILLEGAL

from tests.model import ModelRoom, replica


def source(i, network=0):
    """A distinct member address, in group C{network}."""
    return (f"10.{network}.{i // 250}.{i % 250 + 1}", 5000)


def by_network(address):
    """Group addresses by their second octet, as the tests build them."""
    return address[0].split(".")[1]


def join_all(room, count, network=0, now=0):
    return [room.receive(source(i, network), b"1 n%d.%d" % (network, i), now) for i in range(count)]


class RoomSizeTests(SynchronousTestCase):
    """
    C{max_members} and C{max_members_per_group} refuse registrations.
    """

    def test_room_fills_up_to_max_members(self):
        """Registrations up to the limit are accepted, the next one is not."""
        room = Room(max_members=3)
        replies = join_all(room, 4)
        self.assertEqual((ILLEGAL in replies[:3], replies[3], len(room.members())), (False, ILLEGAL, 3))

    def test_place_freed_by_leaving_can_be_taken(self):
        """A full room takes a new member once one has left."""
        room = Room(max_members=2)
        join_all(room, 2)
        room.receive(source(0), b"4", 0)
        self.assertNotEqual(room.receive(source(7), b"1 New", 0), ILLEGAL)

    def test_group_is_limited_within_the_room(self):
        """One group of addresses gets at most its share; other groups still join."""
        room = Room(max_members=10, group_of=by_network, max_members_per_group=2)
        first = join_all(room, 3, network=1)
        second = join_all(room, 2, network=2)
        self.assertEqual(
            ([r == ILLEGAL for r in first], [r == ILLEGAL for r in second]),
            ([False, False, True], [False, False]),
        )

    def test_ungrouped_sources_are_not_limited_per_group(self):
        """A source whose group is None (an exempt one) counts against no group."""
        room = Room(max_members=10, group_of=lambda s: None, max_members_per_group=1)
        self.assertNotIn(ILLEGAL, join_all(room, 5))

    def test_group_place_is_freed_by_leaving(self):
        """A member leaving frees a place in its group."""
        room = Room(group_of=by_network, max_members_per_group=1)
        join_all(room, 1, network=3)
        refused = room.receive(source(1, 3), b"1 Other", 0)
        room.receive(source(0, 3), b"4", 0)
        self.assertEqual((refused, room.receive(source(1, 3), b"1 Other", 0)), (ILLEGAL, b""))


class BacklogTests(SynchronousTestCase):
    """
    C{max_pending} bounds a member's backlog; the member is told what it lost.
    """

    def room(self, max_pending, **kwargs):
        room = Room(max_pending=max_pending, **kwargs)
        room.receive(source(0), b"1 Al", 0)
        room.receive(source(1), b"1 Bo", 0)
        room.receive(source(0), b"5", 0)
        return room

    def say(self, room, count, who=0):
        for i in range(count):
            self.assertEqual(room.receive(source(who), b"2 %d" % (i,), 0), b"")

    def test_backlog_at_its_limit_loses_nothing(self):
        """Exactly max_pending lines are all delivered, with no notice."""
        room = self.room(3)
        room.receive(source(1), b"5", 0)
        self.say(room, 3)
        self.assertEqual(room.receive(source(1), b"5", 0), b"Al: 0\nAl: 1\nAl: 2")

    def test_one_line_over_drops_the_oldest(self):
        """One line too many drops the oldest and says so, singular."""
        room = self.room(3)
        room.receive(source(1), b"5", 0)
        self.say(room, 4)
        self.assertEqual(room.receive(source(1), b"5", 0), b"[1 line dropped]\nAl: 1\nAl: 2\nAl: 3")

    def test_many_over_counts_every_dropped_line(self):
        """Far beyond the limit, the notice counts every line lost, once."""
        room = self.room(3)
        room.receive(source(1), b"5", 0)
        self.say(room, 50)
        self.assertEqual(
            (room.receive(source(1), b"5", 0), room.receive(source(1), b"5", 0)),
            (b"[47 lines dropped]\nAl: 47\nAl: 48\nAl: 49", b""),
        )

    def test_notice_counts_drops_since_the_last_notice(self):
        """A second overflow is counted afresh."""
        room = self.room(2)
        room.receive(source(1), b"5", 0)
        self.say(room, 4)
        first = room.receive(source(1), b"5", 0)
        self.say(room, 5)
        self.assertEqual(
            (first, room.receive(source(1), b"5", 0)),
            (b"[2 lines dropped]\nAl: 2\nAl: 3", b"[3 lines dropped]\nAl: 3\nAl: 4"),
        )

    def test_notice_counts_toward_the_reply_cap(self):
        """With the notice, the reply still fits the cap; the rest waits."""
        room = self.room(3, max_reply_bytes=30)
        room.receive(source(1), b"5", 0)
        self.say(room, 5)
        first = room.receive(source(1), b"5", 0)
        self.assertEqual(
            (first, len(first) <= 30, room.receive(source(1), b"5", 0)),
            (b"[2 lines dropped]\nAl: 2\nAl: 3", True, b"Al: 4"),
        )

    def test_own_lines_never_count(self):
        """A member's own lines fill nobody's backlog but the others'."""
        room = self.room(3)
        room.receive(source(1), b"2 from Bo", 0)  # Al is now behind by one line
        self.say(room, 3, who=0)
        self.assertEqual(
            (room.receive(source(0), b"5", 0), room.receive(source(1), b"5", 0)),
            (b"Bo: from Bo", b"Al: 0\nAl: 1\nAl: 2"),
        )

    def test_storage_is_bounded_by_twice_the_backlog(self):
        """However many lines nobody reads, the room holds at most 2 x max_pending."""
        room = self.room(5)
        self.say(room, 1000)
        self.assertEqual(room.stored_lines, 10)

    def test_silent_members_cost_no_extra_storage(self):
        """K lines for N members who never poll: K lines stored, not N x K."""
        room = Room(max_pending=100)
        join_all(room, 50)
        for i in range(50):
            room.receive(source(i), b"5", 0)
        for i in range(30):
            room.receive(source(0), b"2 %d" % (i,), 0)
        self.assertEqual(room.stored_lines, 30)


class IdleTests(SynchronousTestCase):
    """
    C{idle_timeout} removes a silent member as if it had left.
    """

    def test_member_silent_for_the_timeout_is_removed(self):
        """At exactly the timeout the member leaves; the others see it leave."""
        room = Room(idle_timeout=60)
        room.receive(source(0), b"1 Al", 0)
        room.receive(source(1), b"1 Bo", 30)
        room.receive(source(1), b"5", 30)
        room.take_changes()
        before = room.receive(source(1), b"5", 59.9)
        quiet = room.take_changes().events
        reply = room.receive(source(1), b"5", 60)
        self.assertEqual(
            (before, quiet, reply, room.members(), room.take_changes().events),
            (b"", [], b"Al has left the group", [(source(1), "Bo")], [Expired(source(0), "Al")]),
        )

    def test_any_request_keeps_a_member(self):
        """Every datagram from a member, even an illegal one, restarts its timer."""
        room = Room(idle_timeout=60)
        room.receive(source(0), b"1 Al", 0)
        room.receive(source(0), b"bogus", 50)
        room.expire(109)
        kept = room.members()
        room.expire(110)
        self.assertEqual((kept, room.members()), ([(source(0), "Al")], []))

    def test_expired_member_is_a_stranger(self):
        """An expired member's poll is illegal; it may join again."""
        room = Room(idle_timeout=10)
        room.receive(source(0), b"1 Al", 0)
        self.assertEqual(
            (room.receive(source(0), b"5", 10), room.receive(source(0), b"1 Al", 10)),
            (ILLEGAL, b""),
        )

    def test_zero_means_never(self):
        """With idle_timeout 0 nobody expires."""
        room = Room(idle_timeout=0)
        room.receive(source(0), b"1 Al", 0)
        room.expire(10**9)
        self.assertEqual(room.members(), [(source(0), "Al")])

    def test_expiry_frees_name_group_and_storage(self):
        """An expired member's name, group place and pending lines are released."""
        room = Room(idle_timeout=10, group_of=by_network, max_members_per_group=1)
        room.receive(source(0, 4), b"1 Al", 0)
        room.receive(source(1, 5), b"1 Bo", 5)
        room.receive(source(1, 5), b"2 unread by Al", 5)
        room.expire(12)
        self.assertEqual(
            (room.stored_lines, room.pending(source(1, 5)), room.receive(source(2, 4), b"1 Al", 12)),
            (1, [b"Al has left the group"], b"Bo"),
        )


class RoomMachine(RuleBasedStateMachine):
    """
    Random joins, renames, lines, polls, leaves and time passing, with small
    limits, checked against the naive L{ModelRoom} at every step.
    """

    SOURCES = [source(i, network) for network in (1, 2) for i in range(3)] + [("::1", 9)]
    NAMES = ["Al", "Bo", "Cy", "Di", "Ed"]
    LIMITS = dict(
        max_members=4,
        max_pending=3,
        idle_timeout=20,
        group_of=lambda s: None if s[0] == "::1" else by_network(s),
        max_members_per_group=2,
    )

    def __init__(self):
        super().__init__()
        self.clock = Clock()
        self.room = Room(max_reply_bytes=40, track_state=True, **self.LIMITS)
        self.model = ModelRoom(40, **self.LIMITS)
        self.known = self.room.take_changes()  # all the room reported

    def send(self, who, datagram):
        now = self.clock.seconds()
        reply = self.room.receive(self.SOURCES[who], datagram, now)
        assert reply == self.model.receive(self.SOURCES[who], datagram, now), datagram
        assert len(reply or b"") <= 40  # None: no reply

    @rule(who=st.integers(0, 6), name=st.sampled_from(NAMES))
    def join(self, who, name):
        self.send(who, b"1 " + name.encode())

    @rule(who=st.integers(0, 6), name=st.sampled_from(NAMES))
    def rename(self, who, name):
        self.send(who, b"3 " + name.encode())

    @rule(who=st.integers(0, 6), text=st.sampled_from([b"hi", b"x" * 20, b"\tok"]))
    def say(self, who, text):
        self.send(who, b"2 " + text)

    @rule(who=st.integers(0, 6), times=st.integers(1, 8))
    def say_many(self, who, times):
        for i in range(times):
            self.send(who, b"2 %d" % (i,))

    @rule(who=st.integers(0, 6))
    def poll(self, who):
        self.send(who, b"5")

    @rule(who=st.integers(0, 6))
    def leave(self, who):
        self.send(who, b"4")

    @rule(who=st.integers(0, 6), datagram=st.binary(max_size=6))
    def junk(self, who, datagram):
        self.send(who, datagram)

    @rule(seconds=st.sampled_from([1, 5, 19, 20, 30]))
    def wait(self, seconds):
        self.clock.advance(seconds)

    @precondition(lambda self: self.clock.seconds())
    @rule()
    def sweep(self):
        self.room.expire(self.clock.seconds())
        self.model.expire(self.clock.seconds())

    @invariant()
    def agrees_with_model(self):
        room = self.room
        members = room.members()
        changes = room.take_changes()
        observed = ((members, {s: room.pending(s) for s, _ in members}), changes.events)
        assert observed == (self.model.state(), self.model.take_events())
        assert room.stored_lines <= 2 * self.LIMITS["max_pending"]
        # A room rebuilt from all the room reported holds the same members,
        # in the same places of the log, as lost or as far behind; only when
        # each was last heard from is reported at checkpoints alone.
        self.known = self.known.then(changes)
        copy = replica(self.known, max_reply_bytes=40, **self.LIMITS)
        everyone = room.take_changes(everyone=True)
        self.known = self.known.then(everyone)
        assert without_idle_times(copy.take_changes(everyone=True)) == without_idle_times(everyone)
        assert (copy.members(), copy.stored_lines) == (members, room.stored_lines)


def without_idle_times(changes):
    """C{changes} with every member's last_seen left out."""
    return Changes(
        changes.events,
        [state._replace(last_seen=None) for state in changes.members],
        changes.removed,
        changes.lines,
        changes.first,
        changes.next_id,
    )


class RoomMachineTests(SynchronousTestCase):
    """
    L{RoomMachine} as a trial test, so that trial runs it as pytest does.
    """

    def test_room_agrees_with_the_model_under_random_rules(self):
        """Any run of joins, renames, lines, polls, leaves and waits keeps the room, and what it reports, with the model."""
        run_state_machine_as_test(
            RoomMachine, settings=settings(max_examples=150, stateful_step_count=40, deadline=None)
        )

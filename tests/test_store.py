"""
Tests for L{udpchat.store}: the room saved to SQLite and read back.
"""

import os
import sqlite3
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from udpchat import store
from udpchat.room import Room
from udpchat.store import StateFileError, Store, check, lock


def state(room):
    """
    What a restart must keep.  The log's numbering is kept while anybody
    reads it; an empty room may start again from any number, and member
    numbers are not kept beyond the members (they are never compared).
    """
    members = room.members()
    return (
        members,
        {source: room.pending(source) for source, _ in members},
        room.stored_lines,
        (room.log.first, room.log.end) if members else None,
        [member.id for member in room.all_members()],
    )


class StoreTestCase(SynchronousTestCase):
    def setUp(self):
        self.directory = tempfile.TemporaryDirectory()
        self.addCleanup(self.directory.cleanup)
        self.path = os.path.join(self.directory.name, "room.db")

    def open(self, room, now=0, **kwargs):
        """Open the store at C{self.path} and load C{room} from it."""
        saved = Store(self.path, **kwargs)
        saved.open()
        self.addCleanup(saved.close)
        saved.load(room, now)
        return saved

    def reopen(self, room_options=None, now=0):
        """A new room loaded from the file, as after a restart."""
        room = Room(**(room_options or {}))
        self.open(room, now)
        return room


class RoundTripTests(StoreTestCase):
    A, B, C = ("192.0.2.1", 1), ("192.0.2.2", 2), ("2001:db8::3", 3)

    def test_new_file_is_an_empty_room(self):
        """A missing file starts an empty room, and identifies itself."""
        room = Room()
        self.open(room)
        connection = sqlite3.connect(self.path)
        self.addCleanup(connection.close)
        self.assertEqual(
            (
                room.members(),
                connection.execute("PRAGMA application_id").fetchone()[0],
                connection.execute("PRAGMA user_version").fetchone()[0],
                connection.execute("PRAGMA journal_mode").fetchone()[0],
                oct(os.stat(self.path).st_mode & 0o777),
            ),
            ([], store.APPLICATION_ID, store.SCHEMA_VERSION, "wal", "0o600"),
        )

    def test_members_lines_and_positions_survive(self):
        """Members, names, join order, pending lines and read positions come back."""
        room = Room()
        saved = self.open(room)
        for source, datagram in [
            (self.A, b"1 Al"), (self.B, b"1 Bo"), (self.C, b"1 Cy"), (self.A, b"2 hello"),
            (self.B, b"5"), (self.C, b"3 Cyd"), (self.B, b"2 hi"), (self.A, b"5"),
        ]:
            room.receive(source, datagram, 0)
            saved.commit(room, 0)
        before = state(room)
        saved.close()
        again = self.reopen()
        self.assertEqual(state(again), before)
        self.assertEqual(
            [again.receive(s, b"5", 0) for s in (self.A, self.B, self.C)],
            [b"", b"Cy changed his name to Cyd", b"Al: hello\nBo: hi"],
        )

    def test_nothing_uncommitted_survives(self):
        """What was not committed is not in the file."""
        room = Room()
        saved = self.open(room)
        room.receive(self.A, b"1 Al", 0)
        saved.commit(room, 0)
        room.receive(self.B, b"1 Bo", 0)
        saved.close()
        self.assertEqual(self.reopen().members(), [(self.A, "Al")])

    def test_fetched_lines_are_never_fetched_again(self):
        """A committed poll is not repeated after a restart."""
        room = Room()
        saved = self.open(room)
        room.receive(self.A, b"1 Al", 0)
        room.receive(self.B, b"1 Bo", 0)
        room.receive(self.B, b"2 once", 0)
        saved.commit(room, 0)
        first = room.receive(self.A, b"5", 0)
        saved.commit(room, 0)
        saved.close()
        self.assertEqual((first, self.reopen().receive(self.A, b"5", 0)), (b"Bo has joined\nBo: once", b""))

    def test_own_line_in_room_of_one_is_not_a_dropped_line(self):
        """A lone member's own lines do not come back as dropped lines."""
        room = Room()
        saved = self.open(room)
        room.receive(self.A, b"1 Al", 0)
        for i in range(3):
            room.receive(self.A, b"2 %d" % (i,), 0)
            saved.commit(room, 0)
        saved.close()
        self.assertEqual(self.reopen().receive(self.A, b"5", 0), b"")

    def test_dropped_count_survives(self):
        """Lines dropped from a backlog are still announced after a restart."""
        options = dict(max_pending=2)
        room = Room(**options)
        saved = self.open(room)
        room.receive(self.A, b"1 Al", 0)
        room.receive(self.B, b"1 Bo", 0)
        room.receive(self.A, b"5", 0)
        for i in range(7):
            room.receive(self.B, b"2 %d" % (i,), 0)
            saved.commit(room, 0)
        saved.close()
        self.assertEqual(self.reopen(options).receive(self.A, b"5", 0), b"[5 lines dropped]\nBo: 5\nBo: 6")

    def test_downtime_does_not_count_toward_idle_timeout(self):
        """Idle timers resume where they stood at the last commit."""
        options = dict(idle_timeout=100)
        room = Room(**options)
        saved = self.open(room, now=1000)
        room.receive(self.A, b"1 Al", 1000)
        room.receive(self.B, b"1 Bo", 1050)
        saved.save_idle_times(room, 1060)
        saved.close()
        # Down for a day; back at 87460 + 1060.  Al has 40 s left, Bo 90.
        restart = 86400 + 1060
        again = self.reopen(options, now=restart)
        again.expire(restart + 39)
        kept = again.members()
        again.expire(restart + 40)
        self.assertEqual((kept, again.members()), ([(self.A, "Al"), (self.B, "Bo")], [(self.B, "Bo")]))

    def test_groups_are_counted_again(self):
        """Per-prefix member caps hold across a restart."""
        options = dict(group_of=lambda s: s[0].rsplit(".", 1)[0], max_members_per_group=2)
        room = Room(**options)
        saved = self.open(room)
        room.receive(self.A, b"1 Al", 0)
        room.receive(self.B, b"1 Bo", 0)
        saved.commit(room, 0)
        saved.close()
        again = self.reopen(options)
        self.assertEqual(again.receive(("192.0.2.9", 9), b"1 Cy", 0), b"Illegal message")

    def test_member_who_left_stays_gone(self):
        """A member that left is not written back when the log later forgets its lines."""
        room = Room(max_pending=1)
        saved = self.open(room)
        for source, datagram in [(self.A, b"1 Al"), (self.B, b"1 Bo"), (self.A, b"2 x"), (self.A, b"4")]:
            room.receive(source, datagram, 1)
        saved.commit(room, 1)
        room.receive(self.B, b"2 y", 2)
        saved.commit(room, 2)
        saved.close()
        again = self.reopen(dict(max_pending=1))
        self.assertEqual((again.members(), again.receive(self.A, b"5", 3)), ([(self.B, "Bo")], b"Illegal message"))

    def test_smaller_backlog_after_restart_shrinks_the_log(self):
        """Restarted with a smaller --max-pending, the room holds at most twice the new backlog."""
        room = Room(max_pending=50)
        saved = self.open(room)
        room.receive(self.A, b"1 Al", 0)
        room.receive(self.B, b"1 Bo", 0)
        for i in range(80):
            room.receive(self.B, b"2 %d" % (i,), 0)
        saved.commit(room, 0)
        saved.close()
        again = self.reopen(dict(max_pending=2))
        self.assertEqual((again.stored_lines, again.receive(self.A, b"5", 0)), (4, b"[79 lines dropped]\nBo: 78\nBo: 79"))

    def test_member_numbers_are_never_given_twice(self):
        """A member that joined and left before a crash does not lend its number to the next one."""
        room = Room()
        saved = self.open(room)
        room.receive(self.A, b"1 Al", 0)
        room.receive(self.B, b"1 Bo", 0)
        room.receive(self.B, b"4", 0)
        saved.commit(room, 0)
        saved.close()  # as a crash would: no checkpoint
        again = self.reopen()
        again.receive(self.C, b"1 Cy", 0)
        self.assertEqual([m.id for m in again.all_members()], [0, 2])

    @settings(max_examples=60, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.sampled_from([A, B, C]),
                st.sampled_from([b"1 Al", b"1 Bo", b"1 Cy", b"2 x", b"2 yy", b"3 Di", b"4", b"5", b"5", b"junk"]),
                st.booleans(),
            ),
            max_size=40,
        ),
        st.integers(1, 4),
    )
    def test_restart_after_any_commit_gives_the_same_room(self, steps, max_pending):
        """At any commit, a room read back from the file is the room that was saved, and behaves the same."""
        options = dict(max_pending=max_pending, max_reply_bytes=30)
        room = Room(**options)
        with tempfile.TemporaryDirectory() as directory:
            saved = Store(os.path.join(directory, "room.db"))
            saved.open()
            saved.load(room, 0)
            for source, datagram, commit in steps:
                room.receive(source, datagram, 0)
                if commit:
                    saved.commit(room, 0)
                    copy = Room(**options)
                    reader = Store(saved.path)
                    reader.open()
                    reader.load(copy, 0)
                    reader.close()
                    self.assertEqual(state(copy), state(room))
                    for source in (self.A, self.B, self.C):
                        self.assertEqual(copy.receive(source, b"5", 0), room.receive(source, b"5", 0))
                    saved.commit(room, 0)
            saved.close()


class CheckTests(StoreTestCase):
    """
    L{check} refuses, read-only, every file that is not a room.
    """

    def assert_refused(self, path, message):
        before = open(path, "rb").read() if os.path.isfile(path) else None
        with self.assertRaises(StateFileError) as caught:
            check(path)
        self.assertIn(message, str(caught.exception))
        if before is not None:
            self.assertEqual(open(path, "rb").read(), before)

    def test_missing_and_empty_files_are_new_rooms(self):
        """No file, or an empty one, is fine: a new room."""
        check(self.path)
        open(self.path, "wb").close()
        check(self.path)

    def test_garbage(self):
        """Random bytes are not a state file, and stay as they were."""
        with open(self.path, "wb") as f:
            f.write(os.urandom(5000))
        self.assert_refused(self.path, "is not a udpchat state file")

    def test_other_sqlite_database(self):
        """Another application's database is refused."""
        connection = sqlite3.connect(self.path)
        connection.execute("CREATE TABLE t (x)")
        connection.commit()
        connection.close()
        self.assert_refused(self.path, "is not a udpchat state file")

    def test_newer_schema(self):
        """A file of an unknown schema version is refused, untouched."""
        room = Room()
        self.open(room).close()
        connection = sqlite3.connect(self.path)
        connection.execute("PRAGMA user_version = 2")
        connection.commit()
        connection.close()
        self.assert_refused(self.path, "has schema version 2; this udpchat reads version 1 only")

    def test_empty_name(self):
        """An empty path, or one naming a directory, is not a file name."""
        self.assert_refused("", "is not a file name")
        self.assert_refused(self.directory.name + "/", "is not a file name")

    def test_damaged_past_the_header(self):
        """A state file damaged after its first page is refused, untouched."""
        room = Room()
        saved = self.open(room)
        for i in range(300):
            room.receive(("192.0.2.%d" % (i % 250 + 1,), i + 1), b"1 m%d" % (i,), 0)
        saved.commit(room, 0)
        saved.close()
        with open(self.path, "r+b") as f:
            f.seek(4096)
            f.write(os.urandom(os.path.getsize(self.path) - 4096))
        # SQLite finds the damage in the header check or in quick_check:
        # either way, one line naming the file, and the file as it was.
        self.assert_refused(self.path, self.path)

    def test_directory(self):
        """A directory is not a file."""
        self.assert_refused(self.directory.name, "is a directory")

    def test_missing_directory(self):
        """A file in a directory that does not exist is refused."""
        self.assert_refused(os.path.join(self.directory.name, "nope", "room.db"), "does not exist")

    def test_existing_room_is_accepted(self):
        """A udpchat state file passes."""
        room = Room()
        self.open(room).close()
        check(self.path)


class LockTests(StoreTestCase):
    def test_second_lock_is_refused(self):
        """While one process holds the lock, a second lock fails clearly."""
        fd = lock(self.path)
        self.addCleanup(os.close, fd)
        with self.assertRaises(StateFileError) as caught:
            lock(self.path)
        self.assertIn("another udpchat server is using", str(caught.exception))

    def test_lock_is_released_with_its_descriptor(self):
        """Once the holder closes it, the lock can be taken again."""
        os.close(lock(self.path))
        os.close(lock(self.path))

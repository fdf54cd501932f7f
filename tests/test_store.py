"""
Tests for L{udpchat.store}: the room saved to SQLite and read back.
"""

import errno
import os
import shutil
import sqlite3
import subprocess
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from udpchat import changelog, store
from udpchat.room import MemberState, Room
from udpchat.store import StateFileError, StateWriteError, Store, check, lock

TOKEN, NONCE = b"%032x" % 0, b"%032x" % 0xABC
SESSION_DATAGRAMS = [
    b"6 %s Sy" % NONCE, b"7 %s 1 s" % TOKEN, b"7 %s 2 t" % TOKEN, b"8 %s 3 3" % TOKEN,
    b"8 %s 3 6" % TOKEN, b"9 %s 4 Ty" % TOKEN, b"0 %s 5" % TOKEN,
]
"""A session's requests (its token is the first the test rooms give out)."""

SESSION_COLUMNS = ["token", "nonce", "seq", "reply", "told", "budget", "replied_host", "replied_port"]


def state(room):
    """
    What a restart must keep that a member can see: the members, in join
    order, what each has pending, and how many lines the room holds.
    """
    members = room.members()
    return (members, {source: room.pending(source) for source, _ in members}, room.stored_lines)


def whole(changes):
    """
    From C{changes} that report everyone (C{take_changes(everyone=True)}):
    every member's whole state, by id, where the log's numbering stands (an
    empty room may start again from any number) and the next member's id.
    """
    members = sorted(changes.members)
    return (members, changes.first if members else None, changes.next_id)


def commit(saved, room, now=0, checkpoint=False):
    """Commit to C{saved} what C{room} reports changed, as the adapter does."""
    saved.commit(room.take_changes(everyone=checkpoint), now, checkpoint)


def crash_copy(path, copy):
    """
    Copy the file at C{path} with its -wal and -changes, as they stand (a
    store may hold them open, as if the server had crashed), to C{copy}.
    """
    for suffix in ("", "-wal", "-changes"):
        if os.path.exists(path + suffix):
            shutil.copyfile(path + suffix, copy + suffix)
        elif os.path.exists(copy + suffix):
            os.unlink(copy + suffix)


def read_back(path, now=0, **options):
    """
    A new room loaded from the file at C{path} as a restart would load it,
    from a copy of the file and its -wal: a store may hold it open (and
    locked).
    """
    room = Room(track_state=True, **options)
    with tempfile.TemporaryDirectory() as directory:
        copy = os.path.join(directory, "room.db")
        shutil.copyfile(path, copy)
        for suffix in ("-wal", "-changes"):
            if os.path.exists(path + suffix):
                shutil.copyfile(path + suffix, copy + suffix)
        reader = Store(copy)
        reader.open()
        try:
            reader.load(room, now)
        finally:
            reader.close()
    return room


def files(directory):
    """The regular files in C{directory}, by name, with their bytes."""
    found = {}
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                found[name] = f.read()
    return found


def small_filesystem(testcase, size):
    """
    A directory on a tmpfs of its own, C{size} big (as mount(8) writes it:
    C{"512k"}), unmounted when C{testcase} ends.  Skip the test, saying
    why, where none can be had.
    """
    if os.geteuid() != 0:
        raise SkipTest("needs root: it mounts a small tmpfs to fill up")
    if shutil.which("mount") is None:
        raise SkipTest("needs mount(8) to mount a small tmpfs to fill up")
    directory = tempfile.mkdtemp()
    testcase.addCleanup(os.rmdir, directory)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "udpchat-test", directory],
        capture_output=True,
    )
    if mounted.returncode:
        raise SkipTest(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    testcase.addCleanup(subprocess.run, ["umount", directory], check=True)
    return directory


def fill(directory):
    """Fill the filesystem of C{directory} to the last block; return the filler's path."""
    path = os.path.join(directory, "ballast")
    with open(path, "wb", buffering=0) as ballast:
        try:
            while True:
                ballast.write(bytes(4096))
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
    return path


class StoreTestCase(SynchronousTestCase):
    A, B, C = ("192.0.2.1", 1), ("192.0.2.2", 2), ("2001:db8::3", 3)

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

    def reopen(self, room_options=None, now=0, shared=False):
        """A new room loaded from the file, as after a restart."""
        room = Room(track_state=True, **(room_options or {}))
        self.open(room, now, shared=shared)
        return room


class RoundTripTests(StoreTestCase):
    def test_new_file_is_an_empty_room(self):
        """A missing file starts an empty room, and identifies itself."""
        room = Room(track_state=True)
        self.open(room, shared=True)
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
        """Members, names, ids, join order, pending lines, read positions and numbering come back."""
        room = Room(track_state=True)
        saved = self.open(room)
        for source, datagram in [
            (self.A, b"1 Al"), (self.B, b"1 Bo"), (self.C, b"1 Cy"), (self.A, b"2 hello"),
            (self.B, b"5"), (self.C, b"3 Cyd"), (self.B, b"2 hi"), (self.A, b"5"),
        ]:
            room.receive(source, datagram, 0)
            commit(saved, room)
        before = (state(room), whole(room.take_changes(everyone=True)))
        saved.close()
        again = self.reopen()
        self.assertEqual((state(again), whole(again.take_changes(everyone=True))), before)
        self.assertEqual(
            [again.receive(s, b"5", 0) for s in (self.A, self.B, self.C)],
            [b"", b"Cy changed his name to Cyd", b"Al: hello\nBo: hi"],
        )

    def test_nothing_uncommitted_survives(self):
        """What was not committed is not in the file."""
        room = Room(track_state=True)
        saved = self.open(room)
        room.receive(self.A, b"1 Al", 0)
        commit(saved, room)
        room.receive(self.B, b"1 Bo", 0)
        saved.close()
        self.assertEqual(self.reopen().members(), [(self.A, "Al")])

    def test_fetched_lines_are_never_fetched_again(self):
        """A committed poll is not repeated after a restart."""
        room = Room(track_state=True)
        saved = self.open(room)
        room.receive(self.A, b"1 Al", 0)
        room.receive(self.B, b"1 Bo", 0)
        room.receive(self.B, b"2 once", 0)
        commit(saved, room)
        first = room.receive(self.A, b"5", 0)
        commit(saved, room)
        saved.close()
        self.assertEqual((first, self.reopen().receive(self.A, b"5", 0)), (b"Bo has joined\nBo: once", b""))

    def test_own_line_in_room_of_one_is_not_a_dropped_line(self):
        """A lone member's own lines do not come back as dropped lines."""
        room = Room(track_state=True)
        saved = self.open(room)
        room.receive(self.A, b"1 Al", 0)
        for i in range(3):
            room.receive(self.A, b"2 %d" % (i,), 0)
            commit(saved, room)
        saved.close()
        self.assertEqual(self.reopen().receive(self.A, b"5", 0), b"")

    def test_dropped_count_survives(self):
        """Lines dropped from a backlog are still announced after a restart."""
        options = dict(max_pending=2)
        room = Room(track_state=True, **options)
        saved = self.open(room)
        room.receive(self.A, b"1 Al", 0)
        room.receive(self.B, b"1 Bo", 0)
        room.receive(self.A, b"5", 0)
        for i in range(7):
            room.receive(self.B, b"2 %d" % (i,), 0)
            commit(saved, room)
        saved.close()
        self.assertEqual(self.reopen(options).receive(self.A, b"5", 0), b"[5 lines dropped]\nBo: 5\nBo: 6")

    def test_own_lines_forgotten_behind_a_member_are_not_counted_as_lost(self):
        """A member's own unread lines that the log forgot come back as neither lines nor losses."""
        options = dict(max_pending=1)  # the log holds 2 lines
        room = Room(track_state=True, **options)
        saved = self.open(room)
        room.receive(self.A, b"1 Al", 0)
        room.receive(self.B, b"1 Bo", 0)  # Al has "Bo has joined" unread
        for i in range(4):
            room.receive(self.A, b"2 %d" % (i,), 0)
            commit(saved, room)
        saved.close()
        self.assertEqual(self.reopen(options).receive(self.A, b"5", 0), b"[1 line dropped]")

    def test_downtime_does_not_count_toward_idle_timeout(self):
        """Idle timers resume where they stood at the last checkpoint."""
        options = dict(idle_timeout=100)
        room = Room(track_state=True, **options)
        saved = self.open(room, now=1000)
        room.receive(self.A, b"1 Al", 1000)
        room.receive(self.B, b"1 Bo", 1050)
        commit(saved, room, 1060, checkpoint=True)
        saved.close()
        # Down for a day; back at 87460 + 1060.  Al has 40 s left, Bo 90.
        restart = 86400 + 1060
        again = self.reopen(options, now=restart)
        again.expire(restart + 39)
        kept = again.members()
        again.expire(restart + 40)
        self.assertEqual((kept, again.members()), ([(self.A, "Al"), (self.B, "Bo")], [(self.B, "Bo")]))

    def test_checkpoint_saves_idle_times_that_changed_alone(self):
        """A member heard from with nothing else changed has its idle timer saved at the checkpoint only."""
        options = dict(idle_timeout=100)
        room = Room(track_state=True, **options)
        saved = self.open(room, now=1000)
        room.receive(self.A, b"1 Al", 1000)
        commit(saved, room, 1000, checkpoint=True)
        room.receive(self.A, b"5", 1050)  # nothing new: only its timer changes
        commit(saved, room, 1050)
        # Read back at 1060: the file was last checkpointed at 1000, when Al
        # had been silent for 0 s; then at 1060, when it had been for 10 s.
        between = read_back(self.path, 1060, **options)
        commit(saved, room, 1060, checkpoint=True)
        after = read_back(self.path, 1060, **options)
        self.assertEqual(
            (whole(between.take_changes(everyone=True))[0], whole(after.take_changes(everyone=True))[0]),
            ([MemberState(0, self.A, "Al", 1, 0, 1060.0)], [MemberState(0, self.A, "Al", 1, 0, 1050.0)]),
        )

    def test_groups_are_counted_again(self):
        """Per-prefix member caps hold across a restart."""
        options = dict(group_of=lambda s: s[0].rsplit(".", 1)[0], max_members_per_group=2)
        room = Room(track_state=True, **options)
        saved = self.open(room)
        room.receive(self.A, b"1 Al", 0)
        room.receive(self.B, b"1 Bo", 0)
        commit(saved, room)
        saved.close()
        again = self.reopen(options)
        self.assertEqual(again.receive(("192.0.2.9", 9), b"1 Cy", 0), b"Illegal message")

    def test_member_who_left_stays_gone(self):
        """A member that left is not written back when the log later forgets its lines."""
        room = Room(track_state=True, max_pending=1)
        saved = self.open(room)
        for source, datagram in [(self.A, b"1 Al"), (self.B, b"1 Bo"), (self.A, b"2 x"), (self.A, b"4")]:
            room.receive(source, datagram, 1)
        commit(saved, room, 1)
        room.receive(self.B, b"2 y", 2)
        commit(saved, room, 2)
        saved.close()
        again = self.reopen(dict(max_pending=1))
        self.assertEqual((again.members(), again.receive(self.A, b"5", 3)), ([(self.B, "Bo")], b"Illegal message"))

    def test_smaller_backlog_after_restart_shrinks_the_log(self):
        """Restarted with a smaller --max-pending, the room holds at most twice the new backlog."""
        room = Room(track_state=True, max_pending=50)
        saved = self.open(room)
        room.receive(self.A, b"1 Al", 0)
        room.receive(self.B, b"1 Bo", 0)
        for i in range(80):
            room.receive(self.B, b"2 %d" % (i,), 0)
        commit(saved, room)
        saved.close()
        again = self.reopen(dict(max_pending=2))
        self.assertEqual((again.stored_lines, again.receive(self.A, b"5", 0)), (4, b"[79 lines dropped]\nBo: 78\nBo: 79"))

    def test_own_lines_forgotten_at_a_restart_stay_uncounted_after_the_next(self):
        """Restarted twice with a smaller backlog, a member's own lines the first restart forgot are not counted as lost."""
        room = Room(track_state=True, max_pending=50)
        saved = self.open(room)
        room.receive(self.A, b"1 Al", 0)
        room.receive(self.B, b"1 Bo", 0)  # Al has "Bo has joined" unread
        for i in range(80):
            room.receive(self.A, b"2 %d" % (i,), 0)
        commit(saved, room)
        saved.close()
        first = Room(track_state=True, max_pending=2)
        restarted = self.open(first)
        commit(restarted, first)  # what the restart changed
        restarted.close()
        again = self.reopen(dict(max_pending=2))
        self.assertEqual(
            [again.receive(s, b"5", 0) for s in (self.A, self.B)],
            [b"[1 line dropped]", b"[78 lines dropped]\nAl: 78\nAl: 79"],
        )

    def test_member_numbers_are_never_given_twice(self):
        """A member that joined and left before a crash does not lend its number to the next one."""
        room = Room(track_state=True)
        saved = self.open(room)
        room.receive(self.A, b"1 Al", 0)
        room.receive(self.B, b"1 Bo", 0)
        room.receive(self.B, b"4", 0)
        commit(saved, room)
        saved.close()  # as a crash would: no checkpoint
        again = self.reopen()
        again.receive(self.C, b"1 Cy", 0)
        self.assertEqual([m.id for m in whole(again.take_changes(everyone=True))[0]], [0, 2])

    def test_failed_commit_saves_nothing_and_revert_returns_to_the_last_commit(self):
        """A commit that fails leaves the file as it was, and revert returns the room to it: polls take nothing, joins make no member."""
        room = Room(track_state=True)
        # Every commit folds into the tables, where a trigger can fail it.
        saved = self.open(room, shared=True, log_bytes=0)
        for source, datagram in [(self.A, b"1 Al"), (self.B, b"1 Bo"), (self.A, b"2 one")]:
            room.receive(source, datagram, 0)
        commit(saved, room)
        committed = (state(room), whole(room.take_changes(everyone=True)))
        # Another connection makes every commit fail.
        other = sqlite3.connect(self.path, isolation_level=None)
        self.addCleanup(other.close)
        other.execute("CREATE TRIGGER full BEFORE INSERT ON lines BEGIN SELECT RAISE(ABORT, 'full'); END")
        for source, datagram in [(self.C, b"1 Cy"), (self.A, b"2 two"), (self.B, b"5"), (self.A, b"3 Ann")]:
            room.receive(source, datagram, 0)
        with self.assertRaises(sqlite3.IntegrityError):
            commit(saved, room)
        saved.revert(room)
        reverted = (state(room), whole(room.take_changes(everyone=True)))
        other.execute("DROP TRIGGER full")
        in_file = state(read_back(self.path))
        room.receive(self.C, b"1 Cy", 0)
        commit(saved, room)
        self.assertEqual(
            (in_file, reverted, room.receive(self.B, b"5", 0), [m.id for m in whole(room.take_changes(everyone=True))[0]]),
            (committed[0], committed, b"Al: one\nCy has joined", [0, 1, 2]),
        )

    def test_revert_keeps_when_members_were_heard_from(self):
        """Idle timers are not rolled back with the rest: a member heard from in a failed batch was heard from."""
        options = dict(idle_timeout=100)
        room = Room(track_state=True, **options)
        saved = self.open(room, now=1000, shared=True, log_bytes=0)
        room.receive(self.A, b"1 Al", 1000)
        room.receive(self.B, b"1 Bo", 1000)
        commit(saved, room, 1000, checkpoint=True)
        other = sqlite3.connect(self.path, isolation_level=None)
        self.addCleanup(other.close)
        other.execute("CREATE TRIGGER full BEFORE UPDATE ON members BEGIN SELECT RAISE(ABORT, 'full'); END")
        room.receive(self.A, b"5", 1090)  # Al has a line to take: a change
        with self.assertRaises(sqlite3.IntegrityError):
            commit(saved, room, 1090)
        saved.revert(room)
        room.expire(1150)
        self.assertEqual(room.members(), [(self.A, "Al")])

    @settings(max_examples=60, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.sampled_from([StoreTestCase.A, StoreTestCase.B, StoreTestCase.C]),
                st.sampled_from(
                    [b"1 Al", b"1 Bo", b"1 Cy", b"2 x", b"2 yy", b"3 Di", b"4", b"5", b"5", b"junk"]
                    + SESSION_DATAGRAMS
                ),
                st.sampled_from([None, False, True]),
            ),
            max_size=40,
        ),
        st.integers(1, 4),
    )
    def test_restart_after_any_commit_gives_the_same_room(self, steps, max_pending):
        """At any commit, to the changes log or folded into the tables (a checkpoint), a room read back from the file is the room that was saved (sessions too), and behaves the same."""
        options = dict(max_pending=max_pending, max_reply_bytes=30)
        tokens = iter(range(100))
        room = Room(track_state=True, new_token=lambda: b"%032x" % next(tokens), **options)
        with tempfile.TemporaryDirectory() as directory:
            saved = Store(os.path.join(directory, "room.db"))
            saved.open()
            saved.load(room, 0)
            for source, datagram, committing in steps:
                room.receive(source, datagram, 0)
                if committing is not None:
                    commit(saved, room, checkpoint=committing)
                    copy = read_back(saved.path, **options)
                    # Every member's whole state, as a later poll could show
                    # it; then saved, so that the next commit starts afresh.
                    everyone = room.take_changes(everyone=True)
                    saved.commit(everyone, 0)
                    self.assertEqual(
                        (state(copy), whole(copy.take_changes(everyone=True))),
                        (state(room), whole(everyone)),
                    )
                    for source in (self.A, self.B, self.C):
                        self.assertEqual(copy.receive(source, b"5", 0), room.receive(source, b"5", 0))
                    commit(saved, room)
            saved.close()


class ChangesLogTests(StoreTestCase):
    """
    Commits go to the changes log beside the file, one record each, until a
    checkpoint (or a log of C{log_bytes}) folds it into the tables.
    """

    def table_rows(self, table):
        connection = sqlite3.connect(self.path)
        self.addCleanup(connection.close)
        return connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]

    def log_records(self):
        fd = os.open(self.path + "-changes", os.O_RDONLY)
        self.addCleanup(os.close, fd)
        return len(changelog.read(fd)[1])

    def commit_chat(self, saved, room, datagrams, checkpoint=False):
        for source, datagram in datagrams:
            room.receive(source, datagram, 0)
            commit(saved, room, checkpoint=checkpoint)

    def test_commits_go_to_the_log_until_a_checkpoint_folds_it(self):
        """Each commit adds one record to the log and nothing to the tables; a checkpoint writes the tables and empties the log."""
        room = Room(track_state=True)
        saved = self.open(room, shared=True)
        counts = []
        for source, datagram in [(self.A, b"1 Al"), (self.B, b"1 Bo"), (self.A, b"2 hi")]:
            self.commit_chat(saved, room, [(source, datagram)])
            counts.append((self.log_records(), self.table_rows("members"), self.table_rows("lines")))
        commit(saved, room, checkpoint=True)
        counts.append((self.log_records(), self.table_rows("members"), self.table_rows("lines")))
        # Al, Bo; "Bo has joined" and "Al: hi", which Al and Bo have yet to read.
        self.assertEqual(counts, [(1, 0, 0), (2, 0, 0), (3, 0, 0), (0, 2, 2)])

    def test_log_is_folded_once_it_holds_log_bytes(self):
        """Without checkpoints, the log never holds much more than log_bytes."""
        room = Room(track_state=True)
        saved = self.open(room, shared=True, log_bytes=2000)
        self.commit_chat(saved, room, [(self.A, b"1 Al"), (self.B, b"1 Bo")])
        most = 0
        for i in range(200):
            self.commit_chat(saved, room, [(self.A, b"2 %d" % i), (self.B, b"5")])
            most = max(most, os.path.getsize(self.path + "-changes"))
        self.assertEqual(
            (most < 2000 + 200, self.table_rows("members"), state(read_back(self.path))),
            (True, 2, state(room)),
        )

    def test_log_left_by_a_crash_is_replayed_then_folded(self):
        """A file whose log was never folded (the server crashed) loads as it was committed; its first fold writes the whole room."""
        room = Room(track_state=True)
        saved = self.open(room)
        self.commit_chat(
            saved, room,
            [(self.A, b"1 Al"), (self.B, b"1 Bo"), (self.C, b"1 Cy"), (self.A, b"2 one"), (self.C, b"4")],
        )
        committed = state(room)
        crash_copy(self.path, self.path + ".crash")
        saved.close()
        crash_copy(self.path + ".crash", self.path)  # as a crash left them
        again = Room(track_state=True)
        reopened = self.open(again, shared=True)
        loaded = state(again)
        again.receive(self.B, b"2 two", 0)
        commit(reopened, again, checkpoint=True)
        self.assertEqual(
            (loaded, self.log_records(), self.table_rows("members"), state(read_back(self.path))),
            (committed, 0, 2, state(again)),
        )

    def test_record_cut_short_by_a_crash_is_left_out(self):
        """A crash in the middle of an append leaves part of a record: the commits before it load, and the next commit follows them."""
        room = Room(track_state=True)
        saved = self.open(room)
        self.commit_chat(saved, room, [(self.A, b"1 Al"), (self.B, b"1 Bo")])
        committed = state(room)
        crash_copy(self.path, self.path + ".crash")
        saved.close()
        crash_copy(self.path + ".crash", self.path)
        whole = os.path.getsize(self.path + "-changes")
        for torn in (b"\x40\0\0\0\x11\x22", b"\0" * 40, b"\x08\0\0\0\x11\x22\x33\x44" + b"\xff" * 8):
            with open(self.path + "-changes", "r+b") as log:
                log.truncate(whole)
                log.seek(whole)
                log.write(torn)
            again = Room(track_state=True)
            reopened = self.open(again)
            self.assertEqual(state(again), committed)
            self.commit_chat(reopened, again, [(self.A, b"2 after")])
            self.assertEqual(state(read_back(self.path)), state(again))
            reopened.close()
            crash_copy(self.path + ".crash", self.path)

    def test_damaged_record_before_others_is_refused(self):
        """A record whose sum is wrong, with records after it, is damage, not a crash: refused, naming the file."""
        room = Room(track_state=True)
        saved = self.open(room)
        self.commit_chat(saved, room, [(self.A, b"1 Al"), (self.B, b"1 Bo"), (self.A, b"2 x")])
        crash_copy(self.path, self.path + ".crash")
        saved.close()
        crash_copy(self.path + ".crash", self.path)
        with open(self.path + "-changes", "r+b") as log:
            log.seek(changelog.HEADER_BYTES + changelog.RECORD_BYTES + 3)
            log.write(b"\xee")
        with self.assertRaises(store.StateFileError) as caught:
            store.check(self.path)
        self.assertEqual(
            str(caught.exception),
            f"{self.path}-changes cannot be used: the record at byte {changelog.HEADER_BYTES} is damaged",
        )

    def test_log_of_another_copy_is_refused(self):
        """A log newer than the tables (put beside another copy of the file) is refused, not replayed."""
        room = Room(track_state=True)
        saved = self.open(room)
        self.commit_chat(saved, room, [(self.A, b"1 Al")])
        old = os.path.join(self.directory.name, "old.db")
        crash_copy(self.path, old)  # generation 0, Al in the log
        commit(saved, room, checkpoint=True)  # generation 1
        self.commit_chat(saved, room, [(self.B, b"1 Bo")])  # in the log of generation 1
        crash_copy(self.path, self.path + ".crash")
        shutil.copyfile(self.path + ".crash-changes", old + "-changes")
        with self.assertRaises(store.StateFileError) as caught:
            store.check(old)
        self.assertEqual(
            str(caught.exception),
            f"{old}-changes is of generation 1, {old} of 0: they are not the same copy of the room",
        )

    def test_clean_stop_leaves_the_file_alone(self):
        """After a checkpoint and close, as the server stops, the file alone holds the room: no -changes beside it."""
        room = Room(track_state=True)
        saved = self.open(room)
        self.commit_chat(saved, room, [(self.A, b"1 Al"), (self.B, b"1 Bo")])
        commit(saved, room, checkpoint=True)
        saved.close()
        self.assertEqual(
            (os.path.exists(self.path + "-changes"), state(read_back(self.path))), (False, state(room))
        )


class MigrationTests(StoreTestCase):
    """
    A state file of udpchat 1.0 (schema version 1) is migrated on opening.
    """

    def write_version_1(self):
        """
        Write, as udpchat 1.0 did, a room in which Al (id 0) is behind: it
        lost one line and the log forgot two of its own lines after its
        position; Bo (id 1) has read everything; Cy (id 2) has left.
        """
        connection = sqlite3.connect(self.path, isolation_level=None)
        try:
            connection.executescript(
                f"""
                PRAGMA application_id = {store.APPLICATION_ID};
                PRAGMA user_version = 1;
                PRAGMA journal_mode = WAL;
                BEGIN;
                CREATE TABLE room (
                    singleton INTEGER PRIMARY KEY CHECK (singleton = 0),
                    next_id INTEGER NOT NULL,
                    saved_at REAL NOT NULL
                );
                CREATE TABLE members (
                    id INTEGER PRIMARY KEY,
                    host TEXT NOT NULL,
                    port INTEGER NOT NULL,
                    name TEXT NOT NULL,
                    position INTEGER NOT NULL,
                    own_forgotten INTEGER NOT NULL,
                    dropped INTEGER NOT NULL,
                    last_seen REAL NOT NULL
                );
                CREATE TABLE lines (
                    sequence INTEGER PRIMARY KEY,
                    author INTEGER,
                    line BLOB NOT NULL
                );
                INSERT INTO room VALUES (0, 3, 100.0);
                COMMIT;
                """
            )
            connection.executemany(
                "INSERT INTO members VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(0, *self.A, "Al", 2, 2, 1, 90.0), (1, *self.B, "Bo", 9, 0, 0, 95.0)],
            )
            connection.executemany(
                "INSERT INTO lines VALUES (?, ?, ?)",
                [(5, 1, b"Bo: b5"), (6, 0, b"Al: a6"), (7, 1, b"Bo: b7"), (8, None, b"Cy has left the group")],
            )
        finally:
            connection.close()

    def write_version_3(self):
        """
        Write a version 3 file (before the changes log): Al and Bo, and Al's
        line for Bo.
        """
        room = Room(track_state=True)
        saved = self.open(room)
        room.receive(self.A, b"1 Al", 0)
        room.receive(self.B, b"1 Bo", 0)
        room.receive(self.A, b"2 hi", 0)
        commit(saved, room, checkpoint=True)  # the tables hold it all
        saved.close()
        connection = sqlite3.connect(self.path, isolation_level=None)
        connection.executescript("BEGIN; ALTER TABLE room DROP COLUMN generation; PRAGMA user_version = 3; COMMIT;")
        connection.close()

    def test_version_3_file_is_migrated_on_open(self):
        """A version 3 file (before the changes log) opens as version 4, as it was."""
        self.write_version_3()
        check(self.path)
        again = self.reopen(shared=True)
        connection = sqlite3.connect(self.path)
        self.addCleanup(connection.close)
        self.assertEqual(
            (
                connection.execute("PRAGMA user_version").fetchone()[0],
                [column[1] for column in connection.execute("PRAGMA table_info(room)")],
                again.members(),
                again.receive(self.B, b"5", 0),
            ),
            (4, ["singleton", "next_id", "saved_at", "generation"], [(self.A, "Al"), (self.B, "Bo")], b"Al: hi"),
        )

    def test_version_2_file_is_migrated_on_open(self):
        """A version 2 file (before sessions) opens as version 4, its members without sessions."""
        self.write_version_3()
        connection = sqlite3.connect(self.path, isolation_level=None)
        connection.executescript(
            """
            BEGIN;
            CREATE TABLE members_2 (
                id INTEGER PRIMARY KEY, host TEXT NOT NULL, port INTEGER NOT NULL,
                name TEXT NOT NULL, position INTEGER NOT NULL, dropped INTEGER NOT NULL,
                last_seen REAL NOT NULL
            );
            INSERT INTO members_2 SELECT id, host, port, name, position, dropped, last_seen FROM members;
            DROP TABLE members;
            ALTER TABLE members_2 RENAME TO members;
            PRAGMA user_version = 2;
            COMMIT;
            """
        )
        connection.close()
        check(self.path)
        again = self.reopen(shared=True)
        connection = sqlite3.connect(self.path)
        self.addCleanup(connection.close)
        self.assertEqual(
            (connection.execute("PRAGMA user_version").fetchone()[0], again.members(), again.receive(self.B, b"5", 0)),
            (4, [(self.A, "Al"), (self.B, "Bo")], b"Al: hi"),
        )

    def test_version_1_file_passes_the_check_untouched(self):
        """L{check} accepts a version 1 file, and writes nothing to it."""
        self.write_version_1()
        with open(self.path, "rb") as f:
            before = f.read()
        check(self.path)
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), before)

    def test_version_1_file_is_migrated_on_open(self):
        """Opening a version 1 file keeps its members, lines and lost-line counts, and makes it version 4."""
        self.write_version_1()
        room = self.reopen(now=100, shared=True)
        restored = (state(room), whole(room.take_changes(everyone=True)))
        connection = sqlite3.connect(self.path)
        self.addCleanup(connection.close)
        schema = (
            connection.execute("PRAGMA user_version").fetchone()[0],
            [column[1] for column in connection.execute("PRAGMA table_info(members)")],
        )
        # Al lost one line and had one more dropped: its own are not lost.
        poll = room.receive(self.A, b"5", 100)
        room.receive(self.C, b"1 Cy", 100)
        self.assertEqual(
            (schema, restored, poll, [m.id for m in room.take_changes().members]),
            (
                (4, ["id", "host", "port", "name", "position", "dropped", "last_seen", *SESSION_COLUMNS]),
                (
                    (
                        [(self.A, "Al"), (self.B, "Bo")],
                        {self.A: [b"Bo: b5", b"Bo: b7", b"Cy has left the group"], self.B: []},
                        4,
                    ),
                    (
                        [MemberState(0, self.A, "Al", 4, 1, 90.0), MemberState(1, self.B, "Bo", 9, 0, 95.0)],
                        5,
                        3,
                    ),
                ),
                b"[2 lines dropped]\nBo: b5\nBo: b7\nCy has left the group",
                [0, 3],
            ),
        )


class CheckTests(StoreTestCase):
    """
    L{check} refuses, read-only, every file that is not a room.
    """

    def assert_refused(self, path, message):
        """C{check} refuses C{path} with C{message}, and leaves its directory as it was."""
        directory = os.path.dirname(path.rstrip(os.sep)) or "."
        before = files(directory) if os.path.isdir(directory) else None
        with self.assertRaises(StateFileError) as caught:
            check(path)
        self.assertIn(message, str(caught.exception))
        if before is not None:
            self.assertEqual(files(directory), before)

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
        room = Room(track_state=True)
        self.open(room).close()
        connection = sqlite3.connect(self.path)
        connection.execute("PRAGMA user_version = 5")
        connection.commit()
        connection.close()
        self.assert_refused(self.path, "has schema version 5; this udpchat reads versions 1, 2, 3, 4")

    def test_empty_name(self):
        """An empty path, or one naming a directory, is not a file name."""
        self.assert_refused("", "is not a file name")
        self.assert_refused(self.directory.name + "/", "is not a file name")

    def test_damaged_past_the_header(self):
        """A state file damaged after its first page is refused, untouched."""
        room = Room(track_state=True)
        saved = self.open(room)
        for i in range(300):
            room.receive(("192.0.2.%d" % (i % 250 + 1,), i + 1), b"1 m%d" % (i,), 0)
        commit(saved, room)
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
        room = Room(track_state=True)
        self.open(room).close()
        check(self.path)


class ValueTests(StoreTestCase):
    """
    Every value of a state file is checked when it is checked and when it is
    loaded: a file holding what udpchat never writes is refused, in one
    line, and left as it was.
    """

    def setUp(self):
        super().setUp()
        # Al (id 0) has "Bo has joined" and "Cy has joined" unread, Cy "Al:
        # one" and "Al: two"; Bo has read everything.  Lines 1 to 4 are held.
        room = Room(track_state=True)
        saved = self.open(room)
        for source, datagram in [
            (self.A, b"1 Al"), (self.B, b"1 Bo"), (self.C, b"1 Cy"),
            (self.A, b"2 one"), (self.A, b"2 two"), (self.B, b"5"),
        ]:
            room.receive(source, datagram, 10)
        commit(saved, room, 10, checkpoint=True)
        saved.close()

    def refusals(self, change):
        """
        Make C{change} (SQL) to the file; return what check() and load()
        say of it, and whether check() left the directory as it was.
        """
        connection = sqlite3.connect(self.path, isolation_level=None)
        connection.executescript(change)
        connection.close()
        before = files(self.directory.name)
        said = []
        try:
            check(self.path)
        except StateFileError as e:
            said.append(str(e))
        untouched = files(self.directory.name) == before
        reader = Store(self.path)
        try:
            reader.open()
            reader.load(Room(track_state=True), 10)
        except StateFileError as e:
            said.append(str(e))
        finally:
            reader.close()
        return said, untouched

    maxDiff = None

    def test_values_udpchat_never_writes_are_refused(self):
        """Missing rows, wrong types, out-of-range numbers, broken references, extra columns and triggers are each refused."""
        cases = [
            ("DELETE FROM room", "0 rows in the table room"),
            ("UPDATE room SET next_id = -5", "room singleton 0: next_id = -5"),
            ("UPDATE room SET saved_at = 'yesterday'", "room singleton 0: saved_at = 'yesterday'"),
            ("UPDATE members SET position = 'abc' WHERE id = 1", "members id 1: position = 'abc'"),
            ("UPDATE members SET dropped = -1 WHERE id = 0", "members id 0: dropped = -1"),
            ("UPDATE members SET last_seen = 'soon' WHERE id = 1", "members id 1: last_seen = 'soon'"),
            ("UPDATE members SET host = 'localhost' WHERE id = 1", "members id 1: host = 'localhost'"),
            ("UPDATE members SET port = 70000 WHERE id = 1", "members id 1: port = 70000"),
            ("UPDATE members SET name = 'B,o' WHERE id = 1", "members id 1: name = 'B,o'"),
            ("UPDATE members SET name = 'Al' WHERE id = 1", "two members named 'Al'"),
            ("UPDATE members SET host = '192.0.2.1', port = 1 WHERE id = 1", "two members at 192.0.2.1 port 1"),
            ("UPDATE members SET id = 7 WHERE id = 2", "members id 7, not below room next_id = 3"),
            ("UPDATE members SET position = 99 WHERE id = 2", "members id 2: position = 99, beyond the lines held (1 to 4)"),
            ("UPDATE lines SET author = 5 WHERE author = 0", "lines sequence 3: author = 5, not below room next_id = 3"),
            ("UPDATE lines SET line = x'ff00' WHERE sequence = 3", "lines sequence 3: line = b'\\xff\\x00'"),
            ("UPDATE lines SET line = 'text' WHERE sequence = 3", "lines sequence 3: line = 'text'"),
            ("DELETE FROM lines WHERE sequence = 2", "no lines sequence 2, yet a line 3"),
            ("ALTER TABLE members ADD COLUMN extra", "the columns members(id, host, port, name, position, dropped, last_seen, "
             "token, nonce, seq, reply, told, budget, replied_host, replied_port, extra)"),
            ("CREATE TRIGGER t AFTER INSERT ON lines BEGIN SELECT 1; END", "the trigger t"),
            ("CREATE TABLE more (x)", "the table more"),
        ]
        good = open(self.path, "rb").read()
        said = {}
        for change, message in cases:
            with open(self.path, "wb") as f:
                f.write(good)
            refusals, untouched = self.refusals(change)
            said[change] = (refusals, untouched)
        self.assertEqual(
            said,
            {
                change: ([f"{self.path} holds what udpchat never writes: {message}"] * 2, True)
                for change, message in cases
            },
        )


class JournalTests(StoreTestCase):
    """
    A state file with its write-ahead log beside it (as a crash leaves it)
    is checked from a copy: nothing is created beside it, refused or not.
    """

    def crashed(self, change=None):
        """
        Copy the file and its -wal, as they stand while a store holds a room
        in them (and after another connection made C{change}), to
        C{crash.db} and C{crash.db-wal}; return the copy's path.  The
        commit is folded into the tables, in the -wal.
        """
        room = Room(track_state=True)
        saved = self.open(room, shared=change is not None, log_bytes=0)
        for source, datagram in [(self.A, b"1 Al"), (self.B, b"1 Bo"), (self.A, b"2 one")]:
            room.receive(source, datagram, 0)
        commit(saved, room)
        if change is not None:
            other = sqlite3.connect(self.path, isolation_level=None)
            self.addCleanup(other.close)
            other.executescript(change)
        copy = os.path.join(self.directory.name, "crash.db")
        shutil.copyfile(self.path, copy)
        shutil.copyfile(self.path + "-wal", copy + "-wal")
        return copy

    def crash_files(self):
        return {name: data for name, data in files(self.directory.name).items() if name.startswith("crash")}

    def test_file_with_its_journal_is_checked_without_a_trace(self):
        """A good file and its -wal pass the check, and get no -shm."""
        copy = self.crashed()
        before = self.crash_files()
        check(copy)
        self.assertEqual(
            (sorted(before), self.crash_files() == before, read_back(copy).members()),
            (["crash.db", "crash.db-wal"], True, [(self.A, "Al"), (self.B, "Bo")]),
        )

    def test_refused_file_with_its_journal_gets_no_shm(self):
        """A bad value in the -wal is refused, and the file and its -wal stay as they were, with no -shm."""
        copy = self.crashed("UPDATE members SET dropped = -1 WHERE id = 1")
        before = self.crash_files()
        with self.assertRaises(StateFileError) as caught:
            check(copy)
        self.assertEqual(
            (str(caught.exception), self.crash_files() == before),
            (f"{copy} holds what udpchat never writes: members id 1: dropped = -1", True),
        )

    def test_empty_file_beside_a_journal_is_refused(self):
        """A 0-byte file with a -wal that is not empty is refused by check and open, both left as they were."""
        copy = self.crashed()
        open(copy, "wb").close()
        before = self.crash_files()
        refusals = []
        for attempt in (check, lambda path: Store(path).open()):
            with self.assertRaises(StateFileError) as caught:
                attempt(copy)
            refusals.append(str(caught.exception))
        wal_bytes = len(before["crash.db-wal"])
        self.assertEqual(
            (refusals, self.crash_files() == before),
            (
                [
                    f"{copy} is empty but {copy}-wal holds {wal_bytes} bytes of its commits: "
                    f"put {copy} back, or remove {copy}-wal to start a new room"
                ] * 2,
                True,
            ),
        )


class WatchTests(StoreTestCase):
    """
    L{Store.watch} notices a file, its write-ahead log or its changes log
    deleted or replaced under an open store, which then commits no more.
    """

    def setUp(self):
        super().setUp()
        self.room = Room(track_state=True)
        self.saved = Store(self.path)
        self.saved.open()
        self.addCleanup(self.saved.close)
        self.saved.load(self.room, 0)
        for source, datagram in [(self.A, b"1 Al"), (self.B, b"1 Bo"), (self.A, b"2 one")]:
            self.room.receive(source, datagram, 0)
        commit(self.saved, self.room)

    def after(self, reason):
        """What the store says, commits and keeps once C{reason} (a sentence) happened."""
        said = self.saved.watch()
        self.room.receive(self.A, b"2 two", 0)
        with self.assertRaises(StateFileError) as caught:
            commit(self.saved, self.room)
        kept = reason.endswith(("-wal was deleted", "-changes was deleted"))
        return (said, str(caught.exception), self.saved.close()) == (reason, reason, kept)

    def test_files_in_place(self):
        """While nothing happened to the files, there is nothing to say."""
        self.assertIsNone(self.saved.watch())

    def test_deleted_file(self):
        """A deleted file is noticed; nothing is kept at its name."""
        os.unlink(self.path)
        self.assertTrue(self.after(f"{self.path} was deleted"))

    def test_replaced_file(self):
        """A file put in place of the store's is noticed, and left as it is."""
        other = os.path.join(self.directory.name, "other")
        with open(other, "wb") as f:
            f.write(b"somebody else's")
        os.replace(other, self.path)
        self.assertTrue(self.after(f"{self.path} was replaced by another file"))
        self.assertEqual(open(self.path, "rb").read(), b"somebody else's")

    def test_deleted_journal_is_written_back(self):
        """A deleted -wal is noticed; closing writes its commits back into the file."""
        os.unlink(self.path + "-wal")
        self.assertTrue(self.after(f"{self.path}-wal was deleted"))
        self.assertEqual(
            state(read_back(self.path)),
            ([(self.A, "Al"), (self.B, "Bo")], {self.A: [b"Bo has joined"], self.B: [b"Al: one"]}, 2),
        )


    def test_deleted_changes_log_is_written_back(self):
        """A deleted -changes is noticed; closing writes what it held into the file."""
        os.unlink(self.path + "-changes")
        self.assertTrue(self.after(f"{self.path}-changes was deleted"))
        self.assertEqual(
            (os.path.exists(self.path + "-changes"), state(read_back(self.path))),
            (False, ([(self.A, "Al"), (self.B, "Bo")], {self.A: [b"Bo has joined"], self.B: [b"Al: one"]}, 2)),
        )


class FullDiskTests(StoreTestCase):
    """
    A commit on a full filesystem (a real one: a small tmpfs, as root).
    """

    def test_full_disk_is_a_write_error_that_saves_nothing(self):
        """The commit fails with the system's words, saves nothing, and the room reverts; once space is back, commits work."""
        directory = small_filesystem(self, "256k")
        path = os.path.join(directory, "room.db")
        room = Room(track_state=True)
        saved = Store(path)
        saved.open()
        self.addCleanup(saved.close)
        saved.load(room, 0)
        room.receive(self.A, b"1 Al", 0)
        room.receive(self.B, b"1 Bo", 0)
        commit(saved, room)
        ballast = fill(directory)
        # Lines of a page and more each: more than the last block's slack.
        for i in range(4):
            room.receive(self.A, b"2 " + b"%d" % i * 1000, 0)
        with self.assertRaises(StateWriteError) as caught:
            commit(saved, room)
        saved.revert(room)
        reverted = state(room)
        os.unlink(ballast)
        room.receive(self.A, b"2 back", 0)
        commit(saved, room)
        self.assertEqual(
            (str(caught.exception), reverted, room.receive(self.B, b"5", 0)),
            (
                "No space left on device",
                ([(self.A, "Al"), (self.B, "Bo")], {self.A: [b"Bo has joined"], self.B: []}, 1),
                b"Al: back",
            ),
        )


class LockTests(StoreTestCase):
    """
    One store per file, whatever name it is reached by: L{lock} (before
    twistd forks) and L{Store.open} lock the file itself.
    """

    def setUp(self):
        super().setUp()
        room = Room(track_state=True)
        self.open(room).close()

    def hand_over(self, path):
        """Open and close a store on C{path}: it takes over the lock L{lock} took, and releases it."""
        taken = Store(path)
        taken.open()
        taken.close()

    def assert_refused(self, function, path):
        with self.assertRaises(StateFileError) as caught:
            function(path)
        self.assertEqual(str(caught.exception), f"another udpchat server is using {path}")

    def test_second_lock_is_refused_until_the_store_closes(self):
        """While lock()'s descriptor or the store that took it over is open, nobody else locks the file; then anybody can."""
        lock(self.path)
        self.assert_refused(lock, self.path)
        saved = Store(self.path)
        saved.open()  # takes lock()'s descriptor over
        self.assert_refused(lock, self.path)
        self.assert_refused(lambda path: Store(path).open(), self.path)
        saved.close()
        lock(self.path)
        self.hand_over(self.path)

    def test_other_names_of_the_file_are_refused(self):
        """A symbolic link and a hard link to a file in use are refused, as the file is."""
        saved = Store(self.path)
        saved.open()
        self.addCleanup(saved.close)
        symbolic = os.path.join(self.directory.name, "symbolic.db")
        hard = os.path.join(self.directory.name, "hard.db")
        os.symlink(self.path, symbolic)
        os.link(self.path, hard)
        for name in (symbolic, hard):
            self.assert_refused(lock, name)
            self.assert_refused(lambda path: Store(path).open(), name)

    def test_a_new_file_is_locked_by_the_store_that_creates_it(self):
        """lock() finds no file to lock; the store creates it locked, leaving nothing else beside it."""
        path = os.path.join(self.directory.name, "new.db")
        self.assertIsNone(lock(path))
        saved = Store(path)
        saved.open()
        self.addCleanup(saved.close)
        self.assert_refused(lock, path)
        self.assertEqual(
            sorted(name for name in os.listdir(self.directory.name) if name.startswith("new.db")),
            ["new.db", "new.db-changes", "new.db-wal"],
        )

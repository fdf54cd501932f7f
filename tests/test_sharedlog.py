"""
Tests for L{udpchat.sharedlog}: each line stored once, a cursor per reader.
"""

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from udpchat.sharedlog import Cursor, SharedLog

PROPERTY = settings(max_examples=200, deadline=None)


def opened(log, *ids):
    """A new cursor in C{log} for each of C{ids}, opened in order."""
    return [log.open(id) for id in ids]


def look(log, cursor, max_bytes):
    """
    L{SharedLog.look}, with the text it shows as a list of lines (the
    separator never occurs in a line).
    """
    text, position = log.look(cursor, max_bytes)
    return (bytes(text).split(b"\n") if text else []), position


def read(log, cursor, max_bytes):
    """Look at the lines for C{cursor} and take them, as the room does."""
    lines, position = look(log, cursor, max_bytes)
    log.advance(cursor, position)
    return lines


def whole(log, *cursors):
    """
    Everything C{log} lets a reader observe, in one comparable value: the
    lines it holds (numbered), and each cursor's place, unread count and
    unread lines.
    """
    return (
        (log.first, log.end, len(log), log.lines_since(0)),
        [(c.position, log.unread(c), log.peek(c)) for c in cursors],
    )


class SharedLogTests(SynchronousTestCase):
    """
    Tests for L{SharedLog}, where each broadcast line is stored once.
    """

    def test_new_log_holds_nothing(self):
        """A new log is empty, numbered from 0, and has moved nobody."""
        log = SharedLog()
        self.assertEqual((whole(log), log.take_moved()), (((0, 0, 0, []), []), []))

    def test_line_without_readers_is_released_at_once(self):
        """A line appended with no reader to need it is numbered, not held."""
        log = SharedLog()
        log.append(b"x")
        self.assertEqual(whole(log), ((1, 1, 0, []), []))

    def test_line_is_held_until_its_reader_reads_it(self):
        """A line is held while a reader is before it, and released once read."""
        log = SharedLog()
        [reader] = opened(log, 1)
        log.append(b"x")
        held = whole(log, reader)
        self.assertEqual(
            (held, read(log, reader, 100), whole(log, reader)),
            (
                ((0, 1, 1, [(0, None, b"x")]), [(0, 1, [b"x"])]),
                [b"x"],
                ((1, 1, 0, []), [(1, 0, [])]),
            ),
        )

    def test_look_does_not_move(self):
        """Looking shows the lines and where they end, and changes nothing."""
        log = SharedLog()
        reader, other = opened(log, 1, 2)
        for line in (b"a", b"b"):
            log.append(line, other)
        before = whole(log, reader, other)
        self.assertEqual(
            (look(log, reader, 100), whole(log, reader, other)),
            (([b"a", b"b"], 2), before),
        )

    def test_repeated_look_shows_the_same_lines(self):
        """A reader that looks again before it advances is shown the same lines again."""
        log = SharedLog()
        reader, other = opened(log, 1, 2)
        for line in (b"aaaa", b"mine", b"bbbb", b"cc"):
            log.append(line, reader if line == b"mine" else other)
        looks = [look(log, reader, 9) for _ in range(3)]
        self.assertEqual(looks, [([b"aaaa", b"bbbb"], 3)] * 3)

    def test_advance_takes_what_look_showed_not_what_came_since(self):
        """Advancing to the position a look returned passes only the lines it showed."""
        log = SharedLog()
        [reader] = opened(log, 1)
        log.append(b"a")
        lines, position = look(log, reader, 100)
        log.append(b"b")
        log.advance(reader, position)
        self.assertEqual(
            (lines, whole(log, reader), read(log, reader, 100)),
            ([b"a"], ((1, 2, 1, [(1, None, b"b")]), [(1, 1, [b"b"])]), [b"b"]),
        )

    def test_new_reader_sees_only_later_lines(self):
        """A reader opened after a line does not get it."""
        log = SharedLog()
        [first] = opened(log, 1)
        log.append(b"a")
        [second] = opened(log, 2)
        log.append(b"b")
        self.assertEqual(
            (read(log, second, 100), read(log, first, 100), len(log)),
            ([b"b"], [b"a", b"b"], 0),
        )

    def test_look_skips_readers_own_lines(self):
        """A reader is never shown lines it is the author of, and advances past them."""
        log = SharedLog()
        me, other = opened(log, 1, 2)
        log.append(b"theirs", other)  # "me" is now behind
        log.append(b"mine", me)
        log.append(b"theirs again", other)
        log.append(b"mine again", me)
        before = (log.peek(me), log.unread(me))
        self.assertEqual(
            (before, read(log, me, 100), whole(log, me)),
            (
                ([b"theirs", b"theirs again"], 2),
                [b"theirs", b"theirs again"],
                # Held for the other reader, which has not read them.
                ((1, 4, 3, [(1, 1, b"mine"), (2, 2, b"theirs again"), (3, 1, b"mine again")]), [(4, 0, [])]),
            ),
        )

    def test_caught_up_author_skips_its_own_line_at_once(self):
        """An author with nothing unread is moved past its own line when it writes it."""
        log = SharedLog()
        me, other = opened(log, 1, 2)
        log.append(b"mine", me)
        self.assertEqual(
            (whole(log, me, other), log.take_moved()),
            (((0, 1, 1, [(0, 1, b"mine")]), [(1, 0, []), (0, 1, [b"mine"])]), []),
        )

    def test_look_takes_whole_lines_that_fit(self):
        """Reading takes the oldest lines that fit the byte limit, separators included."""
        log = SharedLog()
        [reader] = opened(log, 1)
        for line in (b"aaaa", b"bbbb", b"cc"):
            log.append(line)
        first = read(log, reader, 8)
        second = read(log, reader, 9)
        self.assertEqual(
            (first, second, read(log, reader, 9), whole(log, reader)),
            ([b"aaaa"], [b"bbbb", b"cc"], [], ((3, 3, 0, []), [(3, 0, [])])),
        )

    def test_look_shows_nothing_when_the_first_line_does_not_fit(self):
        """A line longer than the limit is not shown, and the position does not pass it."""
        log = SharedLog()
        [reader] = opened(log, 1)
        log.append(b"toolong")
        self.assertEqual(look(log, reader, 6), ([], 0))

    def test_line_is_held_until_every_reader_passes_it(self):
        """With two readers, a line goes only when both have read it."""
        log = SharedLog()
        r1, r2 = opened(log, 1, 2)
        log.append(b"a")
        log.append(b"b")
        lengths = [len(log)]
        read(log, r1, 100)
        lengths.append(len(log))
        read(log, r2, 100)
        lengths.append(len(log))
        self.assertEqual(lengths, [2, 2, 0])

    def test_close_releases_what_only_it_needed(self):
        """Closing the slowest reader releases the lines the others have passed."""
        log = SharedLog()
        [slow] = opened(log, 1)
        log.append(b"a")
        [fast] = opened(log, 2)
        log.append(b"b")
        before = len(log)
        log.close(slow)
        after = whole(log, fast)
        self.assertEqual(
            (before, after, read(log, fast, 100), len(log)),
            (2, ((1, 2, 1, [(1, None, b"b")]), [(1, 1, [b"b"])]), [b"b"], 0),
        )

    def test_close_one_of_two_readers_at_a_position(self):
        """Readers at the same position are counted: closing one keeps the lines for the other."""
        log = SharedLog()
        r1, r2 = opened(log, 1, 2)
        log.append(b"a")
        log.close(r1)
        held = len(log)
        self.assertEqual((held, read(log, r2, 100), len(log)), (1, [b"a"], 0))

    def test_capacity_forgets_oldest_lines(self):
        """A log with a capacity never holds more lines than that, read or not."""
        log = SharedLog(capacity=3)
        [reader] = opened(log, 1)
        for i in range(5):
            log.append(b"%d" % (i,))
        self.assertEqual(
            whole(log, reader),
            (
                (2, 5, 3, [(2, None, b"2"), (3, None, b"3"), (4, None, b"4")]),
                [(0, 3, [b"2", b"3", b"4"])],
            ),
        )

    def test_discard_counts_forgotten_lines(self):
        """A reader behind forgotten lines loses them, and is told how many."""
        log = SharedLog(capacity=3)
        [reader] = opened(log, 1)
        for i in range(5):
            log.append(b"%d" % (i,))
        self.assertEqual(
            (log.discard(reader, 10), reader.position, read(log, reader, 100), log.discard(reader, 10)),
            (2, 2, [b"2", b"3", b"4"], 0),
        )

    def test_discard_keeps_newest_lines(self):
        """Discarding down to C{keep} lines drops the oldest unread ones."""
        log = SharedLog()
        [reader] = opened(log, 1)
        for i in range(5):
            log.append(b"%d" % (i,))
        self.assertEqual((log.discard(reader, 2), read(log, reader, 100), len(log)), (3, [b"3", b"4"], 0))

    def test_discard_skips_own_lines_among_the_dropped(self):
        """Own lines are never counted toward what C{keep} keeps, nor as lost."""
        log = SharedLog()
        me, other = opened(log, 1, 2)
        for line in (b"o1", b"m1", b"o2", b"m2", b"o3"):
            log.append(line, me if line.startswith(b"m") else other)
        self.assertEqual(
            (log.unread(me), log.discard(me, 1), read(log, me, 100), len(log.peek(other))),
            (3, 2, [b"o3"], 2),
        )

    def test_forgotten_own_lines_are_not_counted_as_lost(self):
        """A reader's own lines that the log forgot are not lines it lost: its position steps over them."""
        log = SharedLog(capacity=4)
        me, other = opened(log, 1, 2)
        log.append(b"o1", other)
        for i in range(5):
            log.append(b"m%d" % (i,), me)
        log.append(b"o2", other)
        # The log holds m2 m3 m4 o2: o1, m0 and m1 are forgotten; of these,
        # me lost o1 only, and its position stepped over m0 and m1.
        behind = (log.first, me.position, log.unread(me))
        self.assertEqual(
            (behind, log.discard(me, 10), read(log, me, 100), whole(log, me)),
            (
                (3, 2, 1),
                1,
                [b"o2"],
                ((3, 7, 4, [(3, 1, b"m2"), (4, 1, b"m3"), (5, 1, b"m4"), (6, 2, b"o2")]), [(7, 0, [])]),
            ),
        )

    def test_take_moved_reports_reader_whose_own_line_was_forgotten(self):
        """When the log forgets a reader's own unread line, it reports the reader's id, once."""
        log = SharedLog(capacity=2)
        me, other = opened(log, 7, 8)
        log.append(b"o1", other)  # me is behind: its lines wait in the log
        log.append(b"m1", me)
        quiet = log.take_moved()  # nothing forgotten yet
        log.append(b"m2", me)  # o1 forgotten: not me's line
        forgot_theirs = log.take_moved()
        log.append(b"o2", other)  # m1 forgotten: me steps over it
        self.assertEqual(
            (quiet, forgot_theirs, log.take_moved(), log.take_moved(), me.position, log.first),
            ([], [], [7], [], 1, 2),
        )

    def test_take_moved_reports_each_reader_once(self):
        """A reader that lost several of its own lines since the last ask is reported once, in the order first moved."""
        log = SharedLog(capacity=1)
        me, other, third = opened(log, 7, 8, 9)
        log.append(b"x")  # all behind
        log.append(b"m1", me)  # x forgotten
        log.append(b"o1", other)  # m1 forgotten: me moved
        log.append(b"m2", me)  # o1 forgotten: other moved
        log.append(b"m3", me)  # m2 forgotten: me moved again
        self.assertEqual((log.take_moved(), me.position, other.position), ([7, 8], 2, 1))

    def test_take_moved_ignores_lines_the_author_had_passed(self):
        """Forgetting a line whose author had already passed it, or had none, moves nobody."""
        log = SharedLog(capacity=1)
        me, other = opened(log, 7, 8)
        log.append(b"m1", me)  # me is caught up: it passes its line at once
        log.append(b"x")  # m1 forgotten
        log.append(b"y")  # x, by nobody, forgotten
        self.assertEqual((log.take_moved(), me.position, other.position, log.first), ([], 1, 0, 2))

    def test_take_moved_ignores_closed_readers(self):
        """A reader closed before its own line is forgotten is not reported."""
        log = SharedLog(capacity=1)
        me, other = opened(log, 7, 8)
        log.append(b"o1", other)
        log.append(b"m1", me)  # o1 forgotten
        log.close(me)
        log.append(b"x")  # m1 forgotten
        self.assertEqual((log.take_moved(), whole(log, other)), ([], ((2, 3, 1, [(2, None, b"x")]), [(1, 1, [b"x"])])))

    def test_lines_since_numbers_lines_with_their_authors(self):
        """Each line held comes with its sequence number and its author's id; lines not held do not."""
        log = SharedLog()
        first, second = opened(log, 7, 8)
        log.append(b"a", first)
        log.append(b"b")
        log.append(b"c", second)
        read(log, first, 100)
        held = (log.lines_since(0), log.lines_since(1), log.lines_since(3))
        read(log, second, 100)
        self.assertEqual(
            (held, log.lines_since(0)),
            (([(0, 7, b"a"), (1, None, b"b"), (2, 8, b"c")], [(1, None, b"b"), (2, 8, b"c")], []), []),
        )

    def test_restore_rebuilds_the_log(self):
        """A log restored from its lines and its readers' positions is the same log."""
        log = SharedLog(capacity=5)
        me, other, third = opened(log, 1, 2, 3)
        for i in range(4):
            log.append(b"o%d" % (i,), other)
            log.append(b"m%d" % (i,), me)
        log.discard(third, 100)  # third fell behind the lines forgotten
        read(log, third, 100)
        log.append(b"t", third)
        log.take_moved()
        again = SharedLog(capacity=5)
        cursors = [Cursor(c.id, c.position) for c in (me, other, third)]
        again.restore(log.first, [(author, line) for _, author, line in log.lines_since(log.first)], cursors)
        restored = (whole(again, *cursors), again.take_moved())
        before = (whole(log, me, other, third), [])

        def catch_up(log, cursors):
            # Each reader's losses, then its lines, as a poll would.
            return [(log.discard(c, 100), read(log, c, 100)) for c in cursors]

        self.assertEqual(
            (restored, catch_up(again, cursors), whole(again, *cursors)),
            (before, catch_up(log, (me, other, third)), whole(log, me, other, third)),
        )

    def test_restore_with_smaller_capacity_forgets_and_moves(self):
        """Restored into a smaller capacity, the log forgets its oldest lines and reports the authors it moved."""
        log = SharedLog()
        me, other = opened(log, 1, 2)
        log.append(b"o1", other)
        for i in range(3):
            log.append(b"m%d" % (i,), me)
        small = SharedLog(capacity=2)
        cursors = [Cursor(1, me.position), Cursor(2, other.position)]
        small.restore(0, [(author, line) for _, author, line in log.lines_since(0)], cursors)
        self.assertEqual(
            (whole(small, *cursors), small.take_moved(), small.discard(cursors[0], 10)),
            (((2, 4, 2, [(2, 1, b"m1"), (3, 1, b"m2")]), [(1, 0, []), (1, 2, [b"m1", b"m2"])]), [1], 1),
        )

    @PROPERTY
    @given(
        st.integers(1, 6),
        st.lists(
            st.tuples(
                st.sampled_from(
                    ["open", "append", "append", "append", "read", "look", "close", "discard", "restore"]
                ),
                st.integers(0, 5),
                st.binary(min_size=1, max_size=12),
                st.integers(0, 40),
            ),
            min_size=1,
            max_size=80,
        ),
    )
    def test_log_agrees_with_a_list_per_reader(self, capacity, operations):
        """Any mix of operations gives what a naive list of lines gives, holds only what is needed, and moves only authors whose own unread line it forgot."""
        log = SharedLog(capacity=capacity)
        lines = []  # (author id, line), all ever appended
        # Two readers to begin with, so that most steps have one to act on.
        cursors = {id: log.open(id) for id in (0, 1)}  # id -> Cursor, in the order opened
        indexes = {0: 0, 1: 0}  # reader id -> index into lines of the next line to read
        next_id = 2

        def first():
            """The first line held: none a reader is behind, at most capacity lines."""
            return max(min(indexes.values(), default=len(lines)), len(lines) - capacity)

        def theirs(id, start, stop):
            return [i for i in range(start, stop) if lines[i][0] != id]

        def mine(id, start, stop):
            return [i for i in range(start, stop) if lines[i][0] == id]

        for op, which, line, limit in operations:
            moved = []
            if op == "open" or (op in ("read", "look", "close", "discard") and not cursors):
                cursors[next_id] = log.open(next_id)
                indexes[next_id] = len(lines)
                next_id += 1
            elif op == "append":
                author = list(cursors)[which % len(cursors)] if cursors and which < 4 else None
                log.append(line, cursors.get(author))
                if author is not None and indexes[author] == len(lines):
                    indexes[author] += 1
                lines.append((author, line))
                forgotten = len(lines) - 1 - capacity
                if forgotten >= 0:
                    owner = lines[forgotten][0]
                    if owner in indexes and indexes[owner] <= forgotten:
                        moved = [owner]
            elif op == "restore":
                log, old = SharedLog(capacity=capacity), log
                cursors = {id: Cursor(id, c.position) for id, c in cursors.items()}
                log.restore(
                    old.first,
                    [(author, text) for _, author, text in old.lines_since(old.first)],
                    list(cursors.values()),
                )
            else:
                id = list(cursors)[which % len(cursors)]
                cursor = cursors[id]
                position = max(indexes[id], first())
                if op == "close":
                    log.close(cursor)
                    del cursors[id], indexes[id]
                elif op == "discard":
                    lost = len(theirs(id, indexes[id], position))
                    unread = theirs(id, position, len(lines))
                    dropped = unread[: max(0, len(unread) - limit)]
                    self.assertEqual(log.discard(cursor, limit), lost + len(dropped))
                    indexes[id] = dropped[-1] + 1 if dropped else position
                else:
                    log.discard(cursor, len(lines))
                    indexes[id] = position
                    taken, size, index = [], -1, position
                    while index < len(lines):
                        author, text = lines[index]
                        if author != id:
                            size += 1 + len(text)
                            if size > limit:
                                break
                            taken.append(text)
                        index += 1
                    # Looking moves nothing: a second look shows the same.
                    self.assertEqual(
                        [log.look(cursor, limit) for _ in range(2)],
                        [(b"\n".join(taken), index)] * 2,
                    )
                    if op == "read":
                        log.advance(cursor, index)
                        indexes[id] = index
            start = first()
            self.assertEqual(
                (
                    log.take_moved(),
                    (log.first, log.end, len(log)),
                    {id: (c.position, log.unread(c), log.peek(c)) for id, c in cursors.items()},
                ),
                (
                    moved,
                    (start, len(lines), len(lines) - start),
                    {
                        # Behind the first line, a position counts the lines
                        # lost: the reader's own lines there are stepped over.
                        id: (
                            indexes[id] + len(mine(id, indexes[id], start)),
                            len(theirs(id, max(indexes[id], start), len(lines))),
                            [lines[i][1] for i in theirs(id, max(indexes[id], start), len(lines))],
                        )
                        for id in cursors
                    },
                ),
            )

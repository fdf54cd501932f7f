"""
The shared log of a room: each line broadcast, stored once, and a read
position (a L{Cursor}) for each reader.

No I/O here, and no knowledge of members, names or requests.  Authors and
readers are integers (a member's id), never objects: ids cross processes
and files, as a store or a replica of the log needs.

Reading is two steps: L{SharedLog.look} at the lines after a position, up to
a byte budget, then L{SharedLog.advance} the position.  A reader that asks
again before it advances is shown the same lines again.
"""

from bisect import bisect_right
from collections import deque
from itertools import accumulate

from udpchat.wire import LINE_SEPARATOR

_FEW = 4
"""Own lines a look passes the quick way (it costs a step per own line)."""

_SEPARATOR_BYTES = len(LINE_SEPARATOR)


class Cursor:
    """
    A reader's place in a L{SharedLog}.

    @ivar id: the reader's id, which its own lines carry as their author.
    @ivar position: the sequence number of the next line to read.  Behind
        the log's first line, C{log.first - position} is how many lines,
        not its own, the reader lost when the log forgot them.
    @ivar own: the sequence numbers of the reader's own lines at or after
        C{position} that the log still holds, oldest first; L{None} until it
        speaks with lines unread (most readers never need one).
    """

    __slots__ = ("id", "position", "own")

    def __init__(self, id, position=0):
        self.id = id
        self.position = position
        self.own = None

    def __repr__(self):
        return f"Cursor({self.id!r}, {self.position!r})"


class SharedLog:
    """
    The lines broadcast to a room, each stored once, with its author's id.

    The log counts its readers at each position; a line that no reader is at
    or before is released.  With a C{capacity}, the log also forgets its
    oldest line whenever it would hold more than that, read or not: readers
    learn how many lines they lost from their position.  Every operation
    costs O(1) amortised, except those that pass lines (L{discard},
    L{look}, L{advance}, L{peek}), which cost O(lines passed).

    @param capacity: the most lines held at once, or L{None} for no limit.
    @ivar first: the sequence number of the oldest line held (read it;
        only the log changes it).
    @ivar end: the sequence number the next line will get (likewise).
    """

    def __init__(self, capacity=None):
        self.capacity = capacity
        # Three parallel lists, for sequence numbers _base, _base + 1, ...:
        # each line, its author's id, and where it ends in the bytes of the
        # log as if every line were followed by a separator (_ends has one
        # more item: where the line before _base ended).  With _ends a look
        # finds how many lines fit by bisection, and takes them as a slice.
        self._lines = []
        self._authors = []
        self._ends = [0]
        self._base = 0  # sequence number of _lines[0]
        self.end = 0
        self.first = 0
        # position -> how many readers are there; a reader behind first
        # (it has not read lines the log forgot) is counted at first.
        self._readers = {}
        self._cursors = {}  # id -> the open Cursor of that reader
        # Ids of the cursors the log moved by itself, each once (a dict as
        # an ordered set): bounded by the readers, however seldom asked.
        self._moved = {}

    def __len__(self):
        """How many lines the log still holds for its readers."""
        return self.end - self.first

    def lines_since(self, sequence):
        """
        The lines held from sequence number C{sequence} on, as
        C{(sequence, author id or None, line)}.
        """
        start = max(sequence, self.first)
        index = start - self._base
        return list(zip(range(start, self.end), self._authors[index:], self._lines[index:]))

    def take_moved(self):
        """
        The ids of the cursors the log moved by itself (forgetting one of
        their own lines) since this was last asked, each once, for their
        owner to save.
        """
        moved, self._moved = self._moved, {}
        return list(moved)

    def open(self, id):
        """
        A new L{Cursor} for reader C{id}, at the end: it sees only lines to
        come.
        """
        cursor = self._cursors[id] = Cursor(id, self.end)
        self._readers[self.end] = self._readers.get(self.end, 0) + 1
        return cursor

    def close(self, cursor):
        """Forget C{cursor}; release what only it still needed."""
        self._uncount(cursor.position)
        del self._cursors[cursor.id]
        cursor.own = None
        self._release()

    def append(self, line, author=None):
        """
        Store C{line}, written by the reader at C{author} (a L{Cursor}, whose
        reader will never be shown it), or by nobody (L{None}).
        """
        sequence = self.end
        self._lines.append(line)
        ends = self._ends
        ends.append(ends[-1] + len(line) + _SEPARATOR_BYTES)
        self.end = sequence + 1
        if author is None:
            self._authors.append(None)
        else:
            self._authors.append(author.id)
            if author.position == sequence:
                # The author has read everything else, so it skips its own
                # line now, which lets the log release the line as soon as
                # the others have read it (at once, in a room of one).
                self._move(author, sequence + 1)
            elif author.own is None:
                author.own = deque((sequence,))
            else:
                author.own.append(sequence)
        if self.capacity is not None and sequence + 1 - self.first > self.capacity:
            self._forget_oldest()
        elif self.first == sequence:
            # The log held nothing anyone needed: if no reader waits at
            # this line either (an empty room), it is released at once.
            self._release()

    def unread(self, cursor):
        """
        How many lines C{cursor} has yet to read, not counting its own, nor
        those the log has forgotten.
        """
        position = max(cursor.position, self.first)
        return self.end - position - (len(cursor.own) if cursor.own else 0)

    def discard(self, cursor, keep):
        """
        Move C{cursor} past every line the log has forgotten, then past its
        unread lines but the newest C{keep}.

        @return: how many lines (not its own) its reader has thereby lost.
        """
        lost = 0
        position = cursor.position
        if position < self.first:
            lost = self.first - position
            position = self.first
        excess = self.unread(cursor) - keep
        if excess > 0:
            lost += excess
            authors, own, id = self._authors, cursor.own, cursor.id
            index = position - self._base
            while excess:
                if authors[index] == id:
                    own.popleft()
                else:
                    excess -= 1
                index += 1
            position = self._base + index
        self._move(cursor, position)
        return lost

    def look(self, cursor, max_bytes):
        """
        The lines for C{cursor}, oldest first, skipping its own: as many
        whole lines as fit into C{max_bytes} once joined by the separator.
        Nothing moves: L{advance} to the position returned takes them.
        Call L{discard} first if the cursor may be behind the first line.

        @return: C{(text, position)}: the lines joined by the separator,
            and the position just past them (and past any own lines among
            or after them).
        """
        lines, ends, own, base = self._lines, self._ends, cursor.own, self._base
        count = len(lines)
        index = cursor.position - base
        # The usual poll: every line fits, and the reader has no more than
        # a few of its own among them.  One slice of the lines, with its own
        # cut out.
        if own is None or len(own) <= _FEW:
            budget = max_bytes + _SEPARATOR_BYTES - (ends[count] - ends[index])
            if own:
                for sequence in own:
                    budget += ends[sequence - base + 1] - ends[sequence - base]
            if budget >= 0:
                taken = lines[index:]
                if own:
                    for sequence in reversed(own):
                        del taken[sequence - base - index]
                return LINE_SEPARATOR.join(taken), base + count
        taken = []
        passed = 0  # own lines passed, own[passed] is the next one
        stop = own[0] - base if own else count
        # Every line costs its length and a separator; the first line's
        # separator is free.
        budget = max_bytes + _SEPARATOR_BYTES
        while index < count:
            # The lines up to the reader's next own line, if any, are one
            # run: take as many of them as fit, in one slice.
            fit = bisect_right(ends, ends[index] + budget, index, stop + 1) - 1
            taken += lines[index:fit]
            budget -= ends[fit] - ends[index]
            index = fit
            if fit < stop:
                break  # the next line does not fit
            if stop < count:
                index += 1  # its own line: pass it
                passed += 1
                stop = own[passed] - base if passed < len(own) else count
        return LINE_SEPARATOR.join(taken), base + index

    def advance(self, cursor, position):
        """Move C{cursor} to C{position}, past what L{look} showed it."""
        own = cursor.own
        if own:
            while own and own[0] < position:
                own.popleft()
        self._move(cursor, position)

    def peek(self, cursor):
        """
        The lines C{cursor} has not read yet and the log still holds, not
        its own, without taking them.
        """
        start = max(cursor.position, self.first) - self._base
        id = cursor.id
        return [
            line
            for author, line in zip(self._authors[start:], self._lines[start:])
            if author != id
        ]

    def restore(self, first, entries, cursors):
        """
        Make this (new) log hold C{entries}, C{(author id or None, line)}
        pairs numbered from C{first}, read by C{cursors} (new L{Cursor}s, at
        the positions saved) that it adopts as if it had opened them.
        """
        self._authors = [author for author, _ in entries]
        self._lines = [line for _, line in entries]
        self._ends = list(
            accumulate((len(line) + _SEPARATOR_BYTES for line in self._lines), initial=0)
        )
        self._base = self.first = first
        self.end = first + len(self._lines)
        by_id = self._cursors
        for cursor in cursors:
            position = max(cursor.position, first)
            self._readers[position] = self._readers.get(position, 0) + 1
            by_id[cursor.id] = cursor
        for sequence, author in enumerate(self._authors, first):
            cursor = by_id.get(author)
            if cursor is not None and sequence >= cursor.position:
                if cursor.own is None:
                    cursor.own = deque()
                cursor.own.append(sequence)
        self._release()
        # Restarted with a smaller capacity: forget down to the new size.
        while self.capacity is not None and len(self) > self.capacity:
            self._forget_oldest()

    def _move(self, cursor, position):
        old = cursor.position
        if position != old:
            readers = self._readers
            readers[position] = readers.get(position, 0) + 1
            # _uncount(old), inlined: this runs for nearly every poll.
            counted = old if old > self.first else self.first
            if readers[counted] == 1:
                del readers[counted]
            else:
                readers[counted] -= 1
            cursor.position = position
            if old <= self.first:
                # It may have been the last reader at the first line held.
                self._release()

    def _uncount(self, position):
        # A reader behind the forgotten lines is counted at the first line.
        position = max(position, self.first)
        readers = self._readers
        if readers[position] == 1:
            del readers[position]
        else:
            readers[position] -= 1

    def _forget_oldest(self):
        sequence = self.first
        author = self._authors[sequence - self._base]
        if author is not None:
            # Only the line's author can find it among its own lines, and
            # only if it had not passed it; then the author did not lose
            # it: step its position over it, so that first - position
            # still counts only lines it lost.  (An author that has left
            # has no cursor any more.)
            cursor = self._cursors.get(author)
            if cursor is not None and cursor.own and cursor.own[0] == sequence:
                cursor.own.popleft()
                cursor.position += 1
                self._moved[author] = None
        # Readers still at this line will resume at the next one: count
        # them there, so that the log keeps what they will read.
        readers = self._readers
        waiting = readers.pop(sequence, 0)
        self.first = sequence + 1
        if waiting:
            readers[sequence + 1] = readers.get(sequence + 1, 0) + waiting
            # The new first line has readers: no scan.  (_compact()'s test,
            # inlined: a full log runs this for every line appended.)
            if (sequence + 1 - self._base) * 2 >= len(self._lines):
                self._compact()
        else:
            self._release()

    def _release(self):
        readers = self._readers
        first, end = self.first, self.end
        while first < end and first not in readers:
            first += 1
        self.first = first
        self._compact()

    def _compact(self):
        released = self.first - self._base
        # Compact when at least half the list is released lines, so that
        # memory stays within twice what readers still need.
        if released and released * 2 >= len(self._lines):
            first = self.first
            del self._lines[:released]
            del self._authors[:released]
            del self._ends[:released]
            self._base = first

"""
The chat room: a pure state machine from (source, datagram, now) to reply
bytes.

No I/O here, no reactor and no clock of its own: the protocol adapter in
L{udpchat.server} feeds datagrams in, with the time, and sends the replies
out.  A member is the source address its requests come from; the room treats
it as an opaque, hashable value.

    request    when                        reply            queued for others
    1 Name     not a member, name free     other names      Name has joined
    2 Text     member                      empty            Name: Text
    3 New      member, new name free       empty            Old changed his name to New
    4          member                      empty            Name has left the group
    5          member                      pending lines    -
    otherwise                              Illegal message  -

The full reference, with the parsing rules, is in README.rst.

Every line is stored once, in a L{SharedLog}; a member is a read position in
it.  Broadcasting therefore costs the same in a room of 10 or 10,000
members, and a line is released once every member has read past it, or once
it is too old for anybody's backlog.

The room enforces the limits that concern the room itself: how many members
(in all, and per group of addresses), how long a backlog, how long a member
may stay silent.  Limits on traffic (rates, reply budgets) are decided before
a datagram reaches the room, by L{udpchat.limits}.
"""

from bisect import bisect_right
from collections import OrderedDict, deque
from itertools import accumulate
from dataclasses import dataclass

from udpchat import wire
from udpchat.wire import EMPTY, ILLEGAL, IllegalMessage

DEFAULT_MAX_REPLY_BYTES = 1200
"""Small enough that a reply is never fragmented on the internet."""

DEFAULT_MAX_MEMBERS = 1000
DEFAULT_MAX_PENDING = 1000
DEFAULT_IDLE_TIMEOUT = 3600.0


@dataclass(frozen=True, slots=True)
class Joined:
    """A change the room reports: C{name} joined from C{source}."""

    source: object
    name: str


@dataclass(frozen=True, slots=True)
class Renamed:
    """A change the room reports: the member at C{source} renamed itself."""

    source: object
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class Left:
    """A change the room reports: C{name} at C{source} left (sent C{4})."""

    source: object
    name: str


@dataclass(frozen=True, slots=True)
class Expired:
    """
    A change the room reports: C{name} at C{source} sent nothing for the
    idle timeout and was removed, as if it had left.
    """

    source: object
    name: str


class Reader:
    """
    A read position in a L{SharedLog}, with the bookkeeping that lets the log
    count a reader's backlog without counting the reader's own lines.

    @ivar position: the sequence number of the next line to read.
    @ivar own: the sequence numbers of this reader's own lines that it has
        not passed and the log still holds, oldest first (L{None} until it
        speaks with lines unread: most readers never need one).
    @ivar own_forgotten: how many of its own lines after C{position} the log
        has forgotten.
    """

    __slots__ = ("position", "own", "own_forgotten")

    def __init__(self):
        self.position = 0
        self.own = None
        self.own_forgotten = 0


class SharedLog:
    """
    The lines broadcast to a room, each stored once, with its author.

    The log counts its readers at each position; a line that no reader is at
    or before is released.  With a C{capacity}, the log also forgets its
    oldest line whenever it would hold more than that, read or not: readers
    learn how many lines they lost when they next read.  Every operation
    costs O(1) amortised, except those that pass lines (L{discard},
    L{read}, L{peek}), which cost O(lines passed).

    @param capacity: the most lines held at once, or L{None} for no limit.
    """

    def __init__(self, capacity=None):
        self.capacity = capacity
        self.forgot_own = None  # called with an author whose line was forgotten
        # Three parallel lists, for sequence numbers _base, _base + 1, ...:
        # each line, its author, and where it ends in the bytes of the log
        # as if every line were followed by a separator (_ends has one more
        # item: where the line before _base ended).  With _ends a poll finds
        # how many lines fit by bisection, and takes them as one slice.
        self._lines = []
        self._authors = []
        self._ends = [0]
        self._base = 0  # sequence number of _lines[0]
        self.end = 0  # the sequence number the next line will get
        self._first = 0  # first sequence number still held for a reader
        # position -> how many readers are there; a reader behind _first
        # (it has not read lines the log forgot) is counted at _first.
        self._readers = {}

    @property
    def first(self):
        """The sequence number of the oldest line held."""
        return self._first

    def lines_since(self, sequence):
        """
        The lines held from sequence number C{sequence} on, as
        C{(sequence, author, line)}.
        """
        start = max(sequence, self._first)
        index = start - self._base
        return list(zip(range(start, self.end), self._authors[index:], self._lines[index:]))

    def restore(self, first, entries, readers):
        """
        Make this (new) log hold C{entries}, C{(author, line)} pairs numbered
        from C{first}, read by C{readers} at the positions they hold.
        """
        self._authors = [author for author, _ in entries]
        self._lines = [line for _, line in entries]
        self._ends = list(
            accumulate((len(line) + len(wire.LINE_SEPARATOR) for line in self._lines), initial=0)
        )
        self._base = self._first = first
        self.end = first + len(self._lines)
        for reader in readers:
            position = max(reader.position, first)
            self._readers[position] = self._readers.get(position, 0) + 1
            own = [
                first + i
                for i, author in enumerate(self._authors)
                if author is reader and first + i >= position
            ]
            reader.own = deque(own) if own else None
        self._release()
        # Restarted with a smaller backlog: forget down to the new size.
        while self.capacity is not None and len(self) > self.capacity:
            self._forget_oldest()

    def __len__(self):
        """How many lines the log still holds for its readers."""
        return self.end - self._first

    def append(self, author, line):
        """
        Store C{line}, written by C{author} (a L{Reader}, who will never be
        given it, or L{None}).
        """
        sequence = self.end
        self._lines.append(line)
        self._authors.append(author)
        ends = self._ends
        ends.append(ends[-1] + len(line) + len(wire.LINE_SEPARATOR))
        self.end = sequence + 1
        if author is not None:
            if author.position == sequence:
                # The author has read everything else, so it skips its own
                # line now, which lets the log release the line as soon as
                # the others have read it (at once, in a room of one).
                self._move(author, sequence + 1)
            elif author.own is None:
                author.own = deque((sequence,))
            else:
                author.own.append(sequence)
        if self.capacity is not None and sequence + 1 - self._first > self.capacity:
            self._forget_oldest()
        elif self._first == sequence:
            # The log held nothing anyone needed: if no reader waits at
            # this line either (an empty room), it is released at once.
            self._release()

    def add_reader(self, reader):
        """
        Place a new L{Reader} at the end: it sees only lines to come.
        """
        reader.position = position = self.end
        self._readers[position] = self._readers.get(position, 0) + 1

    def remove_reader(self, reader):
        """
        Forget C{reader}; release what only it still needed.
        """
        self._uncount(reader.position)
        self._release()

    def unread(self, reader):
        """
        How many lines C{reader} has yet to read, not counting its own, nor
        those the log has forgotten.
        """
        position = max(reader.position, self._first)
        return self.end - position - (len(reader.own) if reader.own else 0)

    def discard(self, reader, keep):
        """
        Move C{reader} past every line the log has forgotten, then past its
        unread lines but the newest C{keep}.

        @return: how many lines (not its own) C{reader} has thereby lost.
        """
        lost = 0
        position = reader.position
        if position < self._first:
            lost = self._first - position - reader.own_forgotten
            reader.own_forgotten = 0
            position = self._first
        excess = self.unread(reader) - keep
        if excess > 0:
            lost += excess
            authors, own = self._authors, reader.own
            index = position - self._base
            while excess:
                if authors[index] is reader:
                    own.popleft()
                else:
                    excess -= 1
                index += 1
            position = self._base + index
        self._move(reader, position)
        return lost

    def read(self, reader, max_bytes):
        """
        Take the lines for C{reader}, oldest first, skipping its own, as many
        whole lines as fit into C{max_bytes} once joined by C{\\n}, and move
        the reader past them.  Call L{discard} first if the reader may be
        behind what the log holds.

        @return: the list of lines taken.
        """
        lines, ends, own, base = self._lines, self._ends, reader.own, self._base
        count = len(lines)
        index = reader.position - base
        taken = []
        # Every line costs its length and a separator; the first line's
        # separator is free.
        budget = max_bytes + len(wire.LINE_SEPARATOR)
        while index < count:
            # The lines up to the reader's next own line, if any, are one
            # run: take as many of them as fit, in one slice.
            stop = own[0] - base if own else count
            fit = bisect_right(ends, ends[index] + budget, index, stop + 1) - 1
            taken += lines[index:fit]
            budget -= ends[fit] - ends[index]
            index = fit
            if fit < stop:
                break  # the next line does not fit
            if stop < count:
                own.popleft()  # its own line: pass it
                index += 1
        self._move(reader, base + index)
        return taken

    def peek(self, reader):
        """
        The lines C{reader} has not read yet and the log still holds, not
        its own, without taking them.
        """
        start = max(reader.position, self._first) - self._base
        return [
            line
            for author, line in zip(self._authors[start:], self._lines[start:])
            if author is not reader
        ]

    def _move(self, reader, position):
        old = reader.position
        if position != old:
            readers = self._readers
            readers[position] = readers.get(position, 0) + 1
            # _uncount(old), inlined: this runs for nearly every poll.
            counted = old if old > self._first else self._first
            if readers[counted] == 1:
                del readers[counted]
            else:
                readers[counted] -= 1
            reader.position = position
            if old <= self._first:
                # It may have been the last reader at the first line held.
                self._release()

    def _uncount(self, position):
        # A reader behind the forgotten lines is counted at the first line.
        position = max(position, self._first)
        readers = self._readers
        if readers[position] == 1:
            del readers[position]
        else:
            readers[position] -= 1

    def _forget_oldest(self):
        sequence = self._first
        author = self._authors[sequence - self._base]
        if author is not None and author.own and author.own[0] == sequence:
            # Its author had not passed it yet: remember that one of the
            # lines it will find missing was its own.
            author.own.popleft()
            author.own_forgotten += 1
            if self.forgot_own is not None:
                self.forgot_own(author)
        # Readers still at this line will resume at the next one: count
        # them there, so that the log keeps what they will read.
        readers = self._readers
        waiting = readers.pop(sequence, 0)
        self._first = sequence + 1
        if waiting:
            readers[sequence + 1] = readers.get(sequence + 1, 0) + waiting
            self._compact()  # the new first line has readers: no scan
        else:
            self._release()

    def _release(self):
        readers = self._readers
        first, end = self._first, self.end
        while first < end and first not in readers:
            first += 1
        self._first = first
        self._compact()

    def _compact(self):
        released = self._first - self._base
        # Compact when at least half the list is released lines, so that
        # memory stays within twice what readers still need.
        if released and released * 2 >= len(self._lines):
            first = self._first
            del self._lines[:released]
            del self._authors[:released]
            del self._ends[:released]
            self._base = first


class Member(Reader):
    """
    One member: its number (in join order, never reused), its address, name
    and group, when it was last heard from, how many lines of its backlog
    were dropped since it was last told, and its read position in the log.
    """

    __slots__ = ("id", "source", "name", "group", "last_seen", "dropped")

    def __init__(self, id, source, name, group, now):
        Reader.__init__(self)
        self.id = id
        self.source = source
        self.name = name
        self.group = group
        self.last_seen = now
        self.dropped = 0


class Room:
    """
    The state of one chat room and the rules of the protocol.

    @param max_reply_bytes: the largest reply.  A reply to C{5} carries whole
        lines, so a cap below L{wire.MAX_LINE_BYTES} could leave a long line
        undeliverable; the server never sets one (tests do, to keep cases
        small).
    @param max_members: registrations beyond this many members are refused.
    @param max_pending: the longest backlog of a member, in lines; older
        lines are dropped, and the member told how many on its next poll.
        The log holds at most twice this many lines, so a member that itself
        sends more than that many lines between two polls may also lose
        older lines of others (counted in the same notice).
    @param idle_timeout: seconds of silence after which a member is removed
        as if it had left; 0 for never.
    @param group_of: a function from a source to the key of its group of
        addresses (such as its /24 network), or L{None} for a source whose
        group is not limited.
    @param max_members_per_group: the most members one group may have.

    @ivar changes: the membership changes (L{Joined}, L{Renamed}, L{Left},
        L{Expired}) since the adapter last cleared this list, oldest first.
    @ivar dirty: L{None}, or after L{track_members}, the members whose
        state changed since the adapter last cleared it, by number (L{None}
        for a member removed).
    """

    def __init__(
        self,
        max_reply_bytes=DEFAULT_MAX_REPLY_BYTES,
        max_members=DEFAULT_MAX_MEMBERS,
        max_pending=DEFAULT_MAX_PENDING,
        idle_timeout=DEFAULT_IDLE_TIMEOUT,
        group_of=lambda source: None,
        max_members_per_group=None,
    ):
        self.max_reply_bytes = max_reply_bytes
        self.max_members = max_members
        self.max_pending = max_pending
        self.idle_timeout = idle_timeout
        self.group_of = group_of
        self.max_members_per_group = max_members_per_group
        self.changes = []
        self.dirty = None
        # No member can expire before this time (a lower bound).
        self._next_expiry = float("inf") if not idle_timeout else 0.0
        self._next_id = 0
        self._members = {}  # source -> Member, in join order
        self._names = {}  # name -> Member
        self._silent = OrderedDict()  # source -> Member, longest silent first
        self._groups = {}  # group -> how many members it has
        self._log = SharedLog(capacity=2 * max_pending)
        self._handlers = {
            wire.Join: self._join,
            wire.Say: self._say,
            wire.Rename: self._rename,
            wire.Leave: self._leave,
            wire.Fetch: self._fetch,
        }

    def receive(self, source, datagram, now):
        """
        Handle one datagram from C{source}, received at time C{now}.

        @return: the reply datagram for C{source}; L{wire.ILLEGAL} for a
            request the protocol refuses, which changes nothing (but shows
            that a member is still there).
        """
        if now >= self._next_expiry:
            self.expire(now)
        member = self._members.get(source)
        if member is not None:
            member.last_seen = now
            self._silent.move_to_end(source)
        try:
            request = wire.parse_request(datagram)
            if member is None and request.__class__ is not wire.Join:
                raise IllegalMessage("not a member")
            return self._handlers[type(request)](source, member, request, now)
        except IllegalMessage:
            return ILLEGAL

    def expire(self, now):
        """
        Remove the members silent for the idle timeout at time C{now}.
        """
        timeout = self.idle_timeout
        if not timeout:
            return
        silent = self._silent
        while silent:
            member = next(iter(silent.values()))
            due = member.last_seen + timeout
            if due > now:
                # Nobody expires before then: members heard from since
                # only expire later.  receive() need not look until then.
                self._next_expiry = due
                return
            self._remove(member)
            self.changes.append(Expired(member.source, member.name))
        self._next_expiry = now + timeout

    def track_members(self):
        """
        Start recording in L{dirty} the members whose state changes, for a
        store that saves them.
        """
        self.dirty = {}
        self._log.forgot_own = self._mark

    def _mark(self, member):
        if self.dirty is not None:
            self.dirty[member.id] = member

    def members(self):
        """
        The members as C{(source, name)} pairs, in join order.
        """
        return [(m.source, m.name) for m in self._members.values()]

    def pending(self, source):
        """
        The lines the member at C{source} has yet to fetch, oldest first,
        without taking them (nor the dropped-lines notice).
        """
        lines = self._log.peek(self._members[source])
        return lines[max(0, len(lines) - self.max_pending) :]

    @property
    def stored_lines(self):
        """How many lines the room holds for its members."""
        return len(self._log)

    def _check_free(self, name):
        if name in self._names:
            raise IllegalMessage("name taken")

    def _join(self, source, member, request, now):
        # Every check, and everything that could fail, comes before the
        # first change: a refused (or failed) request changes nothing.
        if member is not None:
            raise IllegalMessage("already a member")
        name = request.name
        self._check_free(name)
        others = self._members
        if len(others) >= self.max_members:
            raise IllegalMessage("room full")
        group = self.group_of(source)
        if group is not None and self._groups.get(group, 0) >= self.max_members_per_group:
            raise IllegalMessage("group full")
        reply = wire.member_list(
            (m.name for m in reversed(others.values())),
            len(others),
            self.max_reply_bytes,
        )
        line = wire.joined(name)
        self._log.append(None, line)
        member = Member(self._next_id, source, name, group, now)
        self._next_id += 1
        self._mark(member)
        self._log.add_reader(member)
        self._enter(member)
        self._silent[source] = member
        self.changes.append(Joined(source, name))
        return reply

    def _say(self, source, member, request, now):
        log = self._log
        caught_up = member.position == log.end
        log.append(member, wire.said(member.name, request.text))
        if caught_up:
            self._mark(member)  # the log moved it past its own line
        return EMPTY

    def _rename(self, source, member, request, now):
        old, new = member.name, request.name
        self._check_free(new)
        self._log.append(member, wire.renamed(old, new))
        del self._names[old]
        self._names[new] = member
        member.name = new
        self._mark(member)
        self.changes.append(Renamed(source, old, new))
        return EMPTY

    def _leave(self, source, member, request, now):
        self._remove(member)
        self.changes.append(Left(source, member.name))
        return EMPTY

    def _fetch(self, source, member, request, now):
        log = self._log
        own = member.own
        # Behind forgotten lines, or more unread than the backlog holds
        # (log.unread(), inlined: every poll asks).
        if (
            member.position < log.first
            or log.end - member.position - (len(own) if own else 0) > self.max_pending
        ):
            member.dropped += log.discard(member, self.max_pending)
            self._mark(member)
        if not member.dropped:
            if member.position == log.end:
                return EMPTY  # nothing new: the most common poll of all
            if self.dirty is not None:
                self.dirty[member.id] = member
            return wire.LINE_SEPARATOR.join(log.read(member, self.max_reply_bytes))
        self._mark(member)
        notice = wire.dropped(member.dropped)
        room = self.max_reply_bytes - len(notice) - len(wire.LINE_SEPARATOR)
        member.dropped = 0
        return wire.LINE_SEPARATOR.join([notice, *log.read(member, room)])

    def _enter(self, member):
        # The tables a member is found in, but the log's and _silent, whose
        # order the caller knows.
        self._members[member.source] = member
        self._names[member.name] = member
        if member.group is not None:
            self._groups[member.group] = self._groups.get(member.group, 0) + 1

    def _remove(self, member):
        line = wire.left(member.name)
        source = member.source
        del self._members[source]
        del self._names[member.name]
        del self._silent[source]
        if member.group is not None:
            groups = self._groups
            if groups[member.group] == 1:
                del groups[member.group]
            else:
                groups[member.group] -= 1
        self._log.remove_reader(member)
        member.own = None  # nothing of its own is read any more: not tracked
        self._log.append(None, line)
        if self.dirty is not None:
            self.dirty[member.id] = None

    # For a store: what it saves, and how the room is rebuilt from it.

    @property
    def next_id(self):
        """The number the next member will get."""
        return self._next_id

    @property
    def log(self):
        """The room's L{SharedLog}, for a store to save from."""
        return self._log

    def all_members(self):
        """The L{Member} objects, in join order."""
        return list(self._members.values())

    def restore(self, members, lines, first, next_id):
        """
        Rebuild a new, empty room from what a store saved.

        @param members: C{(id, source, name, position, own_forgotten,
            dropped, last_seen)} for each member, in join order.
        @param lines: C{(author id or None, line)} for each line held, from
            sequence number C{first} on.
        @param next_id: the number the next member will get.
        """
        by_id = {}
        for number, source, name, position, own_forgotten, dropped, last_seen in members:
            member = Member(number, source, name, self.group_of(source), last_seen)
            member.position = position
            member.own_forgotten = own_forgotten
            member.dropped = dropped
            by_id[number] = member
            self._enter(member)
        for member in sorted(by_id.values(), key=lambda m: m.last_seen):
            self._silent[member.source] = member
        self._log.restore(
            first, [(by_id.get(author), line) for author, line in lines], by_id.values()
        )
        self._next_id = next_id

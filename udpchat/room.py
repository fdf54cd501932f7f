"""
The chat room: a pure state machine from (source, datagram) to reply bytes.

No I/O here, no reactor and no clock: the protocol adapter in
L{udpchat.server} feeds datagrams in and sends the replies out.  A member is
the source address its requests come from; the room treats it as an opaque,
hashable value.

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
members, and a line is released once every member has read past it.
"""

from dataclasses import dataclass

from udpchat import wire
from udpchat.wire import EMPTY, ILLEGAL, IllegalMessage

DEFAULT_MAX_REPLY_BYTES = 1200
"""Small enough that a reply is never fragmented on the internet."""


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
    """A change the room reports: C{name} at C{source} left."""

    source: object
    name: str


class Member:
    """
    One member: its name and its read position in the shared log.
    """

    __slots__ = ("source", "name", "position")

    def __init__(self, source, name, position):
        self.source = source
        self.name = name
        self.position = position


class SharedLog:
    """
    The lines broadcast to a room, each stored once, with its author.

    Readers are positions (sequence numbers of the next line to read).  The
    log counts the readers at each position; a line no reader is at or before
    is released.  Every operation costs O(1) amortised, except L{read}, which
    costs O(lines it passes).
    """

    def __init__(self):
        self._entries = []  # (author, line) for sequence numbers _base, ...
        self._base = 0  # sequence number of _entries[0]
        self._first = 0  # first sequence number still needed by a reader
        self._readers = {}  # position -> how many readers are there

    @property
    def end(self):
        """The sequence number the next line will get."""
        return self._base + len(self._entries)

    def __len__(self):
        """How many lines the log still holds for its readers."""
        return self.end - self._first

    def append(self, author, line):
        """
        Store C{line}, written by C{author} (who will never be given it).
        """
        self._entries.append((author, line))
        if self._first == self.end - 1:
            # The log held nothing anyone needed: if no reader waits at
            # this line either (an empty room), it is released at once.
            self._release()

    def add_reader(self):
        """
        Return the position of a new reader, who sees only lines to come.
        """
        position = self.end
        self._readers[position] = self._readers.get(position, 0) + 1
        return position

    def remove_reader(self, position):
        """
        Forget the reader at C{position}; release what only it still needed.
        """
        readers = self._readers
        if readers[position] == 1:
            del readers[position]
        else:
            readers[position] -= 1
        self._release()

    def move_reader(self, old, new):
        """
        Move a reader from position C{old} to C{new}, and release what no
        reader needs any longer.
        """
        readers = self._readers
        readers[new] = readers.get(new, 0) + 1
        self.remove_reader(old)

    def read(self, reader, position, max_bytes):
        """
        Take the lines for C{reader} from C{position}, oldest first, skipping
        its own, as many whole lines as fit into C{max_bytes}.

        @return: C{(reply, new_position)}, the reply being the lines joined
            by C{\\n}; the reader has been moved to C{new_position}.
        """
        entries = self._entries
        index = position - self._base
        taken = []
        size = -len(wire.LINE_SEPARATOR)
        count = len(entries)
        while index < count:
            author, line = entries[index]
            if author is not reader:
                size += len(wire.LINE_SEPARATOR) + len(line)
                if size > max_bytes:
                    break
                taken.append(line)
            index += 1
        new_position = self._base + index
        if new_position != position:
            self.move_reader(position, new_position)
        return wire.LINE_SEPARATOR.join(taken), new_position

    def peek(self, reader, position):
        """
        The lines C{reader} has not read yet, without taking them.
        """
        entries = self._entries[position - self._base :]
        return [line for author, line in entries if author is not reader]

    def _release(self):
        readers = self._readers
        first, end = self._first, self.end
        while first < end and first not in readers:
            first += 1
        self._first = first
        released = first - self._base
        # Compact when at least half the list is released lines, so that
        # memory stays within twice what readers still need.
        if released and released * 2 >= len(self._entries):
            del self._entries[:released]
            self._base = first


class Room:
    """
    The state of one chat room and the rules of the protocol.

    @param max_reply_bytes: the largest reply.  A reply to C{5} carries whole
        lines, so a cap below L{wire.MAX_LINE_BYTES} could leave a long line
        undeliverable; the server never sets one (tests do, to keep cases
        small).

    @ivar changes: the membership changes (L{Joined}, L{Renamed}, L{Left})
        since the adapter last cleared this list, oldest first.
    """

    def __init__(self, max_reply_bytes=DEFAULT_MAX_REPLY_BYTES):
        self.max_reply_bytes = max_reply_bytes
        self.changes = []
        self._members = {}  # source -> Member, in join order
        self._names = {}  # name -> Member
        self._log = SharedLog()
        self._handlers = {
            wire.Join: self._join,
            wire.Say: self._say,
            wire.Rename: self._rename,
            wire.Leave: self._leave,
            wire.Fetch: self._fetch,
        }

    def receive(self, source, datagram):
        """
        Handle one datagram from C{source}.

        @return: the reply datagram for C{source}; L{wire.ILLEGAL} for a
            request the protocol refuses, which changes nothing.
        """
        try:
            request = wire.parse_request(datagram)
            return self._handlers[type(request)](source, request)
        except IllegalMessage:
            return ILLEGAL

    def members(self):
        """
        The members as C{(source, name)} pairs, in join order.
        """
        return [(m.source, m.name) for m in self._members.values()]

    def pending(self, source):
        """
        The lines queued for the member at C{source}, oldest first, without
        taking them.
        """
        member = self._members[source]
        return self._log.peek(member, member.position)

    @property
    def stored_lines(self):
        """How many lines the room holds for its members."""
        return len(self._log)

    def _member(self, source):
        member = self._members.get(source)
        if member is None:
            raise IllegalMessage("not a member")
        return member

    def _check_free(self, name):
        if name in self._names:
            raise IllegalMessage("name taken")

    def _join(self, source, request):
        if source in self._members:
            raise IllegalMessage("already a member")
        name = request.name
        self._check_free(name)
        others = self._members
        reply = wire.member_list(
            (m.name for m in reversed(others.values())),
            len(others),
            self.max_reply_bytes,
        )
        self._log.append(None, wire.joined(name))
        member = Member(source, name, self._log.add_reader())
        others[source] = member
        self._names[name] = member
        self.changes.append(Joined(source, name))
        return reply

    def _say(self, source, request):
        member = self._member(source)
        self._broadcast(member, wire.said(member.name, request.text))
        return EMPTY

    def _rename(self, source, request):
        member = self._member(source)
        old, new = member.name, request.name
        self._check_free(new)
        self._broadcast(member, wire.renamed(old, new))
        del self._names[old]
        self._names[new] = member
        member.name = new
        self.changes.append(Renamed(source, old, new))
        return EMPTY

    def _leave(self, source, request):
        member = self._member(source)
        del self._members[source]
        del self._names[member.name]
        self._log.remove_reader(member.position)
        self._log.append(None, wire.left(member.name))
        self.changes.append(Left(source, member.name))
        return EMPTY

    def _fetch(self, source, request):
        member = self._member(source)
        reply, member.position = self._log.read(
            member, member.position, self.max_reply_bytes
        )
        return reply

    def _broadcast(self, author, line):
        log = self._log
        position = author.position
        caught_up = position == log.end
        log.append(author, line)
        if caught_up:
            # The author has read everything else, so it can skip its own
            # line now, which lets the log release it as soon as others
            # have read it (at once, in a room of one).
            author.position = position + 1
            log.move_reader(position, position + 1)

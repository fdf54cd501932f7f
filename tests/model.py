"""
The room written out naively, as a reference for property tests: one queue
per member with every line copied into it, plain lists, linear scans.  And
L{replica}: a room rebuilt from what another reported changed.
"""

from udpchat.room import Expired, Joined, Left, Renamed, Room
from udpchat.wire import ILLEGAL, Fetch, IllegalMessage, Join, Leave, Rename, Say, parse_request


def spec_member_list(names, cap):
    """
    The reply the protocol gives for C{names} (newest first) under C{cap}
    bytes: the names joined by C{, }, or when they do not fit, as many as
    fit then C{and N more}; C{None} when no reply can fit.
    """
    items = [name.encode() for name in names]
    whole = b", ".join(items)
    if len(whole) <= cap:
        return whole
    for shown in range(len(items) - 1, -1, -1):
        reply = b", ".join(items[:shown] + [b"and %d more" % (len(items) - shown)])
        if len(reply) <= cap:
            return reply
    return None


class ModelRoom:
    """
    The protocol table and the room's limits, the obvious way.

    Each queued line carries the room-wide number of the line; the room's
    log holds the last C{2 * max_pending} lines, so a member loses any line
    older than that when it polls, and then all but its newest
    C{max_pending}.  Parsing is L{parse_request}'s (see test_wire).
    """

    def __init__(
        self,
        cap,
        max_members=1000,
        max_pending=1000,
        idle_timeout=3600,
        group_of=lambda source: None,
        max_members_per_group=None,
    ):
        self.cap = cap
        self.max_members = max_members
        self.max_pending = max_pending
        self.idle_timeout = idle_timeout
        self.group_of = group_of
        self.max_members_per_group = max_members_per_group
        self.names = {}  # source -> name, in join order
        self.queues = {}  # source -> [(line number, line)]
        self.dropped = {}  # source -> lines dropped since the last notice
        self.last_seen = {}  # source -> time, longest silent first
        self.events = []  # since they were last taken
        self.broadcasts = 0

    def _queue(self, author, line):
        number = self.broadcasts
        self.broadcasts += 1
        for source in self.names:
            if source != author:
                self.queues[source].append((number, line))

    def _remove(self, source):
        name = self.names.pop(source)
        del self.queues[source], self.dropped[source], self.last_seen[source]
        self._queue(source, f"{name} has left the group".encode())
        return name

    def expire(self, now):
        while self.idle_timeout and self.last_seen:
            source, seen = next(iter(self.last_seen.items()))
            if seen + self.idle_timeout > now:
                break
            self.events.append(Expired(source, self._remove(source)))

    def pending(self, source):
        """What the member's next polls would deliver, after the limits."""
        oldest = self.broadcasts - 2 * self.max_pending
        kept = [line for number, line in self.queues[source] if number >= oldest]
        return kept[max(0, len(kept) - self.max_pending) :]

    def receive(self, source, datagram, now=0):
        self.expire(now)
        name = self.names.get(source)
        if name is not None:
            del self.last_seen[source]
            self.last_seen[source] = now
        if datagram == ILLEGAL:
            return None  # a server's reply: never answered
        try:
            request = parse_request(datagram)
        except IllegalMessage:
            return ILLEGAL
        if isinstance(request, Join):
            group = self.group_of(source)
            if (
                name is not None
                or request.name in self.names.values()
                or len(self.names) >= self.max_members
                or (
                    group is not None
                    and sum(self.group_of(s) == group for s in self.names) >= self.max_members_per_group
                )
            ):
                return ILLEGAL
            reply = spec_member_list(list(self.names.values())[::-1], self.cap)
            self._queue(source, f"{request.name} has joined".encode())
            self.names[source] = request.name
            self.queues[source] = []
            self.dropped[source] = 0
            self.last_seen[source] = now
            self.events.append(Joined(source, request.name))
            return reply
        if name is None:
            return ILLEGAL
        if isinstance(request, Say):
            self._queue(source, f"{name}: {request.text}".encode())
        elif isinstance(request, Rename):
            if request.name in self.names.values():
                return ILLEGAL
            self._queue(source, f"{name} changed his name to {request.name}".encode())
            self.names[source] = request.name
            self.events.append(Renamed(source, name, request.name))
        elif isinstance(request, Leave):
            self._remove(source)
            self.events.append(Left(source, name))
        else:
            assert isinstance(request, Fetch)
            return self._fetch(source)
        return b""

    def _fetch(self, source):
        queue = self.queues[source]
        kept = self.pending(source)
        self.dropped[source] += len(queue) - len(kept)
        lines, cap = [], self.cap
        if self.dropped[source]:
            count = self.dropped[source]
            lines.append(b"[%d line%s dropped]" % (count, b"" if count == 1 else b"s"))
            self.dropped[source] = 0
        size = sum(len(line) + 1 for line in lines) - 1
        taken = 0
        for line in kept:
            size += 1 + len(line)
            if size > cap:
                break
            taken += 1
        lines += kept[:taken]
        # What is left: the kept lines not taken, with their numbers.
        self.queues[source] = queue[len(queue) - len(kept) + taken :]
        return b"\n".join(lines)

    def take_events(self):
        """The membership events since this was last asked, oldest first."""
        events, self.events = self.events, []
        return events

    def state(self):
        """The members, in join order, and what each has pending."""
        return (
            list(self.names.items()),
            {source: self.pending(source) for source in self.names},
        )


def replica(changes, **options):
    """
    A new room, made with C{options}, rebuilt from C{changes}: everything a
    room reported, merged in order by L{udpchat.room.Changes.then}, which
    is all that a store or a replica learns of it.
    """
    room = Room(track_state=True, **options)
    room.restore(
        sorted(changes.members),  # by id: in join order
        [(author, line) for _, author, line in changes.lines],
        changes.first,
        changes.next_id,
    )
    return room

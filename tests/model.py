"""
The room written out naively, as a reference for property tests: one queue
per member with every line copied into it, plain lists, linear scans.  And
L{replica}: a room rebuilt from what another reported changed.
"""

from udpchat import wire
from udpchat.room import Expired, Joined, Left, Moved, Renamed, Room
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
        new_token=None,
        sessions_only=False,
    ):
        self.cap = cap
        self.new_token = new_token
        self.sessions_only = sessions_only
        self.sessions = {}  # token -> ModelSession
        self.by_nonce = {}  # nonce -> ModelSession
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
        for token, session in list(self.sessions.items()):
            if session.source == source:
                del self.sessions[token], self.by_nonce[session.nonce]
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

    def _session_at(self, source):
        return next((s for s in self.sessions.values() if s.source == source), None)

    def receive(self, source, datagram, now=0):
        self.expire(now)
        name = self.names.get(source)
        if name is not None and self._session_at(source) is None:
            del self.last_seen[source]
            self.last_seen[source] = now
        if datagram == ILLEGAL:
            return None  # a server's reply: never answered
        try:
            request = parse_request(datagram)
        except IllegalMessage:
            return ILLEGAL
        if isinstance(request, wire.Register):
            return self._register(source, request, datagram, now)
        if isinstance(request, wire.SESSION_REQUESTS):
            return self._session(source, request, datagram, now)
        if name is not None and self._session_at(source) is not None and not isinstance(request, Join):
            return ILLEGAL  # only the token acts for a session member
        if isinstance(request, Join) and name is None and self.sessions_only:
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

    # -- sessions, the obvious way --------------------------------------------

    def _refusal(self, source, name):
        group = self.group_of(source)
        if name in self.names.values():
            return b"name taken"
        if len(self.names) >= self.max_members:
            return b"room full"
        if group is not None and sum(self.group_of(s) == group for s in self.names) >= self.max_members_per_group:
            return b"group full"
        return None

    def _register(self, source, request, datagram, now):
        known = self.by_nonce.get(request.nonce)
        if known is not None:
            if known.seq:
                return None
            self._heard(known, datagram, now)
            return self._budgeted(known, known.reply)
        if source in self.names:
            return b"0 refused already a member"
        refusal = self._refusal(source, request.name)
        if refusal:
            return b"0 refused " + refusal
        others = list(self.names.values())[::-1]
        self._queue(source, f"{request.name} has joined".encode())
        self.names[source] = request.name
        self.queues[source] = []
        self.dropped[source] = 0
        self.last_seen[source] = now
        self.events.append(Joined(source, request.name))
        token = self.new_token()
        session = ModelSession(token, request.nonce, source, 3 * len(datagram))
        self.sessions[token] = self.by_nonce[request.nonce] = session
        head = b"0 %s %d" % (token, self.broadcasts)
        room = min(self.cap, session.budget) - len(head) - 1
        names = spec_member_list(others, room) if others else None
        session.reply = head + b"\n" + names if names else head
        return self._budgeted(session, session.reply)

    def _heard(self, session, datagram, now):
        del self.last_seen[session.source]
        self.last_seen[session.source] = now
        if session.budget is not None:
            session.budget += 3 * len(datagram)

    def _budgeted(self, session, reply):
        if session.budget is None:
            return reply
        if len(reply) > session.budget:
            return None
        session.budget -= len(reply)
        return reply

    def _session(self, source, request, datagram, now):
        seq = request.seq
        session = self.sessions.get(request.token)
        if session is None:
            return b"%d unknown" % seq
        if seq < session.seq:
            return None
        if source != session.source:
            if source in self.names:
                return b"%d refused address in use" % seq
            old = session.source
            for table in (self.names, self.queues, self.dropped):
                # The member keeps its place in the join order.
                moved = {source if s == old else s: value for s, value in table.items()}
                table.clear()
                table.update(moved)
            del self.last_seen[old]
            self.last_seen[source] = now
            session.source = source
            session.budget = 0
            self.events.append(Moved(old, source, self.names[source]))
        self._heard(session, datagram, now)
        repeat = seq == session.seq
        if repeat and not isinstance(request, wire.SessionFetch):
            if session.reply is None:
                return None  # the number of a poll
            return self._budgeted(session, session.reply)
        if seq > session.seq:
            if session.budget is not None and session.replied_to == source:
                session.budget = None
            session.seq = seq
            self.dropped[source] -= session.told
            session.told = 0
        session.replied_to = source
        name = self.names[source]
        reply = b"%d" % seq
        if isinstance(request, wire.SessionSay):
            self._queue(source, f"{name}: {request.text}".encode())
        elif isinstance(request, wire.SessionRename):
            if request.name in self.names.values():
                reply = b"%d refused name taken" % seq
            else:
                self._queue(source, f"{name} changed his name to {request.name}".encode())
                self.names[source] = request.name
                self.events.append(Renamed(source, name, request.name))
        elif isinstance(request, wire.SessionLeave):
            self._remove(source)
            self.events.append(Left(source, name))
        else:
            reply = self._session_fetch(source, session, request.seq, request.position, repeat)
        session.reply = None if isinstance(request, wire.SessionFetch) else reply
        return self._budgeted(session, reply)

    def _session_fetch(self, source, session, seq, position, repeat):
        if position > self.broadcasts:
            return b"%d refused position ahead" % seq
        oldest = self.broadcasts - 2 * self.max_pending
        queue = self.queues[source]
        # What arrived goes; what the log forgot before it arrived is lost.
        lost = [entry for entry in queue if position <= entry[0] < oldest]
        queue = [entry for entry in queue if entry[0] >= max(position, oldest)]
        kept = queue[max(0, len(queue) - self.max_pending) :]
        self.dropped[source] += len(lost) + len(queue) - len(kept)
        self.queues[source] = kept
        lines = []
        # A repeat tells what the first reply to its number told.
        count = session.told = session.told if repeat else self.dropped[source]
        if count:
            lines.append(b"[%d line%s dropped]" % (count, b"" if count == 1 else b"s"))
        room = self.cap - len(b"%d %d" % (seq, self.broadcasts)) - 1
        if session.budget is not None:
            room = min(room, session.budget - len(b"%d %d" % (seq, self.broadcasts)) - 1)
        size = sum(len(line) + 1 for line in lines) - 1
        taken = 0
        for _, line in kept:
            size += 1 + len(line)
            if size > room:
                break
            taken += 1
        lines += [line for _, line in kept[:taken]]
        new_position = kept[taken][0] if taken < len(kept) else self.broadcasts
        head = b"%d %d" % (seq, new_position)
        return head + b"\n" + b"\n".join(lines) if lines else head

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


class ModelSession:
    """A session, as the model keeps it: every field in plain view."""

    def __init__(self, token, nonce, source, budget):
        self.token, self.nonce, self.source = token, nonce, source
        self.seq, self.reply, self.told = 0, None, 0
        self.budget, self.replied_to = budget, source


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

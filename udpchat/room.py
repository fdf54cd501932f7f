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

A member that registers with C{6 Nonce Name} has a session instead: it is
its token, not its address, and its requests (C{7} to C{0}) are numbered,
so that a repeat is answered as the first one was and changes nothing
(L{Room._session}).  Requests C{2} to C{5} from its address are refused.

The full reference, with the parsing rules, is in README.rst.

Every line is stored once, in a L{SharedLog}; a member has a read position
in it.  Broadcasting therefore costs the same in a room of 10 or 10,000
members, and a line is released once every member has read past it, or once
it is too old for anybody's backlog.

The room enforces the limits that concern the room itself: how many members
(in all, and per group of addresses), how long a backlog, how long a member
may stay silent.  Limits on traffic (rates, reply budgets) are decided before
a datagram reaches the room, by L{udpchat.limits}.
"""

import os
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import NamedTuple

from udpchat import wire
from udpchat.sharedlog import Cursor, SharedLog
from udpchat.wire import EMPTY, ILLEGAL, IllegalMessage, parse_request

_MEMBERLESS = frozenset((wire.Register, *wire.SESSION_REQUESTS))

_SEPARATOR_BYTES = len(wire.LINE_SEPARATOR)
"""The requests whose sender is found by what they carry, not its address."""


def _is_refusal(reply):
    """Whether C{reply}, to a session request, refuses it (C{Seq refused ...})."""
    return reply.split(b" ", 2)[1:2] == [wire.REFUSED]


def _random_token():
    """A session's token: 128 bits from the system's cryptographic source."""
    return os.urandom(wire.TOKEN_BYTES // 2).hex().encode()

DEFAULT_MAX_REPLY_BYTES = 1200
"""Small enough that a reply is never fragmented on the internet."""

DEFAULT_MAX_MEMBERS = 1000
DEFAULT_MAX_PENDING = 1000
DEFAULT_IDLE_TIMEOUT = 3600.0

OK = "ok"
REFUSED = "refused"
UNANSWERED = "unanswered"
"""
What became of a request, as L{Room.requests} counts it: done as asked (or
a repeat answered as the first one was), refused (C{Illegal message}, or a
session's C{Seq refused} or C{Seq unknown}), or left without a reply.
"""

# What the room counts on its rarer paths besides those outcomes: a request
# done, a repeat answered again, and a reply held back by an address's budget.
_DONE, _REPEATED, _WITHHELD = "done", "repeated", "withheld"
_CODES = {request: code.decode("ascii") for code, request, _ in wire.REQUEST_CODES}


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
class Moved:
    """
    A change the room reports: the session member C{name} now sends from
    C{source}, no longer from C{old} (nobody else is told: it roams).
    """

    old: object
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


class Member:
    """
    One member: its number (in join order, never reused), its address, name
    and group, when it was last heard from, how many lines of its backlog
    were dropped since it was last told, and its place in the shared log.
    """

    __slots__ = (
        "id", "source", "name", "group", "last_seen", "dropped", "cursor", "session"
    )

    def __init__(self, id, source, name, group, now, cursor, session=None):
        self.id = id
        self.source = source
        self.name = name
        self.group = group
        self.last_seen = now
        self.dropped = 0
        self.cursor = cursor
        self.session = session  # a Session, for a member that registered


class Session:
    """
    What the room keeps of a member's session: its token and the nonce it
    registered with; the number of its newest request, and the reply to it
    unless it was a poll (a poll is answered anew: its position says what
    arrived); how many dropped lines that poll's reply told of; and, until
    its address is shown to receive, how many bytes the room may still send
    there (L{None} once it has).
    """

    __slots__ = ("token", "nonce", "seq", "reply", "told", "budget", "replied_to")

    def __init__(self, token, nonce, reply, budget, address, seq=0, told=0):
        self.token = token
        self.nonce = nonce
        self.seq = seq
        self.reply = reply
        self.told = told
        self.budget = budget
        self.replied_to = address  # where the reply to seq went

    def state(self):
        """A L{SessionState} of this session, as it is now."""
        return SessionState(
            self.token, self.nonce, self.seq, self.reply, self.told, self.budget, self.replied_to
        )


class SessionState(NamedTuple):
    """What a store keeps of a member's L{Session}: each of its fields."""

    token: bytes
    nonce: bytes
    seq: int
    reply: object  # bytes, or None after a poll
    told: int
    budget: object  # int, or None once the address has shown it receives
    replied_to: object


class MemberState(NamedTuple):
    """
    What a store keeps of a member: enough to rebuild it.  C{position} is
    its place in the log (behind the log's first line, C{first - position}
    lines were lost to it); C{session} a L{SessionState}, for a member that
    registered.
    """

    id: int
    source: object
    name: str
    position: int
    dropped: int
    last_seen: float
    session: object = None


@dataclass(frozen=True, slots=True)
class Changes:
    """
    What changed in a room since it last reported: L{Room.take_changes}.

    @ivar events: the membership changes (L{Joined}, L{Renamed}, L{Left},
        L{Expired}), oldest first.
    @ivar members: a L{MemberState} for each member whose state changed
        (only if the room tracks state).
    @ivar removed: the ids of the members removed (only if it tracks).
    @ivar lines: C{(sequence, author id or None, line)} for each line added
        to the log and still held, oldest first (only if it tracks).
    @ivar first: the sequence number of the oldest line held; every line
        before it is gone.
    @ivar next_id: the id the next member will get.
    """

    events: list
    members: list
    removed: list
    lines: list
    first: int
    next_id: int

    def __bool__(self):
        return bool(self.events or self.members or self.removed or self.lines)

    def then(self, later):
        """
        These changes followed by C{later} ones, as one L{Changes}: what a
        consumer that missed these (a failed commit) must apply next.
        """
        states = {state.id: state for state in self.members}
        states.update((state.id, state) for state in later.members)
        for id in later.removed:
            states.pop(id, None)
        return Changes(
            self.events + later.events,
            list(states.values()),
            self.removed + later.removed,
            [line for line in self.lines if line[0] >= later.first] + later.lines,
            later.first,
            later.next_id,
        )


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
    @param track_state: whether L{take_changes} reports the state of the
        members and the lines (a store needs it); without it, the events
        only, and polls cost nothing to track.

    @ivar changed: whether L{take_changes} has anything to report: an
        adapter need not ask otherwise.
    @ivar events_reported: how many events of each class (L{Joined}...)
        the room ever reported: a total that only grows, which L{restore}
        leaves as it is.
    @ivar repeats: how many session requests (a registration too) came
        again and were answered as they were the first time: a sign that
        replies are lost.
    """

    def __init__(
        self,
        max_reply_bytes=DEFAULT_MAX_REPLY_BYTES,
        max_members=DEFAULT_MAX_MEMBERS,
        max_pending=DEFAULT_MAX_PENDING,
        idle_timeout=DEFAULT_IDLE_TIMEOUT,
        group_of=lambda source: None,
        max_members_per_group=None,
        track_state=False,
        new_token=None,
        sessions_only=False,
    ):
        self.max_reply_bytes = max_reply_bytes
        self.max_members = max_members
        self.max_pending = max_pending
        self.idle_timeout = idle_timeout
        self.group_of = group_of
        self.max_members_per_group = max_members_per_group
        self._track_state = track_state
        # Where tokens come from: injected, like time, so that tests can
        # fix them.
        self._new_token = new_token or _random_token
        self.sessions_only = sessions_only
        self.events_reported = Counter()
        self.repeats = 0
        # What the session requests came to, on their rarer paths; the
        # commonest two, done, counted on their own.
        self._tally = Counter()
        self._session_said = self._session_fetched = 0
        # Lines added before the last restore, and the log's end after it.
        self._lines_before = self._restored_end = 0
        self._handlers = {
            wire.Join: self._join,
            wire.Say: self._say,
            wire.Rename: self._rename,
            wire.Leave: self._leave,
            wire.Fetch: self._fetch,
            wire.Register: self._register,
            wire.SessionSay: self._session,
            wire.SessionFetch: self._session,
            wire.SessionRename: self._session,
            wire.SessionLeave: self._session,
        }

        self._empty()

    def _empty(self):
        # Everything but the settings: a room with nobody and nothing in it.
        self._events = []
        self.changed = False
        # id -> Member whose state changed (None: removed), when tracked.
        self._dirty = {} if self._track_state else None
        self._reported_end = 0  # lines before this one were reported
        # No member can expire before this time (a lower bound).
        self._next_expiry = float("inf") if not self.idle_timeout else 0.0
        self._next_id = 0
        self._members = {}  # source -> Member
        self._ids = {}  # id -> Member, in join order
        self._names = {}  # name -> Member
        self._silent = OrderedDict()  # source -> Member, longest silent first
        self._groups = {}  # group -> how many members it has
        self._sessions = {}  # token -> Member
        self._nonces = {}  # nonce -> Member, for a repeated registration
        self._log = SharedLog(capacity=2 * self.max_pending)

    def receive(self, source, datagram, now):
        """
        Handle one datagram from C{source}, received at time C{now}.

        @return: the reply datagram for C{source}; L{wire.ILLEGAL} for a
            request the protocol refuses, which changes nothing (but shows
            that a member is still there); L{None} for a datagram that gets
            no reply, since only a server sends it: exactly
            L{wire.ILLEGAL}.
        """
        if now >= self._next_expiry:
            self.expire(now)
        member = self._members.get(source)
        if member is not None and member.session is None:
            member.last_seen = now
            self._silent.move_to_end(source)
        try:
            request = parse_request(datagram)
            kind = request.__class__
            if member is None:
                if kind is not wire.Join and kind not in _MEMBERLESS:
                    raise IllegalMessage(wire.NOT_A_MEMBER)
            elif member.session is not None and kind not in _MEMBERLESS:
                # Only its token acts for a session member: not its
                # address, which anybody can forge.
                raise IllegalMessage(wire.SESSION_MEMBER)
            return self._handlers[kind](source, member, request, now, datagram)
        except IllegalMessage:
            if datagram == ILLEGAL:
                # Only a server sends that, as its reply: answering it
                # could start an endless exchange between two servers (or
                # one and itself) from one forged datagram.
                return None
            return ILLEGAL

    def discount(self, seconds):
        """
        Let C{seconds} (negative after the clock stepped back) not count
        toward anyone's idle timeout: the server did not run.
        """
        for member in self._members.values():
            member.last_seen += seconds
        self._next_expiry += seconds

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
            self._report(Expired(member.source, member.name))
        self._next_expiry = now + timeout

    def take_changes(self, everyone=False):
        """
        What changed since the last call, as one L{Changes}: each change is
        reported once.  With C{everyone}, the state of every member (their
        idle timers are reported only then, and when they change otherwise).
        """
        events, self._events = self._events, []
        self.changed = False
        log = self._log
        dirty = self._dirty
        if dirty is None:
            log.take_moved()  # nobody saves positions: let none pile up
            return Changes(events, [], [], [], log.first, self._next_id)
        for id in log.take_moved():
            dirty.setdefault(id, self._ids.get(id))
        if everyone:
            for member in self._members.values():
                dirty[member.id] = member
        self._dirty = {}
        members = [
            MemberState(
                m.id,
                m.source,
                m.name,
                m.cursor.position,
                m.dropped,
                m.last_seen,
                None if m.session is None else m.session.state(),
            )
            for m in dirty.values()
            if m is not None
        ]
        removed = [id for id, m in dirty.items() if m is None]
        lines = log.lines_since(self._reported_end)
        self._reported_end = log.end
        return Changes(events, members, removed, lines, log.first, self._next_id)

    def members(self):
        """
        The members as C{(source, name)} pairs, in join order.
        """
        return [(m.source, m.name) for m in self._ids.values()]

    def pending(self, source):
        """
        The lines the member at C{source} has yet to fetch, oldest first,
        without taking them (nor the dropped-lines notice).
        """
        lines = self._log.peek(self._members[source].cursor)
        return lines[max(0, len(lines) - self.max_pending) :]

    @property
    def stored_lines(self):
        """How many lines the room holds for its members."""
        return len(self._log)

    @property
    def member_count(self):
        """How many members the room has."""
        return len(self._members)

    @property
    def lines_added(self):
        """
        How many lines the room added to its log: one per join, text,
        rename, leave and removal, those a return to the last commit
        (L{restore}) took back included, those a store restored not.  A
        total that only grows.
        """
        return self._lines_before + self._log.end - self._restored_end

    def requests(self):
        """
        What the room can tell of the requests it handled, as
        C{{(code, outcome): count}} (none of 0), totals that only grow:
        C{outcome} L{OK}, L{REFUSED} or L{UNANSWERED}.

        Requests C{1} to C{4} done are not counted one by one: each is
        found from what it left behind, a join, rename or leave by its
        event, a text by the line it added.  Session requests (C{6} to
        C{0}) are counted as they are answered, the two commonest, a text
        and a poll done, by a whole number each, the others on their
        rarer paths.  The adapter counts the rest: polls (C{5}), and the
        requests answered C{Illegal message}, or not at all because they
        are exactly that.
        """
        events, tally = self.events_reported, self._tally
        done = {
            wire.Register: tally[wire.Register, _DONE],
            wire.SessionSay: self._session_said,
            wire.SessionFetch: self._session_fetched,
            wire.SessionRename: tally[wire.SessionRename, _DONE],
            wire.SessionLeave: tally[wire.SessionLeave, _DONE],
        }
        lines = events[Joined] + events[Renamed] + events[Left] + events[Expired]
        counts = Counter({
            (_CODES[wire.Join], OK): events[Joined] - done[wire.Register],
            (_CODES[wire.Say], OK): self.lines_added - lines - done[wire.SessionSay],
            (_CODES[wire.Rename], OK): events[Renamed] - done[wire.SessionRename],
            (_CODES[wire.Leave], OK): events[Left] - done[wire.SessionLeave],
        })
        for request, count in done.items():
            code, withheld = _CODES[request], tally[request, _WITHHELD]
            counts[code, OK] += count + tally[request, _REPEATED] - withheld
            counts[code, REFUSED] += tally[request, REFUSED]
            counts[code, UNANSWERED] += tally[request, UNANSWERED] + withheld
        return {key: count for key, count in counts.items() if count}

    def _check_free(self, name):
        if name in self._names:
            raise IllegalMessage(wire.NAME_TAKEN)

    def _report(self, event):
        self.events_reported[type(event)] += 1
        self._events.append(event)
        self.changed = True

    def _mark(self, member):
        if self._dirty is not None:
            self._dirty[member.id] = member
            self.changed = True

    def _join(self, source, member, request, now, datagram=None):
        # Every check, and everything that could fail, comes before the
        # first change: a refused (or failed) request changes nothing.
        if member is not None:
            raise IllegalMessage(wire.ALREADY_A_MEMBER)
        if self.sessions_only:
            raise IllegalMessage(wire.LEGACY_REFUSED)
        group = self._check_admission(source, request.name)
        others = self._ids  # in join order, whoever moved
        reply = wire.member_list(
            (m.name for m in reversed(others.values())),
            len(others),
            self.max_reply_bytes,
        )
        self._admit(source, request.name, group, now)
        return reply

    def _check_admission(self, source, name):
        # Whether a new member called name may join from source: its group.
        self._check_free(name)
        if len(self._members) >= self.max_members:
            raise IllegalMessage(wire.ROOM_FULL)
        group = self.group_of(source)
        if group is not None and self._groups.get(group, 0) >= self.max_members_per_group:
            raise IllegalMessage(wire.GROUP_FULL)
        return group

    def _admit(self, source, name, group, now, session=None):
        log = self._log
        log.append(wire.joined(name))
        id = self._next_id
        self._next_id += 1
        member = Member(id, source, name, group, now, log.open(id), session)
        self._mark(member)
        self._enter(member)
        self._silent[source] = member
        self._report(Joined(source, name))
        return member

    # -- sessions ------------------------------------------------------------

    def _register(self, source, member, request, now, datagram):
        known = self._nonces.get(request.nonce)
        if known is not None:
            # A repeat: its reply was lost (or is late).  The same answer,
            # as long as the session has not gone further.
            session = known.session
            if session.seq:
                self._tally[wire.Register, UNANSWERED] += 1
                return None
            self._heard(known, source, datagram, now)
            return self._repeat(wire.Register, session)
        try:
            if member is not None:
                raise IllegalMessage(wire.ALREADY_A_MEMBER)
            group = self._check_admission(source, request.name)
        except IllegalMessage as e:
            # Said in the session's words: Illegal message, to a well-formed
            # registration, means a server without sessions.
            self._tally[wire.Register, REFUSED] += 1
            return wire.refused(0, e.reason)
        token = self._new_token()
        if token in self._sessions:
            raise RuntimeError("a new token that a session has: a broken source of tokens")
        session = Session(token, request.nonce, None, 3 * len(datagram), source)
        member = self._admit(source, request.name, group, now, session)
        self._sessions[token] = member
        self._nonces[request.nonce] = member
        # The others' names, as 1 Name lists them, as far as the reply to an
        # address not yet shown to receive may go.
        head = wire.registered(token, member.cursor.position)
        others = [m for m in self._ids.values() if m is not member]
        room = min(self.max_reply_bytes, session.budget) - len(head) - len(wire.LINE_SEPARATOR)
        names = wire.member_list((m.name for m in reversed(others)), len(others), room)
        if others and len(names) <= room:
            head += wire.LINE_SEPARATOR + names
        session.reply = head
        self._tally[wire.Register, _DONE] += 1
        return self._counted_budget(wire.Register, session, session.reply)

    def _session(self, source, address_member, request, now, datagram):
        """
        A request C{7} to C{0}: answered from the session it names.  A
        request older than the newest one seen gets no reply (the client is
        past it); a repeat of the newest gets the reply the first one got,
        and changes nothing; a newer one tells that the reply to the last
        arrived (a client has one request outstanding at a time).
        """
        # The path of every session request, kept flat, as receive() is.
        # What a request came to is counted on the rarer paths, and by a
        # whole number of its own for a text or a poll done.
        seq = request.seq
        member = self._sessions.get(request.token)
        if member is None:
            self._tally[request.__class__, REFUSED] += 1
            return b"%d %s" % (seq, wire.UNKNOWN_SESSION)
        session = member.session
        if seq < session.seq:
            self._tally[request.__class__, UNANSWERED] += 1
            return None
        if source != member.source:
            if address_member is not None:
                self._tally[request.__class__, REFUSED] += 1
                return wire.refused(seq, wire.ADDRESS_IN_USE)
            self._move(member, source)
        # _heard(), inlined.
        member.last_seen = now
        self._silent.move_to_end(source)
        if session.budget is not None:
            session.budget += 3 * len(datagram)
        if self._dirty is not None:
            self._dirty[member.id] = member
            self.changed = True
        kind = request.__class__
        repeat = seq == session.seq
        if not repeat:
            if session.budget is not None and session.replied_to == source:
                session.budget = None  # it got the last reply: it receives
            session.seq = seq
            if session.told:
                # The dropped-lines notice in the last reply arrived.
                member.dropped -= session.told
                session.told = 0
        elif kind is not wire.SessionFetch:
            if session.reply is None:
                self._tally[kind, UNANSWERED] += 1
                return None  # the number of a poll: a confused client
            return self._repeat(kind, session)
        session.replied_to = source
        if kind is wire.SessionFetch:
            session.reply = None  # a repeat is answered anew
            reply = self._session_fetch(member, request, repeat)
        elif kind is wire.SessionSay:
            self._say(source, member, request, now)
            self._session_said += 1
            reply = session.reply = b"%d" % seq
        else:
            try:
                if kind is wire.SessionRename:
                    self._rename(source, member, request, now)
                else:
                    self._leave(source, member, request, now)
            except IllegalMessage as e:
                reply = wire.refused(seq, e.reason)
                self._tally[kind, REFUSED] += 1
            else:
                reply = b"%d" % seq
                self._tally[kind, _DONE] += 1
            session.reply = reply
        if session.budget is None:
            return reply
        return self._counted_budget(kind, session, reply)

    def _repeat(self, kind, session):
        # A repeat of the newest request, answered as it was the first time:
        # done or refused as it was then, unless its budget holds it back.
        self.repeats += 1
        reply = self._budgeted(session, session.reply)
        if reply is None:
            self._tally[kind, UNANSWERED] += 1
        elif _is_refusal(reply):
            self._tally[kind, REFUSED] += 1
        else:
            self._tally[kind, _REPEATED] += 1
        return reply

    def _counted_budget(self, kind, session, reply):
        # _budgeted(), for a request already counted as done or refused: a
        # reply held back is a request left without one.
        budgeted = self._budgeted(session, reply)
        if budgeted is None:
            if _is_refusal(reply):
                self._tally[kind, REFUSED] -= 1
                self._tally[kind, UNANSWERED] += 1
            else:
                self._tally[kind, _WITHHELD] += 1
        return budgeted

    def _heard(self, member, source, datagram, now):
        # A valid session request: the member is still there, and its
        # session changes (its number, its reply, its budget), to be saved.
        member.last_seen = now
        self._silent.move_to_end(member.source)
        session = member.session
        if session.budget is not None:
            session.budget += 3 * len(datagram)
        self._mark(member)

    def _budgeted(self, session, reply):
        # Until its address has shown it receives, a member is sent at most
        # three times what came from there (RFC 9000, section 8).
        budget = session.budget
        if budget is None:
            return reply
        if len(reply) > budget:
            return None
        session.budget = budget - len(reply)
        return reply

    def _move(self, member, source):
        # Roaming: the member's address changed (a NAT forgot its mapping,
        # the client moved networks).  Nobody else is told.
        old = member.source
        del self._members[old]
        del self._silent[old]
        if member.group is not None:
            self._leave_group(member.group)
        member.source = source
        member.group = self.group_of(source)
        if member.group is not None:
            self._groups[member.group] = self._groups.get(member.group, 0) + 1
        self._members[source] = member
        self._silent[source] = member
        member.session.budget = 0
        self._mark(member)
        self._report(Moved(old, source, member.name))

    def _session_fetch(self, member, request, repeat):
        log = self._log
        cursor = member.cursor
        position = request.position
        seq = request.seq
        end = log.end
        if position > end:
            self._tally[wire.SessionFetch, REFUSED] += 1
            return wire.refused(seq, wire.POSITION_AHEAD)
        self._session_fetched += 1
        if position > cursor.position:
            # The lines before position arrived: release them.
            if position < log.first:
                # The log forgot the lines after them (it was full) before
                # they were sent: those were lost.
                member.dropped += log.first - position
                position = log.first
            log.advance(cursor, position)
        own = cursor.own
        if (
            cursor.position < log.first
            or end - cursor.position - (len(own) if own else 0) > self.max_pending
        ):
            member.dropped += log.discard(cursor, self.max_pending)
        # Room for the lines, after "Seq NewPosition\n" at its longest.
        head = b"%d %d" % (seq, end)
        session = member.session
        if cursor.position == end and not (session.told if repeat else member.dropped):
            session.told = 0
            return head  # nothing new: the most common poll of all
        budget = self.max_reply_bytes - len(head) - _SEPARATOR_BYTES
        if session.budget is not None:
            budget = min(budget, session.budget - len(head) - _SEPARATOR_BYTES)
        # A repeat tells of as many dropped lines as the first reply did,
        # whichever of the two arrives: any dropped since, the next poll.
        told = session.told = session.told if repeat else member.dropped
        if told:
            notice = wire.dropped(told)
            text, position = log.look(cursor, max(budget - len(notice) - _SEPARATOR_BYTES, 0))
            text = notice + wire.LINE_SEPARATOR + text if text else notice
        else:
            text, position = log.look(cursor, max(budget, 0))
        if position == end:
            if text:
                return head + wire.LINE_SEPARATOR + text
            return head
        return wire.fetched(seq, position, text)

    def _say(self, source, member, request, now, datagram=None):
        log = self._log
        cursor = member.cursor
        caught_up = cursor.position == log.end
        log.append(wire.said(member.name, request.text), cursor)
        if self._dirty is not None:
            # A new line to save; if it was caught up, the log moved it.
            self.changed = True
            if caught_up:
                self._dirty[member.id] = member
        return EMPTY

    def _rename(self, source, member, request, now, datagram=None):
        old, new = member.name, request.name
        self._check_free(new)
        self._log.append(wire.renamed(old, new), member.cursor)
        del self._names[old]
        self._names[new] = member
        member.name = new
        self._mark(member)
        self._report(Renamed(source, old, new))
        return EMPTY

    def _leave(self, source, member, request, now, datagram=None):
        self._remove(member)
        self._report(Left(source, member.name))
        return EMPTY

    def _fetch(self, source, member, request, now, datagram=None):
        log = self._log
        cursor = member.cursor
        position = cursor.position
        own = cursor.own
        # Behind forgotten lines, or more unread than the backlog holds
        # (log.unread(), inlined: every poll asks).
        if (
            position < log.first
            or log.end - position - (len(own) if own else 0) > self.max_pending
        ):
            member.dropped += log.discard(cursor, self.max_pending)
            self._mark(member)
        elif position == log.end and not member.dropped:
            return EMPTY  # nothing new: the most common poll of all
        if self._dirty is not None:
            self._dirty[member.id] = member
            self.changed = True
        if not member.dropped:
            text, position = log.look(cursor, self.max_reply_bytes)
            log.advance(cursor, position)
            return text
        notice = wire.dropped(member.dropped)
        room = self.max_reply_bytes - len(notice) - len(wire.LINE_SEPARATOR)
        member.dropped = 0
        text, position = log.look(cursor, room)
        log.advance(cursor, position)
        return notice + wire.LINE_SEPARATOR + text if text else notice

    def _enter(self, member):
        # The tables a member is found in, but the log's and _silent, whose
        # order the caller knows.
        self._members[member.source] = member
        self._ids[member.id] = member
        self._names[member.name] = member
        if member.group is not None:
            self._groups[member.group] = self._groups.get(member.group, 0) + 1

    def _remove(self, member):
        line = wire.left(member.name)
        source = member.source
        del self._members[source]
        del self._ids[member.id]
        del self._names[member.name]
        del self._silent[source]
        if member.group is not None:
            self._leave_group(member.group)
        if member.session is not None:
            del self._sessions[member.session.token]
            del self._nonces[member.session.nonce]
        log = self._log
        log.close(member.cursor)
        log.append(line)
        if self._dirty is not None:
            self._dirty[member.id] = None
            self.changed = True

    def _leave_group(self, group):
        groups = self._groups
        if groups[group] == 1:
            del groups[group]
        else:
            groups[group] -= 1

    def restore(self, members, lines, first, next_id):
        """
        Rebuild the room from what a store saved, forgetting whatever it held
        (a store returns a room to its last commit this way).

        @param members: a L{MemberState} for each member, in join order.
        @param lines: C{(author id or None, line)} for each line held, from
            sequence number C{first} on.
        @param next_id: the number the next member will get.
        """
        self._lines_before += self._log.end - self._restored_end
        self._empty()
        restored = []
        for state in members:
            member = Member(
                state.id,
                state.source,
                state.name,
                self.group_of(state.source),
                state.last_seen,
                Cursor(state.id, state.position),
            )
            member.dropped = state.dropped
            if state.session is not None:
                member.session = Session(*state.session[:2], state.session.reply,
                                         state.session.budget, state.session.replied_to,
                                         state.session.seq, state.session.told)
                self._sessions[member.session.token] = member
                self._nonces[member.session.nonce] = member
            restored.append(member)
            self._enter(member)
        for member in sorted(restored, key=lambda m: m.last_seen):
            self._silent[member.source] = member
        self._log.restore(first, lines, [m.cursor for m in restored])
        self._reported_end = self._restored_end = self._log.end
        self._next_id = next_id
        # What was restored is no change, but the members the log moved to
        # fit a smaller capacity are: the next take_changes() reports them.

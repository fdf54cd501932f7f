"""
The room kept in Redis, for several daemons serving one group: what to send
Redis for a batch of datagrams, and what its answer means.

The rules of the protocol run inside Redis, in C{room.lua}: the memory
room's (L{udpchat.room.Room}) step for step, over keys, checked against the
same model by the tests.  A daemon parses each datagram here (L{wire}
owns the syntax), and sends a batch of them to the script in one call
(L{RedisRoom.call}), which Redis runs atomically: every daemon sees one
state, and nothing is replied before Redis has applied the change.

No I/O here: L{udpchat.sharedroom} makes the calls, on Twisted, and
L{check_redis} makes one, blocking, while the command line is checked.
"""

import hashlib
import socket
from collections import Counter
from importlib import resources
from typing import NamedTuple
from urllib.parse import unquote, urlsplit

from udpchat import wire
from udpchat.room import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_MEMBERS,
    DEFAULT_MAX_PENDING,
    DEFAULT_MAX_REPLY_BYTES,
    OK,
    REFUSED,
    UNANSWERED,
    Expired,
    Joined,
    Left,
    Moved,
    Renamed,
    _random_token,
)
from udpchat.wire import ILLEGAL, IllegalMessage, parse_request

SCRIPT = resources.files("udpchat").joinpath("room.lua").read_bytes()
"""The rules, as Redis runs them."""

SCRIPT_SHA = hashlib.sha1(SCRIPT).hexdigest().encode()
"""The name Redis knows the script by, once it has been given it."""

DEFAULT_ROOM = "udpchat"
"""The prefix of a group's keys, when --room does not name it."""

DEFAULT_REDIS_PORT = 6379

MINIMUM_VERSION = (6, 2)
"""The first Redis to trim a stream by id (XTRIM MINID), which the script does."""

_EVENTS = {
    b"joined": lambda source, name, other: Joined(source, name),
    b"renamed": lambda source, name, other: Renamed(source, name, other.decode()),
    b"left": lambda source, name, other: Left(source, name),
    b"expired": lambda source, name, other: Expired(source, name),
    b"moved": lambda source, name, other: Moved(decode_source(other), source, name),
}

# Each request's operation: its code, as the script names it.
_OPS = {request: code for code, request, _ in wire.REQUEST_CODES}
_NOTHING = b""


def encode_source(source):
    """A source C{(host, port)} as the script keeps it: C{b"host port"}."""
    return b"%s %d" % (source[0].encode("ascii"), source[1])


def decode_source(data):
    """The source that L{encode_source} encoded as C{data}."""
    host, port = data.rsplit(b" ", 1)
    return host.decode("ascii"), int(port)


class RedisAddress(NamedTuple):
    """
    Where a group's Redis is, from C{--state redis://...}: never printed
    whole (L{__str__} leaves the password out).
    """

    host: str
    port: int
    db: int
    username: object  # str or None
    password: object  # str or None

    def __str__(self):
        user = f"{self.username}@" if self.username else ""
        return f"redis://{user}{self.host}:{self.port}/{self.db}"


def is_redis_url(text):
    """Whether C{text}, a C{--state} value, names a Redis rather than a file."""
    return text.startswith("redis://")


def parse_redis_url(text):
    """
    Read C{redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]}.

    @raise ValueError: with a message that never quotes the password.
    """
    try:
        parts = urlsplit(text)
        port = parts.port or DEFAULT_REDIS_PORT
    except ValueError:
        raise ValueError("a Redis URL is redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]") from None
    if parts.scheme != "redis" or not parts.hostname or parts.query or parts.fragment:
        raise ValueError("a Redis URL is redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]")
    path = parts.path.lstrip("/")
    if not path:
        db = 0
    elif path.isdigit() and path.isascii():
        db = int(path)
    else:
        raise ValueError(f"the database of a Redis URL is a number, not {path!r}")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if username and password is None:
        raise ValueError("a Redis URL with a user needs its password: redis://USER:PASSWORD@HOST")
    return RedisAddress(parts.hostname, port, db, username, password)


class RedisError(Exception):
    """Redis cannot serve the group: unreachable, refusing, or too old."""


def _command(*args):
    # The Redis protocol's form of a command (RESP): an array of strings.
    encoded = [arg if isinstance(arg, bytes) else str(arg).encode() for arg in args]
    return b"*%d\r\n" % len(encoded) + b"".join(
        b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in encoded
    )


def setup_commands(address):
    """The commands that begin a connection: log in, choose the database."""
    commands = []
    if address.password is not None:
        login = (address.username,) if address.username else ()
        commands.append(("AUTH", *login, address.password))
    if address.db:
        commands.append(("SELECT", address.db))
    return commands


def check_redis(address, timeout=5.0):
    """
    Connect to the Redis at C{address} as the daemon will, and give it the
    script: a daemon that cannot keep its group there says so before it
    starts, in one line.  Blocking; run it while the command line is checked.

    @raise RedisError: when Redis is unreachable, refuses the login or the
        database, or is older than L{MINIMUM_VERSION}.
    """
    import hiredis  # the redis extra: only a daemon on Redis needs it

    where = f"{address.host}:{address.port}"
    try:
        connection = socket.create_connection((address.host, address.port), timeout)
    except OSError as e:
        raise RedisError(f"cannot reach Redis at {where}: {e.strerror or e}") from None
    reader = hiredis.Reader()
    try:
        commands = setup_commands(address) + [("INFO", "server"), ("SCRIPT", "LOAD", SCRIPT)]
        connection.sendall(b"".join(_command(*command) for command in commands))
        replies = []
        while len(replies) < len(commands):
            data = connection.recv(65536)
            if not data:
                raise RedisError(f"Redis at {where} closed the connection")
            reader.feed(data)
            while (reply := reader.gets()) is not False:
                replies.append(reply)
    except OSError as e:
        raise RedisError(f"cannot talk to Redis at {where}: {e.strerror or e}") from None
    finally:
        connection.close()
    for command, reply in zip(commands, replies):
        if isinstance(reply, hiredis.ReplyError):
            # The reply names no secret (it quotes none of the command).
            raise RedisError(f"Redis at {where} refused {command[0]}: {reply}")
    info = replies[-2].decode("ascii", "replace")
    version = next(
        (line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("redis_version:")),
        "0",
    )
    numbers = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
    if numbers < MINIMUM_VERSION:
        raise RedisError(
            f"Redis at {where} is version {version}; udpchat needs "
            f"{'.'.join(map(str, MINIMUM_VERSION))} or newer"
        )
    return version


class RedisRoom:
    """
    A room whose state is in Redis: the settings of L{udpchat.room.Room},
    turned into the script's arguments, and its answers back into replies
    and events.  It keeps what a daemon reports of its own share of the
    work: the events it saw, the requests it answered, and the size of the
    group at its last call.

    @param prefix: the group's key prefix (C{--room}), as bytes.
    """

    def __init__(
        self,
        prefix=DEFAULT_ROOM.encode(),
        max_reply_bytes=DEFAULT_MAX_REPLY_BYTES,
        max_members=DEFAULT_MAX_MEMBERS,
        max_pending=DEFAULT_MAX_PENDING,
        idle_timeout=DEFAULT_IDLE_TIMEOUT,
        group_of=lambda source: None,
        max_members_per_group=None,
        new_token=None,
        sessions_only=False,
    ):
        self.prefix = prefix
        self.max_reply_bytes = max_reply_bytes
        self.max_members = max_members
        self.max_pending = max_pending
        self.idle_timeout = idle_timeout
        self.group_of = group_of
        self.max_members_per_group = max_members_per_group
        self.sessions_only = sessions_only
        self._new_token = new_token or _random_token
        self._settings = [
            b"%d" % max_reply_bytes,
            b"%d" % max_members,
            b"%d" % max_pending,
            repr(float(idle_timeout)).encode(),
            b"" if max_members_per_group is None else b"%d" % max_members_per_group,
            b"1" if sessions_only else b"0",
        ]
        self.events_reported = Counter()
        self.repeats = 0
        self.member_count = 0
        self.stored_lines = 0
        self.lines_added = 0
        self._outcomes = Counter()

    def discount(self, seconds):
        """
        Nothing: this daemon stalled, but the group's other daemons may not
        have; idle timers run on (unlike a room in one process, L{Room}).
        """

    def encode(self, source, datagram):
        """
        The script's seven values for C{datagram} from C{source}: it is
        parsed here, once, and only what the rules need goes to Redis.
        """
        group = self.group_of(source)
        head = [encode_source(source), b"" if group is None else str(group).encode(), b"%d" % len(datagram)]
        try:
            request = parse_request(datagram)
        except IllegalMessage:
            return head + [b"x", b"1" if datagram == ILLEGAL else _NOTHING, _NOTHING, _NOTHING]
        kind = request.__class__
        op = _OPS[kind]
        if kind is wire.Say or kind is wire.Join or kind is wire.Rename:
            argument = (request.text if kind is wire.Say else request.name).encode()
            return head + [op, argument, _NOTHING, _NOTHING]
        if kind is wire.Leave or kind is wire.Fetch:
            return head + [op, _NOTHING, _NOTHING, _NOTHING]
        if kind is wire.Register:
            return head + [op, request.nonce, request.name.encode(), self._new_token()]
        seq = b"%d" % request.seq
        if kind is wire.SessionSay:
            return head + [op, request.token, seq, request.text.encode()]
        if kind is wire.SessionFetch:
            return head + [op, request.token, seq, b"%d" % request.position]
        if kind is wire.SessionRename:
            return head + [op, request.token, seq, request.name.encode()]
        return head + [op, request.token, seq, _NOTHING]

    def arguments(self, encoded, now):
        """
        The arguments after the script's name for one call: C{encoded}, a
        list of L{encode} values (none for a sweep for idle members), at
        time C{now}.
        """
        arguments = [b"1", self.prefix, repr(float(now)).encode(), *self._settings]
        for values in encoded:
            arguments += values
        return arguments

    def results(self, answer, datagrams):
        """
        What the script's C{answer} to a call for C{datagrams} means:
        C{(replies, events)}, a reply (bytes, or L{None} for none) for
        each datagram, in order, and the membership events, oldest first.
        """
        replies, raw_events, self.member_count, self.stored_lines = answer
        events = []
        for kind, source, name, other in raw_events:
            event = _EVENTS[kind](decode_source(source), name.decode(), other)
            self.events_reported[type(event)] += 1
            if type(event) is not Moved:
                self.lines_added += 1
            events.append(event)
        outcomes = self._outcomes
        for datagram, reply in zip(datagrams, replies):
            code = datagram[:1]
            if reply == ILLEGAL or code not in _CODES:
                continue  # the adapter counts those, by their first byte
            if reply is None:
                outcomes[code, UNANSWERED] += 1
            elif code in _SESSION_OPS and _refuses(reply):
                outcomes[code, REFUSED] += 1
            else:
                outcomes[code, OK] += 1
                if code == b"2":
                    self.lines_added += 1
        return replies, events

    def unanswered(self, datagrams):
        """
        Count C{datagrams} as requests left without a reply: Redis did not
        answer the call that carried them.
        """
        for datagram in datagrams:
            code = datagram[:1]
            if code in _CODES:
                self._outcomes[code, UNANSWERED] += 1

    def requests(self):
        """
        The requests this daemon had answered (or not) by the group, as
        L{udpchat.room.Room.requests} counts them: C{{(code, outcome):
        count}}, totals that only grow.
        """
        return {
            (code.decode("ascii"), outcome): count
            for (code, outcome), count in self._outcomes.items()
            if count
        }


_CODES = frozenset(code for code, _, _ in wire.REQUEST_CODES)
_SESSION_OPS = frozenset(code for code, request, _ in wire.REQUEST_CODES if request in (wire.Register, *wire.SESSION_REQUESTS))


def _refuses(reply):
    # A session's refusal: "Seq refused Reason" or "Seq unknown".
    words = reply.split(b" ", 2)
    return words[1:2] == [wire.REFUSED] or words[1:] == [wire.UNKNOWN_SESSION]

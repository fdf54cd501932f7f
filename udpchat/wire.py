"""
The udpchat wire format: datagrams in, request objects out, reply bytes back.

This module is the only place where the protocol's bytes become text and
text becomes bytes, and the only place that knows the numeric request codes:
one table, L{REQUEST_CODES}, read by L{parse_request} and L{encode_request}.  It
also names every reason a request is refused (L{IllegalMessage.reason}), and
tells the forms of the lines a server sends apart (L{line_kind}), so that a
client's explanations key on constants, never on message strings.  Both wings
use it: the server's L{udpchat.room} and the client's L{udpchat.session} and
L{udpchat.console}.  No I/O here, and no knowledge of rooms or members:
L{udpchat.room} decides what a request means.

The protocol reference (for people writing clients) is in README.rst; the
limits it states are the constants below.
"""

import re
import unicodedata
from dataclasses import dataclass

MAX_NAME_CHARS = 32
"""A name is 1 to this many code points."""

MAX_TEXT_BYTES = 1024
"""A chat text is at most this many bytes of UTF-8."""

MAX_REQUEST_BYTES = len(b"2 ") + MAX_TEXT_BYTES
"""The largest legal request, without its optional line ending (1026)."""

MAX_DATAGRAM_BYTES = MAX_REQUEST_BYTES + len(b"\r\n")
"""The largest datagram that can hold a legal request C{1} to C{5}, with
"\\r\\n" (1028); see L{MAX_SESSION_DATAGRAM_BYTES} for the others."""

MAX_LINE_BYTES = 4 * MAX_NAME_CHARS + len(": ") + MAX_TEXT_BYTES
"""The longest line a member can be sent (1154): C{Name: Text} at its limits."""

ILLEGAL = b"Illegal message"
"""The one reply to every request the server refuses."""

EMPTY = b""
"""The acknowledgement: an empty datagram."""


class IllegalMessage(Exception):
    """
    A request that the protocol refuses; the reply to it is L{ILLEGAL}.

    Raised as C{IllegalMessage(reason)}, C{reason} one of the constants
    below: the reply never says why, but a client explains it and tests
    check it.
    """

    @property
    def reason(self):
        """Why the request is refused: L{NAME_TAKEN}, L{BLANK_TEXT}..."""
        # A property, not an __init__: the server raises these on its hot
        # path, and a Python-level constructor would cost every raise.
        return self.args[0] if self.args else None


# Why a request is refused, as IllegalMessage.reason.  Modules compare these
# constants; the strings are for logs and tracebacks.

DATAGRAM_TOO_LONG = "too long"
"""Longer than L{MAX_DATAGRAM_BYTES}: refused whole, never cut to size."""

MALFORMED = "malformed request"
"""Not C{CODE} or C{CODE SP ARG} with a non-empty argument."""

UNKNOWN_CODE = "unknown code"
"""C{CODE SP ARG} with a code that takes no argument, or is no code."""

NOT_UTF8 = "not UTF-8"
"""An argument that is not strict UTF-8."""

NAME_LENGTH = "name length"
"""A name of 0, or more than L{MAX_NAME_CHARS}, code points."""

PADDED_NAME = "name padded with whitespace"
"""A name that begins or ends with whitespace."""

RESERVED_NAME = "reserved name"
"""C{Illegal message}, or C{and N more}: replies use those forms."""

FORBIDDEN_CHARACTER_IN_NAME = "forbidden character in name"
"""A comma, a control or format character, or a line or paragraph separator."""

TEXT_TOO_LONG = "text too long"
"""A text of more than L{MAX_TEXT_BYTES} bytes of UTF-8."""

BLANK_TEXT = "blank text"
"""A text of whitespace only."""

FORBIDDEN_CHARACTER_IN_TEXT = "forbidden character in text"
"""A control character other than TAB, or a line or paragraph separator."""

# The room's reasons: L{udpchat.room} raises them, for what only the state of
# the room can tell.

NOT_A_MEMBER = "not a member"
"""A request other than C{1} from an address that is no member."""

ALREADY_A_MEMBER = "already a member"
"""C{1} from an address that is a member."""

NAME_TAKEN = "name taken"
"""C{1} or C{3} with a name that a member has (the sender included)."""

ROOM_FULL = "room full"
"""C{1} when the room holds as many members as it may."""

GROUP_FULL = "group full"
"""C{1} when the sender's group of addresses has its share of the room."""

SESSION_MEMBER = "session member"
"""C{2} to C{5} from the address of a member that has a session: only its
token acts for it."""

LEGACY_REFUSED = "sessions only"
"""C{1} to a server that takes members with sessions only."""

POSITION_AHEAD = "position ahead"
"""A session poll that names a position past the last line of the log."""

ADDRESS_IN_USE = "address in use"
"""A session request from the address of another member (it cannot move
there)."""


# Requests are values, made once per datagram: slotted dataclasses, not
# frozen ones, which cost twice as much to make.  Nobody changes them.


@dataclass(slots=True)
class Join:
    """C{1 Name}: become a member called C{name}."""

    name: str


@dataclass(slots=True)
class Say:
    """C{2 Text}: queue C{text} for every other member."""

    text: str


@dataclass(slots=True)
class Rename:
    """C{3 New}: change the sender's name to C{name}."""

    name: str


@dataclass(slots=True)
class Leave:
    """C{4}: stop being a member."""


@dataclass(slots=True)
class Fetch:
    """C{5}: ask for the pending lines."""


LEAVE = Leave()
FETCH = Fetch()


# The session requests (README.rst, "Sessions"): each names its session by
# its token and numbers itself, so that a repeat is recognised as one.


@dataclass(slots=True)
class Register:
    """C{6 Nonce Name}: become a member called C{name}, with a session."""

    nonce: bytes
    name: str


@dataclass(slots=True)
class SessionSay:
    """C{7 Token Seq Text}: queue C{text} for every other member, once."""

    token: bytes
    seq: int
    text: str


@dataclass(slots=True)
class SessionFetch:
    """
    C{8 Token Seq Position}: everything before C{position} arrived; ask for
    the lines from there on.
    """

    token: bytes
    seq: int
    position: int


@dataclass(slots=True)
class SessionRename:
    """C{9 Token Seq New}: change the session member's name to C{name}."""

    token: bytes
    seq: int
    name: str


@dataclass(slots=True)
class SessionLeave:
    """C{0 Token Seq}: end the session, leaving the group."""

    token: bytes
    seq: int


SESSION_REQUESTS = (SessionSay, SessionFetch, SessionRename, SessionLeave)
"""The requests that carry a token (L{Register} is answered with one)."""

TOKEN_BYTES = 32
"""A token, and a registration's nonce: 32 lowercase hexadecimal digits
(128 bits)."""

MAX_NUMBER_DIGITS = 19
"""A request number or a position: at most 19 decimal digits (below 2**63)."""

MAX_SESSION_DATAGRAM_BYTES = (
    len(b"7 ") + TOKEN_BYTES + 1 + MAX_NUMBER_DIGITS + 1 + MAX_TEXT_BYTES + len(b"\r\n")
)
"""The largest datagram that can hold a legal session request (1081)."""

UNKNOWN_SESSION = b"unknown"
"""After a session reply's request number: no session has that token."""

REFUSED = b"refused"
"""After a session reply's request number: the request is refused (a reason
may follow)."""

REQUEST_CODES = (
    (b"1", Join, "name"),
    (b"2", Say, "text"),
    (b"3", Rename, "name"),
    (b"4", Leave, None),
    (b"5", Fetch, None),
    (b"6", Register, "name"),
    (b"7", SessionSay, "text"),
    (b"8", SessionFetch, "position"),
    (b"9", SessionRename, "name"),
    (b"0", SessionLeave, None),
)
"""
The request codes, the one place they are spelled: C{(code, request class,
argument)}, the argument being the name of the request's field that holds
its last argument, or None for a request that takes none.  The session
requests (C{6} to C{0}) carry a nonce or a token, and a request number,
before it.  L{parse_request} and L{encode_request} both derive what they
need from this table.
"""

# What the two derive, at import time.  The parser's hot path (100,000
# requests a second and more) compares its bytes with these constants, as
# fast as literals would be; a dictionary lookup per request would cost more.
# Codes with an argument are bytes as the parser sees them: one integer each.
_ENCODING = {request: (code, argument) for code, request, argument in REQUEST_CODES}
_FETCH, _LEAVE = _ENCODING[Fetch][0], _ENCODING[Leave][0]
_JOIN, _SAY, _RENAME = (_ENCODING[request][0][0] for request in (Join, Say, Rename))
_SESSION_CODES = {
    code[0]: request for code, request, _ in REQUEST_CODES if request is Register or request in SESSION_REQUESTS
}
_REGISTER = _ENCODING[Register][0][0]
# "6 NONCE NAME", "7 TOKEN SEQ TEXT"...: the hex and the number checked here,
# the argument after them as the 1.0 request with that argument checks it.
_SPACE = ord(" ")
_NEWLINE = ord("\n")

_RESERVED_NAME = re.compile(r"and \d+ more\Z")

# What a text may not hold: control characters (Unicode category Cc, which is
# exactly U+0000-U+001F and U+007F-U+009F) except TAB, and the line and
# paragraph separators, which terminals and chat views render as breaks.
# One regular expression instead of a loop in Python: texts are 1 KB.
_FORBIDDEN_IN_TEXT = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


# Names refuse more: the comma (it separates names in the member list), every
# Cc including TAB, and every format character (Cf: U+200B, U+202E...), which
# can hide or reorder what a name shows.  Names are short: a loop will do.
_FORBIDDEN_CATEGORIES_IN_NAME = frozenset(("Cc", "Cf"))
_FORBIDDEN_CHARS_IN_NAME = frozenset(",\u2028\u2029")


def _check_name(name):
    """
    Return C{name} if it is a legal member name, else raise L{IllegalMessage}.
    Uniqueness is the room's business, not the wire's.
    """
    if not 1 <= len(name) <= MAX_NAME_CHARS:
        raise IllegalMessage(NAME_LENGTH)
    if name[0].isspace() or name[-1].isspace():
        raise IllegalMessage(PADDED_NAME)
    if name == "Illegal message" or _RESERVED_NAME.match(name):
        raise IllegalMessage(RESERVED_NAME)
    for char in name:
        if (
            char in _FORBIDDEN_CHARS_IN_NAME
            or unicodedata.category(char) in _FORBIDDEN_CATEGORIES_IN_NAME
        ):
            raise IllegalMessage(FORBIDDEN_CHARACTER_IN_NAME)
    return name


def parse_request(datagram):
    """
    Parse one datagram into a request object.

    @param datagram: the bytes as received, at most L{MAX_DATAGRAM_BYTES} of
        them for a legal request C{1} to C{5}, L{MAX_SESSION_DATAGRAM_BYTES}
        for a session request (longer ones are refused, never truncated:
        read one byte more than the latter).
    @return: a L{Join}, L{Say}, L{Rename}, L{Leave} or L{Fetch}.
    @raise IllegalMessage: for anything the protocol does not allow.
    """
    size = len(datagram)
    if size > MAX_DATAGRAM_BYTES and (
        size > MAX_SESSION_DATAGRAM_BYTES or datagram[0] not in _SESSION_CODES
    ):
        raise IllegalMessage(DATAGRAM_TOO_LONG)
    if size and datagram[-1] == _NEWLINE:  # cheaper than endswith()
        datagram = datagram[:-2] if datagram.endswith(b"\r\n") else datagram[:-1]
    if len(datagram) < 3:
        if datagram == _FETCH:
            return FETCH
        if datagram == _LEAVE:
            return LEAVE
        raise IllegalMessage(MALFORMED)
    # Every other legal request is "C ARG" with C one ASCII digit and a
    # non-empty ARG.  Checking the bytes first keeps int() and its liberal
    # idea of a digit (" 5", "+5", Arabic-Indic digits) out of the parser.
    if datagram[1] != _SPACE:
        raise IllegalMessage(MALFORMED)
    code = datagram[0]
    argument = datagram[2:]
    if code == _SAY:
        # The most common request, checked inline: a text is not blank and
        # holds nothing in _FORBIDDEN_IN_TEXT.
        if len(argument) > MAX_TEXT_BYTES:
            raise IllegalMessage(TEXT_TOO_LONG)
        try:
            text = argument.decode("utf-8")
        except UnicodeDecodeError:
            raise IllegalMessage(NOT_UTF8) from None
        if text.isspace():
            raise IllegalMessage(BLANK_TEXT)
        # Every forbidden character is unprintable: most texts need no
        # search.
        if not text.isprintable() and _FORBIDDEN_IN_TEXT.search(text):
            raise IllegalMessage(FORBIDDEN_CHARACTER_IN_TEXT)
        return Say(text)
    if code == _JOIN:
        return Join(_check_name(decode(argument)))
    if code == _RENAME:
        return Rename(_check_name(decode(argument)))
    request = _SESSION_CODES.get(code)
    if request is None:
        raise IllegalMessage(UNKNOWN_CODE)
    return _parse_session(request, argument)


def _parse_session(request, argument):
    # The session requests: off the 1.0 requests' path, which they must
    # not slow down, and read with one split (a regular expression costs
    # twice as much): NONCE-or-TOKEN, then SEQ, then the rest.
    fields = argument.split(b" ", _SPLITS[request])
    token = fields[0]
    if len(token) != TOKEN_BYTES or token.translate(None, _HEX_DIGITS):
        raise IllegalMessage(MALFORMED)
    if request is Register:
        if len(fields) != 2:
            raise IllegalMessage(MALFORMED)
        return Register(token, _check_name(decode(fields[1])))
    seq = fields[1] if len(fields) > 1 else b""
    # A number: ASCII digits only (bytes.isdigit() knows no others), at
    # most MAX_NUMBER_DIGITS, no leading zero, and 0 is the registration's.
    if not seq.isdigit() or len(seq) > MAX_NUMBER_DIGITS or seq[0] == _ZERO:
        raise IllegalMessage(MALFORMED)
    if request is SessionLeave:
        if len(fields) != 2:
            raise IllegalMessage(MALFORMED)
        return SessionLeave(token, int(seq))
    if len(fields) != 3 or not fields[2]:
        raise IllegalMessage(MALFORMED)
    rest = fields[2]
    if request is SessionFetch:
        if (
            not rest.isdigit()
            or len(rest) > MAX_NUMBER_DIGITS
            or (rest[0] == _ZERO and len(rest) > 1)
        ):
            raise IllegalMessage(MALFORMED)
        return SessionFetch(token, int(seq), int(rest))
    if request is SessionSay:
        return SessionSay(token, int(seq), _check_text(rest))
    return SessionRename(token, int(seq), _check_name(decode(rest)))


_HEX_DIGITS = b"0123456789abcdef"
_SPLITS = {Register: 1, SessionSay: 2, SessionFetch: 2, SessionRename: 2, SessionLeave: 1}
"""How many spaces of each request's argument separate its fields."""


_ZERO = ord("0")


def _check_text(argument):
    """The text of C{2 Text} (bytes), as parse_request checks it inline."""
    if len(argument) > MAX_TEXT_BYTES:
        raise IllegalMessage(TEXT_TOO_LONG)
    text = decode(argument)
    if text.isspace():
        raise IllegalMessage(BLANK_TEXT)
    if not text.isprintable() and _FORBIDDEN_IN_TEXT.search(text):
        raise IllegalMessage(FORBIDDEN_CHARACTER_IN_TEXT)
    return text


def redacted(datagram):
    """
    C{datagram} as a log may show it: a session request's token or nonce
    (a secret that acts for the member) replaced by C{<token>}.
    """
    if len(datagram) > 2 and datagram[0] in _SESSION_CODES and datagram[1] == _SPACE:
        return datagram[:2] + b"<token>" + datagram[2 + TOKEN_BYTES :]
    return datagram


def encode_request(request):
    """
    The datagram that carries C{request} (for clients): C{b"1 Alice"},
    C{b"4"}.  The argument is not checked; L{parse_request} is the judge
    (L{judged} asks it).

    @raise UnicodeEncodeError: for an argument that no UTF-8 can carry (a
        lone surrogate, as C{sys.argv} holds for bytes that are not UTF-8).
    """
    code, argument = _ENCODING[request.__class__]
    if request.__class__ is Register:
        return b"%s %s %s" % (code, request.nonce, request.name.encode())
    if request.__class__ in SESSION_REQUESTS:
        code = b"%s %s %d" % (code, request.token, request.seq)
    if argument is None:
        return code
    value = getattr(request, argument)
    if value.__class__ is int:
        return b"%s %d" % (code, value)
    return code + b" " + value.encode()


def judged(request):
    """
    The datagram that carries C{request}, once L{parse_request} has accepted
    it: a client's way to refuse locally what the server would refuse.

    @raise IllegalMessage: with the reason the server would have, or
        L{NOT_UTF8} for an argument that cannot be encoded at all.
    """
    try:
        datagram = encode_request(request)
    except UnicodeEncodeError:
        raise IllegalMessage(NOT_UTF8) from None
    parse_request(datagram)
    return datagram


def decode(data):
    """
    C{data} (bytes of the protocol) as text.

    @raise IllegalMessage: with L{NOT_UTF8} unless it is strict UTF-8.
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise IllegalMessage(NOT_UTF8) from None


def readable(data):
    """
    C{data} (bytes from a server or a user) as text to show, whatever it
    holds: what is not UTF-8 becomes U+FFFD, since a hostile peer may send
    anything.
    """
    return data.decode("utf-8", "replace")


# The lines queued for members.  A line is encoded once, when it is queued,
# and keeps the name its author had at that moment.


def said(name, text):
    """The line C{2 Text} queues: C{Name: Text}."""
    return f"{name}: {text}".encode()


def joined(name):
    """The line C{1 Name} queues."""
    return f"{name} has joined".encode()


def renamed(old, new):
    """The line C{3 New} queues."""
    return f"{old} changed his name to {new}".encode()


def left(name):
    """The line C{4} queues."""
    return f"{name} has left the group".encode()


def dropped(count):
    """
    The notice that begins a reply to C{5} when C{count} lines of the
    member's backlog were dropped since it was last told.
    """
    if count == 1:
        return b"[1 line dropped]"
    return b"[%d lines dropped]" % (count,)


LINE_SEPARATOR = b"\n"
"""Separates the lines of a reply to C{5}."""


def registered(token, position):
    """The reply to C{6 Nonce Name}: C{0 Token Position}."""
    return b"0 %s %d" % (token, position)


def acknowledged(seq):
    """The reply to a session request done: its number."""
    return b"%d" % (seq,)


def fetched(seq, position, text):
    """
    The reply to C{8 Token Seq Position}: C{Seq NewPosition}, then the
    lines (C{text}, joined by L{LINE_SEPARATOR}) after a separator.
    """
    head = b"%d %d" % (seq, position)
    return head + LINE_SEPARATOR + text if text else head


def refused(seq, reason):
    """The reply to a session request refused: C{Seq refused Reason}."""
    return b"%d %s %s" % (seq, REFUSED, reason.encode())


def unknown_session(seq):
    """The reply to a session request whose token no session has."""
    return b"%d %s" % (seq, UNKNOWN_SESSION)


def member_list(names, total, max_bytes):
    """
    Build the reply to C{1 Name}: the other members' names, newest first.

    @param names: an iterable of the other members' names, newest first.
    @param total: how many names C{names} yields.
    @param max_bytes: the reply cap.
    @return: C{Cy, Bo}; when not every name fits, as many as fit and then
        C{and N more}, all within C{max_bytes}.
    """
    shown, size = [], 0
    for name in names:
        item = name.encode()
        grown = size + len(item) + (2 if shown else 0)
        if grown > max_bytes:
            break
        shown.append(item)
        size = grown
    else:
        return b", ".join(shown)
    # Not every name fits: drop the oldest shown until ", and N more" does.
    while True:
        tail = b"and %d more" % (total - len(shown),)
        if not shown or size + 2 + len(tail) <= max_bytes:
            break
        dropped = shown.pop()
        size -= len(dropped) + (2 if shown else 0)
    shown.append(tail)
    return b", ".join(shown)


# Reading what a server sends (for clients).

CHAT_LINE = "chat"
"""A line that L{said} queues: C{Name: Text}."""

EVENT_LINE = "event"
"""A line that L{joined}, L{renamed} or L{left} queues."""

DROPPED_NOTICE = "dropped"
"""The notice that L{dropped} builds."""

_DROPPED = re.compile(r"\[\d+ lines? dropped\]\Z")
_EVENT = re.compile(r".+ (?:has joined|has left the group|changed his name to .+)\Z", re.DOTALL)


def reply_lines(reply):
    """
    The lines of a reply to C{5} (bytes), as text to show (L{readable});
    none for the empty reply.
    """
    return readable(reply).split("\n") if reply else []


def line_kind(line):
    """
    Which of the server's forms the line C{line} (text) has: L{DROPPED_NOTICE},
    L{EVENT_LINE} or L{CHAT_LINE}, the forms of L{dropped}, of L{joined},
    L{renamed} and L{left}, and of L{said}.

    The lines carry no type, so this goes by their form: a chat line always
    holds C{": "}, and an event only when a name holds it or ends with
    C{":"}.  The join of such a name is then taken for a chat line: better
    than a chat line taken for an event.
    """
    if _DROPPED.match(line):
        return DROPPED_NOTICE
    if ": " not in line and _EVENT.match(line):
        return EVENT_LINE
    return CHAT_LINE


# ---------------------------------------------------------------------------
# Reading the replies to session requests (for clients): added with the
# client side of sessions (L{udpchat.reliable}).  The forms are those that
# L{registered}, L{acknowledged}, L{fetched}, L{refused} and
# L{unknown_session} build.

REGISTERED_REPLY = "registered"
"""C{0 Token Position}, then C{\\n} and the other members' names, if any."""

DONE_REPLY = "done"
"""C{Seq}: the request is done (or was done before)."""

FETCHED_REPLY = "fetched"
"""C{Seq NewPosition}, then C{\\n} and the lines, if any."""

REFUSED_REPLY = "refused"
"""C{Seq refused Reason}: the request changed nothing."""

UNKNOWN_REPLY = "unknown"
"""C{Seq unknown}: no session has the token."""


@dataclass(slots=True)
class SessionReply:
    """
    A reply to a session request, as L{parse_session_reply} reads it.

    @ivar kind: L{REGISTERED_REPLY}, L{DONE_REPLY}, L{FETCHED_REPLY},
        L{REFUSED_REPLY} or L{UNKNOWN_REPLY}.
    @ivar seq: the number of the request answered (0 for a registration).
    @ivar token: a registration's token (bytes), else None.
    @ivar position: where to read from next, after a registration or a
        poll, else None.
    @ivar reason: a refusal's reason (text, one of the constants above
        from this project's server), else None.
    @ivar body: what follows the first line: the member list of a
        registration, the lines of a poll; empty when nothing does.
    """

    kind: str
    seq: int
    token: bytes = None
    position: int = None
    reason: str = None
    body: bytes = b""


_TOKEN_ONLY = re.compile(rb"[0-9a-f]{%d}\Z" % (TOKEN_BYTES,))
_DECIMAL_ONLY = re.compile(rb"(?:0|[1-9][0-9]{0,%d})\Z" % (MAX_NUMBER_DIGITS - 1,))


def parse_session_reply(datagram):
    """
    Read a server's reply to a session request (C{6} to C{0}).

    @return: a L{SessionReply}.
    @raise IllegalMessage: with L{MALFORMED} for anything else, L{ILLEGAL}
        included (the caller compares with that first).
    """
    head, separator, body = datagram.partition(LINE_SEPARATOR)
    fields = head.split(b" ", 2)
    if not _DECIMAL_ONLY.match(fields[0]):
        raise IllegalMessage(MALFORMED)
    seq = int(fields[0])
    count = len(fields)
    if count == 1:
        if not separator:
            return SessionReply(DONE_REPLY, seq)
    elif fields[1] == REFUSED:
        if not separator:
            reason = readable(fields[2]) if count == 3 else ""
            return SessionReply(REFUSED_REPLY, seq, reason=reason)
    elif fields[1] == UNKNOWN_SESSION:
        if count == 2 and not separator:
            return SessionReply(UNKNOWN_REPLY, seq)
    elif count == 2:
        if _DECIMAL_ONLY.match(fields[1]):
            return SessionReply(FETCHED_REPLY, seq, position=int(fields[1]), body=body)
    elif seq == 0 and _TOKEN_ONLY.match(fields[1]) and _DECIMAL_ONLY.match(fields[2]):
        return SessionReply(
            REGISTERED_REPLY, seq, token=fields[1], position=int(fields[2]), body=body
        )
    raise IllegalMessage(MALFORMED)

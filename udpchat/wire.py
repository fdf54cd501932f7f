"""
The udpchat wire format: datagrams in, request objects out, reply bytes back.

This module is the only place where bytes become text and text becomes bytes,
and the only place that knows the numeric request codes.  No I/O here, and no
knowledge of rooms or members: L{udpchat.room} decides what a request means.

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
"""The largest datagram that can hold a legal request, with "\\r\\n" (1028)."""

MAX_LINE_BYTES = 4 * MAX_NAME_CHARS + len(": ") + MAX_TEXT_BYTES
"""The longest line a member can be sent (1154): C{Name: Text} at its limits."""

ILLEGAL = b"Illegal message"
"""The one reply to every request the server refuses."""

EMPTY = b""
"""The acknowledgement: an empty datagram."""


class IllegalMessage(Exception):
    """
    A request that the protocol refuses; the reply to it is L{ILLEGAL}.
    """


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

# Bytes as the parser sees them, one integer each.
_SPACE, _JOIN, _SAY, _RENAME = b" 123"

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
        raise IllegalMessage("name length")
    if name[0].isspace() or name[-1].isspace():
        raise IllegalMessage("name padded with whitespace")
    if name == "Illegal message" or _RESERVED_NAME.match(name):
        raise IllegalMessage("reserved name")
    for char in name:
        if (
            char in _FORBIDDEN_CHARS_IN_NAME
            or unicodedata.category(char) in _FORBIDDEN_CATEGORIES_IN_NAME
        ):
            raise IllegalMessage("forbidden character in name")
    return name


def parse_request(datagram):
    """
    Parse one datagram into a request object.

    @param datagram: the bytes as received, at most L{MAX_DATAGRAM_BYTES} of
        them for a legal request (longer ones are refused, never truncated).
    @return: a L{Join}, L{Say}, L{Rename}, L{Leave} or L{Fetch}.
    @raise IllegalMessage: for anything the protocol does not allow.
    """
    if len(datagram) > MAX_DATAGRAM_BYTES:
        raise IllegalMessage("too long")
    if datagram.endswith(b"\n"):
        datagram = datagram[:-2] if datagram.endswith(b"\r\n") else datagram[:-1]
    if len(datagram) < 3:
        if datagram == b"5":
            return FETCH
        if datagram == b"4":
            return LEAVE
        raise IllegalMessage("malformed request")
    # Every other legal request is "C ARG" with C one ASCII digit 1-3 and a
    # non-empty ARG.  Checking the bytes first keeps int() and its liberal
    # idea of a digit (" 5", "+5", Arabic-Indic digits) out of the parser.
    if datagram[1] != _SPACE:
        raise IllegalMessage("malformed request")
    code = datagram[0]
    argument = datagram[2:]
    if code == _SAY:
        # The most common request, checked inline: a text is not blank and
        # holds nothing in _FORBIDDEN_IN_TEXT.
        if len(argument) > MAX_TEXT_BYTES:
            raise IllegalMessage("text too long")
        try:
            text = argument.decode("utf-8")
        except UnicodeDecodeError:
            raise IllegalMessage("not UTF-8") from None
        if text.isspace():
            raise IllegalMessage("blank text")
        if _FORBIDDEN_IN_TEXT.search(text):
            raise IllegalMessage("forbidden character in text")
        return Say(text)
    if code == _JOIN:
        return Join(_check_name(_decode(argument)))
    if code == _RENAME:
        return Rename(_check_name(_decode(argument)))
    raise IllegalMessage("unknown code")


_CODES = {Join: b"1", Say: b"2", Rename: b"3", Leave: b"4", Fetch: b"5"}


def encode_request(request):
    """
    The datagram that carries C{request} (for clients): C{b"1 Alice"},
    C{b"4"}.  The argument is not checked; L{parse_request} is the judge.
    """
    code = _CODES[type(request)]
    argument = getattr(request, "name", getattr(request, "text", None))
    if argument is None:
        return code
    return code + b" " + argument.encode()


def _decode(argument):
    try:
        return argument.decode("utf-8")
    except UnicodeDecodeError:
        raise IllegalMessage("not UTF-8") from None


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

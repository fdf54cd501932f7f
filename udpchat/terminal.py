"""
Text from the network made safe to show on a terminal.

A server, or anyone forging its replies, may send any bytes, and a
terminal obeys some of them: an escape sequence clears the screen, sets the
window title or writes into the clipboard (OSC 52), and a bidirectional
control reorders what follows it.  L{visible} shows those characters as
escapes instead, for the raw client on a terminal and for the chat mode.

Pure functions on text (the bytes were decoded by L{udpchat.wire}): no I/O,
and nothing of Twisted.
"""

import re

# The controls a terminal obeys: C0 but TAB, DEL, and C1 (as code points:
# UTF-8 terminals obey U+009B as CSI).  The line and paragraph separators,
# which no legal line holds.  The bidirectional embeddings, overrides and
# isolates (U+202A-U+202E, U+2066-U+2069), which reorder what follows them
# until they are closed; the marks (U+200E, U+200F, U+061C) reorder
# nothing beyond their neighbours, and right-to-left text needs them.
_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def visible(text):
    """
    C{text} with every character that a terminal would obey, or that would
    reorder what follows it, written as an escape: C{\\x1b}, C{\\u202e}.
    TAB, and everything else, is left as it is.
    """
    return _UNSAFE.sub(_escape, text)


def _escape(match):
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


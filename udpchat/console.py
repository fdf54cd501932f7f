"""
The chat mode of the client (C{--name NAME}): join as NAME, then every line
typed is a message, and a line that starts with C{/} is a command.

On a terminal (stdin and stdout both), the input line stays at the bottom
and the group's lines are printed above it without garbling what is being
typed: Twisted's conch line editor (L{HistoricRecvLine}, history included)
under L{ServerProtocol} on L{StandardIO}.  Elsewhere it reads and writes
plain lines, with no terminal control codes, for scripts.

This module sits on top of L{udpchat.session} (leaving, the exit status)
and L{udpchat.raw} (stdin cut into lines), and is imported only by
L{udpchat.client}, when C{--name} asks for it: it alone loads Twisted's
conch.  Its requests go through a client with the chat mode's requests
(C{join}, C{say}, C{rename}, C{poll}, C{raw}): L{udpchat.reliable}'s, by
sessions, or the 1.0 L{udpchat.session.ChatClient}, whose Deferreds fire
alike, with the reply, a L{Refused} or None.  It knows requests and the server's lines only through
L{udpchat.wire}, which judges requests for the client as for the server (a
line the protocol refuses is explained here, by the reason's constant, and
never sent) and decodes what the server sends.  Whatever is shown passes
through L{udpchat.terminal.visible}: a server's line cannot drive the
terminal, nor reorder the next line or the input line.  The bytes and text
here are the terminal's: keys in, screen writes out.
"""

import codecs
import os
import termios
import tty
import unicodedata
from collections import deque

from twisted.conch.insults.insults import ServerProtocol
from twisted.conch.recvline import HistoricRecvLine
from twisted.internet import fdesc, stdio

from udpchat import wire
from udpchat.raw import StdioLines
from udpchat.session import Occasion, Refused, Session, complain
from udpchat.terminal import visible

PLAIN = "plain"
"""A chat line, or anything else shown as it is."""

EVENT = "event"
"""A join, leave or rename, a dropped-lines notice, or the client's news."""

PROBLEM = "problem"
"""What was not sent or not delivered, and why."""

HELP = """\
Every line you type is sent to the group.  Commands:
  /nick NEW     take the name NEW
  /poll         fetch new messages now
  /join [NAME]  join again (as NAME) once the server has forgotten you
  /raw LINE     send LINE as a protocol request (1 Name, 2 Text, 3 New, 4, 5)
  /quit         leave and exit (also Ctrl-C, and Ctrl-D on an empty line)
  /help         this text
Begin a message with // to send one that begins with /."""

_FORGOTTEN = "the server has forgotten you (restarted? idle too long?): /join to join again"
_LOST = "the server lost your session: lines may be missing; joining again"

# Where the session stands with the group.
_JOINING = "joining"  # a join is under way: lines typed wait for it
_JOINED = "joined"
_NAMING = "naming"  # the server refused the name: a line typed is a name
_OUT = "out"  # not a member (no reply to the join, forgotten, left): /join

# How the server's lines are shown, by their form.
_SHOWN_AS = {wire.CHAT_LINE: PLAIN, wire.EVENT_LINE: EVENT, wire.DROPPED_NOTICE: EVENT}

# The reasons the wire gives (wire.IllegalMessage.reason) for refusing what
# a user typed, as a user would like to read them.
_TOO_LONG = f"a message holds at most {wire.MAX_TEXT_BYTES} bytes of UTF-8"
_WHY = {
    wire.NAME_LENGTH: f"a name has 1 to {wire.MAX_NAME_CHARS} characters",
    wire.PADDED_NAME: "a name cannot begin or end with a space",
    wire.RESERVED_NAME: "that name is reserved",
    wire.FORBIDDEN_CHARACTER_IN_NAME: (
        "a name cannot hold a comma, a control character or an invisible formatting one"
    ),
    wire.BLANK_TEXT: "a message cannot be blank",
    wire.FORBIDDEN_CHARACTER_IN_TEXT: (
        "a message cannot hold control characters (a tab aside) or line separators"
    ),
    wire.TEXT_TOO_LONG: _TOO_LONG,
    wire.DATAGRAM_TOO_LONG: _TOO_LONG,
    wire.NOT_UTF8: "the line is not valid UTF-8",
}

# The reasons a server with sessions gives for refusing a request
# (C{Seq refused Reason}), as a user would like to read them.
_REFUSALS = {
    wire.NAME_TAKEN: "it is taken",
    wire.ROOM_FULL: "the group is full",
    wire.GROUP_FULL: "the group has as many members from your network as it takes",
    wire.ADDRESS_IN_USE: "another member sends from your address",
    wire.POSITION_AHEAD: "the client asked for lines the server never had",
    wire.LEGACY_REFUSED: "the server takes members with sessions only",
}
# The refusals of a name for which another name may do.
_NAME_REFUSALS = (None, wire.NAME_TAKEN)


def explain(error, text=""):
    """
    Why the protocol refuses C{text}, from the L{wire.IllegalMessage} that
    L{wire.judged} raised: a sentence, and the size of a text too long.
    """
    why = _WHY.get(error.reason, error.reason)
    if error.reason in (wire.TEXT_TOO_LONG, wire.DATAGRAM_TOO_LONG):
        why += f" (this one has {len(text.encode())})"
    return why


def _on_terminal(environ):
    return os.isatty(0) and os.isatty(1) and environ.get("TERM") != "dumb"


class ChatSession(Session):
    """
    Join as C{name}; then lines are messages and C{/} lines commands; the
    group's lines are shown as they arrive.

    A join that fails on a terminal leaves the session running: after a
    refused name the next line typed is a name (commands still work), after
    no reply C{/join} tries again.  Once a 1.0 server has forgotten the
    member (it refused a poll or a message), C{/join} joins again; a server
    with sessions that lost the session is joined again by the client
    itself (L{lost}).

    @param name: a name that L{wire} accepts (the command line checked it).
    @param terminal: whether to use the terminal's line editor; by default,
        when stdin and stdout are a terminal (not C{TERM=dumb}).
    @param environ: the environment (C{NO_COLOR}, C{TERM}).
    @param complain: shows a problem on stderr (see L{Session}).
    """

    def __init__(self, name, terminal=None, environ=os.environ, complain=complain):
        Session.__init__(self, complain)
        self.name = name
        self._terminal = _on_terminal(environ) if terminal is None else terminal
        self._colour = not environ.get("NO_COLOR")
        self._state = _JOINING
        self._input_over = False
        self._backlog = deque()  # lines typed, not yet performed
        self._busy = False  # waiting for a reply before the next line
        # Each command, and whether it takes an argument.
        self._commands = {
            "nick": (self._nick, True),
            "poll": (self._poll, False),
            "join": (self._join_again, True),
            "raw": (self._raw_usage, True),
            "quit": (self._quit, False),
            "help": (self._help, False),
        }

    def start(self, client, reactor):
        if self._terminal:
            screen = TerminalScreen.open(self, reactor, colour=self._colour)
        else:
            screen = LineScreen(self, self._complain)
            stdio.StandardIO(screen, reactor=reactor)
        self.attach(client, screen)

    def attach(self, client, screen):
        """
        Talk through C{client}, show on C{screen}, and join.

        @param screen: has C{say(text, kind)}, C{set_prompt(text)} and
            C{close()}, like L{LineScreen}.
        """
        Session.attach(self, client, screen)
        self._join(self.name)

    # What the client and the input tell us.

    def show(self, reply):
        """Show the lines of a poll's reply as they came, events set apart."""
        for line in wire.reply_lines(reply):
            self.io.say(line, _SHOWN_AS[wire.line_kind(line)])

    def warn(self, message):
        self.io.say(message, PROBLEM)

    def forgotten(self):
        self._out()

    def lost(self, joined):
        """
        The server lost the session: the client registers again, and
        C{joined} fires as the L{Deferred} of a join does.
        """
        self.io.say(_LOST, PROBLEM)
        self._joining(self.name, joined)

    def line_received(self, line):
        if self._leaving:
            return
        if self._state == _NAMING:
            self._name_typed(line)
        else:
            self._backlog.append(line)
            self._work()

    def line_refused(self, size):
        self.io.say(f"not sent: the line is too long ({_TOO_LONG})", PROBLEM)

    def input_ended(self):
        self._input_over = True
        self._work()

    def _work(self):
        """
        Perform the lines typed, in order, unless a join is under way; then
        leave if the input is over.  Without a terminal each line waits for
        the reply to the one before, so that the output follows the input,
        as a script expects; on a terminal, local answers (/help, a line
        refused) need not wait for the server.
        """
        while self._state != _JOINING and self._backlog and not (self._busy or self._leaving):
            pending = self._perform(self._backlog.popleft())
            if pending is not None and not self._terminal:
                self._busy = True
                pending.addCallback(self._performed)
        if self._input_over and self._state != _JOINING and not (self._backlog or self._busy):
            self.leave()

    def _performed(self, _):
        self._busy = False
        self._work()

    # Joining, and joining again.

    def _join(self, name):
        """
        Join as C{name}, a valid name.

        @return: the L{Deferred} of the request.
        """
        return self._joining(name, self.client.join(name))

    def _joining(self, name, joined):
        self.name = name
        self._state = _JOINING
        self.io.set_prompt(f"{name}> ")
        return joined.addCallback(self._join_answered, name)

    def _join_answered(self, reply, name):
        if reply is None or isinstance(reply, Refused):
            self._join_failed(reply, name)
            return
        self._state = _JOINED
        self.io.say(_member_list(reply), EVENT)
        self._work()

    def _join_failed(self, reply, name):
        if reply is None:
            why = f"could not join as {name!r}: the server did not answer"
            state, next_step = _OUT, "/join tries again, /quit leaves"
        elif reply.reason in _NAME_REFUSALS:
            why = _refused(name, reply.reason)
            state, next_step = _NAMING, "Type another name, or /quit"
        else:
            why = f"could not join as {name!r}: {_refusal(reply.reason)}"
            state, next_step = _OUT, "/join tries again, /quit leaves"
        self.io.say(why, PROBLEM)
        if not self._terminal or self._input_over or self._leaving:
            self._backlog.clear()
            self.fail()
            return
        if self._backlog:
            lines = "line" if len(self._backlog) == 1 else "lines"
            self.io.say(f"{len(self._backlog)} {lines} typed meanwhile not sent", PROBLEM)
            self._backlog.clear()
        self._state = state
        if state == _NAMING:
            self.io.set_prompt("Name: ")
        self.io.say(next_step, EVENT)

    def _name_typed(self, line):
        # Asked for a name: a command still acts as one.
        line = line.strip()
        if line.startswith(b"/"):
            self._perform(line)
        elif line:
            self._join_valid(wire.readable(line))

    def _join_again(self, name):
        if self._state == _JOINED:
            self.io.say(f"you are in the group already, as {self.name!r}", PROBLEM)
            return None
        return self._join_valid(name or self.name)

    def _join_valid(self, name):
        try:
            wire.judged(wire.Join(name))
        except wire.IllegalMessage as e:
            self.io.say(f"not a valid name: {name!r}: {explain(e)}", PROBLEM)
            return None
        return self._join(name)

    def _out(self):
        """The server no longer counts this session a member: say so, once."""
        if self._state == _JOINED:
            self._state = _OUT
            self.io.say(_FORGOTTEN, PROBLEM)

    def _in_group(self):
        """Whether a member's request may go; if not, say why it does not."""
        if self._state != _JOINED:
            self.io.say("not sent: you are not in the group (/join joins it)", PROBLEM)
        return self._state == _JOINED

    # Lines typed.

    def _perform(self, line):
        """
        Act on one line typed.

        @return: the L{Deferred} of the request sent, if any.
        """
        if line.endswith(b"\r"):
            line = line[:-1]
        if line.startswith(b"/raw "):
            return self._raw(line[len(b"/raw ") :])
        try:
            text = wire.decode(line)
        except wire.IllegalMessage as e:
            self.io.say(f"not sent: {explain(e)}", PROBLEM)
            return
        if not text:
            return  # Enter on an empty line: nothing to say
        if text.startswith("//"):
            return self._say(text[1:])
        if text.startswith("/"):
            return self._command(text)
        return self._say(text)

    def _command(self, text):
        word, _, argument = text[1:].partition(" ")
        argument = argument.strip()
        if word not in self._commands:
            self.io.say(f"unknown command /{word}: /help lists the commands", PROBLEM)
            return None
        command, takes_argument = self._commands[word]
        if argument and not takes_argument:
            self.io.say(f"usage: /{word}, with nothing after it", PROBLEM)
            return None
        return command(argument)

    def _say(self, text):
        try:
            wire.judged(wire.Say(text))
        except wire.IllegalMessage as e:
            self.io.say(f"not sent: {explain(e, text)}", PROBLEM)
            return
        if not self._in_group():
            return
        return self.client.say(text).addCallback(self._say_answered, text)

    def _say_answered(self, reply, text):
        line = f"{self.name}: {text}"
        if reply == wire.EMPTY:
            self.io.say(line, PLAIN)
        elif reply is None:
            self.io.say(f"(not delivered: no reply from the server) {line}", PROBLEM)
        elif isinstance(reply, Refused):
            if reply.reason is None:
                self.io.say(f"(not delivered: the server refused it) {line}", PROBLEM)
                self._out()  # 1.0's refusal: most likely, no longer a member
            else:
                why = _refusal(reply.reason)
                self.io.say(f"(not delivered: the server refused it: {why}) {line}", PROBLEM)
        else:
            self._unexpected(reply, line)

    def _unexpected(self, reply, what):
        # Not the acknowledgement: most likely the late reply to an earlier
        # poll, which cannot be told apart from the reply to this request.
        self.show(reply)
        self.io.say(f"(not confirmed: the server's reply was no acknowledgement) {what}", PROBLEM)

    def _nick(self, name):
        if not name:
            self.io.say("usage: /nick NEW", PROBLEM)
            return
        if name == self.name:
            self.io.say(f"you are already called {name!r}", PROBLEM)
            return
        try:
            wire.judged(wire.Rename(name))
        except wire.IllegalMessage as e:
            self.io.say(f"not a valid name: {explain(e)}", PROBLEM)
            return
        if not self._in_group():
            return
        return self.client.rename(name).addCallback(self._nick_answered, name)

    def _nick_answered(self, reply, name):
        if reply == wire.EMPTY:
            self._renamed(name)
        elif reply is None:
            self.io.say(f"no reply from the server: your name may still be {self.name!r}", PROBLEM)
        elif isinstance(reply, Refused):
            self.io.say(_refused(name, reply.reason), PROBLEM)
        else:
            self._unexpected(reply, f"/nick {name}")

    def _renamed(self, name):
        self.name = name
        self.io.set_prompt(f"{name}> ")
        self.io.say(f"You are now known as {name}", EVENT)

    def _poll(self, argument):
        if not self._in_group():
            return
        return self.client.poll().addCallback(self._poll_answered)

    def _poll_answered(self, reply):
        if reply is None:
            self.io.say("no reply from the server to /poll", PROBLEM)
        elif isinstance(reply, Refused):
            if reply.reason is None:
                self._out()
            else:
                self.io.say(f"the server refused the poll: {_refusal(reply.reason)}", PROBLEM)
        elif not reply:
            self.io.say("No new messages", EVENT)
        else:
            self.show(reply)

    def _raw(self, datagram):
        if len(datagram) > wire.MAX_REQUEST_BYTES:
            self.io.say(
                f"not sent: {len(datagram)} bytes, and no request is longer than "
                f"{wire.MAX_REQUEST_BYTES}",
                PROBLEM,
            )
            return
        return self.client.raw(datagram).addCallback(self._raw_answered, datagram)

    def _raw_answered(self, reply, datagram):
        if reply is None:
            self.io.say("no reply from the server to /raw", PROBLEM)
            return
        for line in wire.reply_lines(reply):
            self.io.say(line, PLAIN)
        if not reply:
            self.io.say("(empty reply)", EVENT)
        self._follow(datagram, reply)

    def _follow(self, datagram, reply):
        # A name taken through /raw is this session's name from then on; a
        # leave through it leaves the group.
        if reply == wire.ILLEGAL:
            return
        try:
            request = wire.parse_request(datagram)
        except wire.IllegalMessage:
            return
        if isinstance(request, wire.Join):
            self._state = _JOINED
            self._renamed(request.name)
        elif isinstance(request, wire.Rename):
            self._renamed(request.name)
        elif isinstance(request, wire.Leave):
            self._state = _OUT

    def _raw_usage(self, argument):
        self.io.say("usage: /raw LINE, as in /raw 5", PROBLEM)

    def _quit(self, argument):
        self.leave()

    def _help(self, argument):
        for line in HELP.splitlines():
            self.io.say(line, PLAIN)


def _refused(name, reason=None):
    # 1.0's refusal (reason None) does not say why.
    why = "it is taken, or not allowed" if reason is None else _refusal(reason)
    return f"the server refused the name {name!r}: {why}"


def _refusal(reason):
    return _REFUSALS.get(reason, reason)


def _member_list(reply):
    if not reply:
        return "You are alone in the group"
    return "In the group: " + wire.readable(reply)


class LineScreen(StdioLines):
    """
    Plain lines in and out, for C{--name} without a terminal: the
    conversation on stdout, problems on stderr, and no control codes.
    """

    def __init__(self, session, complain=complain):
        StdioLines.__init__(self, session, max_line_bytes=wire.MAX_DATAGRAM_BYTES + len(b"/raw "))
        self._complain = complain

    def say(self, text, kind):
        """Write one line: a problem to stderr, anything else to stdout."""
        text = visible(text)
        if kind == PROBLEM:
            self._complain(text)
        else:
            self.write(text.encode("utf-8") + b"\n")

    def set_prompt(self, text):
        """No prompt: the input is not a terminal."""


class _Unseen:
    """
    The terminal as recvline is given it: the real one's key names, and
    drawing that goes nowhere.  recvline's drawing assumes an input line
    that never wraps; L{TerminalScreen} draws instead.
    """

    def __init__(self, terminal):
        self._terminal = terminal

    def __getattr__(self, name):
        value = getattr(self._terminal, name)
        return _draw_nothing if callable(value) else value


def _draw_nothing(*args, **kwargs):
    pass


class TerminalScreen(HistoricRecvLine):
    """
    The input line at the bottom of the terminal, the group's lines above.

    recvline keeps the line being edited and the history; this class draws
    them on one row after each key, whatever the key did, from the line and
    the cursor's place in it alone: scrolled sideways when the line is wider
    than the terminal (as irssi does), so that printing a line above is:
    erase the row, print, draw the row again.

    @param session: the L{ChatSession} the lines typed go to.
    @param colour: whether events and problems may be dimmed and bold.
    @param restore: puts the terminal back as it was.
    @param width: returns the terminal's width in columns, now.
    """

    def __init__(self, session, colour, restore, width=None):
        self._session = session
        self._colour = colour
        self._restore = restore
        self._width = width or _stdin_width
        self._screen = None  # the ServerProtocol
        self._prompt = ""
        self._scroll = 0  # index of the first character shown
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        self._closing = False
        self._closed = Occasion()

    @classmethod
    def open(cls, session, reactor, colour):
        """
        Put the terminal on stdin in raw mode, and a screen on it.

        @return: the L{TerminalScreen}.
        """
        saved = termios.tcgetattr(0)
        restored = []

        def restore():
            if not restored:
                restored.append(True)
                try:
                    termios.tcsetattr(0, termios.TCSADRAIN, saved)
                    fdesc.setBlocking(0)
                except (termios.error, OSError):
                    pass  # the terminal has gone: nothing to restore

        # TCSANOW: keep what was typed before the switch.
        tty.setraw(0, termios.TCSANOW)
        reactor.addSystemEventTrigger("after", "shutdown", restore)
        screen = cls(session, colour, restore)
        stdio.StandardIO(ServerProtocol(lambda: screen), reactor=reactor)
        return screen

    # What the session asks for.

    def say(self, text, kind):
        """Print a line above the input line."""
        if self._closed.happened:
            return
        self._write("\r\x1b[K" + self._styled(visible(text), kind) + "\n")
        self._draw_input()

    def set_prompt(self, text):
        self._prompt = text
        self._draw_input()

    def close(self):
        """
        Erase the input line, flush, and give the terminal back.

        @return: a L{Deferred} that fires once that is done.
        """
        if not self._closing:
            self._closing = True
            self._write("\r\x1b[K")  # the shell's prompt comes here
            self._screen.transport.loseConnection()
        return self._closed.wait()

    # The terminal protocol.

    def makeConnection(self, terminal):
        self._screen = terminal
        HistoricRecvLine.makeConnection(self, _Unseen(terminal))

    def connectionMade(self):
        HistoricRecvLine.connectionMade(self)
        self.keyHandlers.update(
            {
                b"\x01": self.handle_HOME,  # Ctrl-A
                b"\x03": self._session.interrupt,  # Ctrl-C
                b"\x04": self._end_or_delete,  # Ctrl-D
                b"\x05": self.handle_END,  # Ctrl-E
                b"\x08": self.handle_BACKSPACE,  # Ctrl-H
                b"\x0b": self._kill_to_end,  # Ctrl-K
                b"\x0c": self._clear_screen,  # Ctrl-L
                b"\x15": self._kill_to_start,  # Ctrl-U
                b"\x17": self._kill_word,  # Ctrl-W
            }
        )
        self._draw_input()

    def connectionLost(self, reason):
        self._restore()
        hung_up = not self._closing
        self._closing = True
        self._closed.happen()
        if hung_up:
            self._session.input_ended()

    def keystrokeReceived(self, keyID, modifier):
        if self._closing:
            return
        handler = self.keyHandlers.get(keyID)
        if handler is not None:
            handler()
        elif modifier is None and len(keyID) == 1 and keyID >= b" ":
            self._typed(keyID)
        # Other keys (function keys, Alt-letters) mean nothing here.
        self._draw_input()

    def lineReceived(self, line):
        self._session.line_received(line)

    # Editing: recvline's, one character (of UTF-8) per buffer item.

    def _typed(self, byte):
        for char in self._utf8.decode(byte):
            if unicodedata.category(char) != "Cc":
                self.characterReceived(char.encode("utf-8"), False)

    def _deliverBuffer(self, buf):
        # A line from the history: recvline would cut it into bytes.
        for char in buf.decode("utf-8", "replace"):
            self.characterReceived(char.encode("utf-8"), True)

    def handle_TAB(self):
        # Spaces to the next tab stop, where the cursor is (recvline's
        # version appends them at the end of the line).
        for _ in range(self.TABSTOP - self.lineBufferIndex % self.TABSTOP):
            self.characterReceived(b" ", True)

    def _end_or_delete(self):
        if self.lineBuffer:
            self.handle_DELETE()
        else:
            self._session.input_ended()

    def _kill_to_end(self):
        del self.lineBuffer[self.lineBufferIndex :]

    def _kill_to_start(self):
        del self.lineBuffer[: self.lineBufferIndex]
        self.lineBufferIndex = 0

    def _kill_word(self):
        # As a shell's Ctrl-W: the spaces before the cursor, then the word.
        start = self.lineBufferIndex
        while start and self.lineBuffer[start - 1].isspace():
            start -= 1
        while start and not self.lineBuffer[start - 1].isspace():
            start -= 1
        del self.lineBuffer[start : self.lineBufferIndex]
        self.lineBufferIndex = start

    def _clear_screen(self):
        self._write("\x1b[H\x1b[2J")

    # Drawing.

    def _draw_input(self):
        if self._closing:
            return
        prompt = visible(self._prompt)
        prompt_width = columns(prompt)
        # The last column stays free for the cursor after the last character.
        room = max(self._width() - prompt_width - 1, 1)
        pieces = [visible(item.decode("utf-8", "replace")) for item in self.lineBuffer]
        self._scroll, shown, cursor = input_window(
            pieces, self.lineBufferIndex, self._scroll, room
        )
        move = prompt_width + cursor
        self._write("\r" + prompt + shown + "\x1b[K\r" + (f"\x1b[{move}C" if move else ""))

    def _styled(self, text, kind):
        if kind == EVENT:
            text, rendition = "* " + text, "2"  # dim
        elif kind == PROBLEM:
            text, rendition = "! " + text, "1"  # bold
        else:
            return text
        if self._colour:
            return f"\x1b[{rendition}m{text}\x1b[0m"
        return text

    def _write(self, text):
        self._screen.write(text.encode("utf-8"))


def _stdin_width():
    try:
        return os.get_terminal_size(0).columns or 80
    except OSError:
        return 80


def input_window(pieces, index, scroll, room):
    """
    The part of an input line to show in C{room} columns: scrolled sideways
    from C{scroll} as little as keeps the cursor (before C{pieces[index]})
    in view, and no further right than fills the room, so that a line that
    shrank, or another one recalled, is shown from as far left as fits.

    @param pieces: the line's characters, each as it is shown.
    @return: C{(scroll, shown, cursor)}: the index of the first piece
        shown, the text shown, and the cursor's column within it.
    """
    widths = [columns(piece) for piece in pieces]
    scroll = min(scroll, index)
    cursor = sum(widths[scroll:index])
    while cursor > room:
        cursor -= widths[scroll]
        scroll += 1
    rest = cursor + sum(widths[index:])
    while scroll and rest + widths[scroll - 1] <= room:
        scroll -= 1
        rest += widths[scroll]
        cursor += widths[scroll]
    shown, used = [], 0
    for piece, width in zip(pieces[scroll:], widths[scroll:]):
        if used + width > room:
            break
        shown.append(piece)
        used += width
    return scroll, "".join(shown), cursor


def _char_columns(char):
    if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def columns(text):
    """How many terminal columns C{text} takes."""
    return sum(_char_columns(char) for char in text)

"""
The room on disk: a SQLite database that survives restarts and crashes.

The store saves the room as it is: its members (with their read positions)
and the lines of its shared log still held, numbered as in the log.  It
learns what to save from the L{udpchat.room.Changes} the room hands out,
and reads nothing else of the room.  The adapter commits what changed
before it sends the replies those changes cause, so a reply is a promise
kept: whatever a member was told (a line acknowledged, lines fetched)
survives a crash of the process.  A commit that fails saves nothing, and
the adapter returns the room to the last commit (L{Store.revert}): what
was not saved did not happen.

Opening the file for writing waits for L{Store.open}, in C{startService}:
twistd builds the service before it forks and drops privileges, and an
SQLite connection must not cross a fork.  L{check} inspects the file,
without changing it or creating anything beside it, while the command line
is parsed, so that a bad file is a usage error; L{lock} keeps a second
server off the file itself (its inode, whatever name it is reached by), and
L{Store.watch} notices when the file or its write-ahead log is deleted or
replaced under a running server.
"""

import errno
import fcntl
import math
import os
import reprlib
import shutil
import sqlite3
import stat
import tempfile
from collections import deque
from contextlib import contextmanager
from ipaddress import ip_address
from urllib.parse import quote

from udpchat import changelog, wire
from udpchat.room import MemberState, SessionState

APPLICATION_ID = 0x75647063  # "udpc"
SCHEMA_VERSION = 4
READABLE_VERSIONS = (1, 2, 3, 4)
"""Versions 1 (udpchat 1.0), 2 and 3 are migrated to version 4 when the file
is opened."""
SYNCHRONOUS = ("normal", "full")

WAL_BYTES = 32 * 1024 * 1024
"""Write-ahead log between two checkpoints: a commit is mostly an append."""

PAGE_BYTES = 1024
"""
The page size of a new file: a commit writes each page it changes (a few)
to the write-ahead log whole, and rows are small.
"""

LOG_BYTES = 4 * 1024 * 1024
"""
The most bytes of records the changes log holds before a commit folds it
into the tables (checkpoints fold it too): what loading replays stays
bounded, a few seconds of commits at full load.
"""

# A member that joined with 1 Name: its address never changes, and it has
# no session (what a commit costs grows with the columns it names).
_SAVE_MEMBER = """
INSERT INTO members (id, host, port, name, position, dropped, last_seen)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    name = excluded.name,
    position = excluded.position,
    dropped = excluded.dropped,
    last_seen = excluded.last_seen
"""

_SAVE_SESSION_MEMBER = """
INSERT INTO members VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    host = excluded.host,
    port = excluded.port,
    name = excluded.name,
    position = excluded.position,
    dropped = excluded.dropped,
    last_seen = excluded.last_seen,
    seq = excluded.seq,
    reply = excluded.reply,
    told = excluded.told,
    budget = excluded.budget,
    replied_host = excluded.replied_host,
    replied_port = excluded.replied_port
"""

_SCHEMA = """
CREATE TABLE room (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 0),
    next_id INTEGER NOT NULL, -- the number the next member will get
    -- When the last checkpoint was (at least once a minute, and on
    -- stopping): idle timers stop while the server does.
    saved_at REAL NOT NULL,
    -- The changes log (PATH-changes) that goes with the tables: one of an
    -- older generation was folded into them already.
    generation INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE members (
    id INTEGER PRIMARY KEY,   -- join order
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    name TEXT NOT NULL,
    -- The next line to read; behind the first line held, the first line's
    -- sequence number minus this is how many lines the member lost.
    position INTEGER NOT NULL,
    dropped INTEGER NOT NULL,
    last_seen REAL NOT NULL,
    -- A member that registered a session (README.rst, Sessions); NULL for
    -- one that joined with 1 Name.
    token TEXT,
    nonce TEXT,
    seq INTEGER,              -- its newest request
    reply BLOB,               -- the reply to it; NULL for a poll's
    told INTEGER,             -- dropped lines that the reply told of
    budget INTEGER,           -- bytes its address may still be sent, or NULL
    replied_host TEXT,        -- where the reply to seq went
    replied_port INTEGER
);
CREATE TABLE lines (
    sequence INTEGER PRIMARY KEY,
    author INTEGER,           -- a member id, or NULL
    line BLOB NOT NULL
);
INSERT INTO room VALUES (0, 0, 0, 0);
"""

# Version 1 kept beside each position how many of the member's own lines
# the log had forgotten after it; version 2 counts them in the position.
_MIGRATE_FROM_1 = """
UPDATE members SET position = position + own_forgotten;
ALTER TABLE members DROP COLUMN own_forgotten;
PRAGMA user_version = 2;
"""

# Version 3 adds the sessions, each in its member's row.
_MIGRATE_FROM_2 = """
ALTER TABLE members ADD COLUMN token TEXT;
ALTER TABLE members ADD COLUMN nonce TEXT;
ALTER TABLE members ADD COLUMN seq INTEGER;
ALTER TABLE members ADD COLUMN reply BLOB;
ALTER TABLE members ADD COLUMN told INTEGER;
ALTER TABLE members ADD COLUMN budget INTEGER;
ALTER TABLE members ADD COLUMN replied_host TEXT;
ALTER TABLE members ADD COLUMN replied_port INTEGER;
PRAGMA user_version = 3;
"""

# Version 4 adds the changes log beside the file.
_MIGRATE_FROM_3 = """
ALTER TABLE room ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
PRAGMA user_version = 4;
"""

_SESSION_COLUMNS = ("token", "nonce", "seq", "reply", "told", "budget", "replied_host", "replied_port")

_COLUMNS = {
    "room": ("singleton", "next_id", "saved_at", "generation"),
    "members": ("id", "host", "port", "name", "position", "dropped", "last_seen", *_SESSION_COLUMNS),
    "lines": ("sequence", "author", "line"),
}
"""The tables of a state file and their columns, in order (version 4)."""

_MEMBER_COLUMNS_2 = ("id", "host", "port", "name", "position", "dropped", "last_seen")
"""The columns of C{members} in version 2."""

_MEMBER_COLUMNS_1 = (
    "id", "host", "port", "name", "position", "own_forgotten", "dropped", "last_seen"
)
"""The columns of C{members} in version 1."""

# What udpchat writes in each column, checked on loading: a file holding
# anything else was not written by udpchat, and is refused.


def _count(value):
    return type(value) is int and value >= 0


def _time(value):
    # NaN fails the comparison too.
    return type(value) in (int, float) and 0 <= value < math.inf


def _host(value):
    if type(value) is not str:
        return False
    try:
        ip_address(value)
    except ValueError:
        return False
    return True


def _name(value):
    # What a join could have given: wire's rules for names, all of them.
    if type(value) is not str:
        return False
    try:
        return wire.parse_request(b"1 " + value.encode()) == wire.Join(value)
    except (wire.IllegalMessage, UnicodeError):
        return False


def _line(value):
    if type(value) is not bytes or not 0 < len(value) <= wire.MAX_LINE_BYTES:
        return False
    try:
        value.decode()
    except UnicodeError:
        return False
    return wire.LINE_SEPARATOR not in value


def _hex(value):
    return (
        type(value) is str
        and len(value) == wire.TOKEN_BYTES
        and all(char in "0123456789abcdef" for char in value)
    )


def _reply(value):
    # What a session request other than a poll is answered: its number,
    # with a refusal, or a registration.
    return type(value) is bytes and 0 < len(value) <= wire.MAX_SESSION_DATAGRAM_BYTES + 1200


def _or_none(check):
    return lambda value: value is None or check(value)


_VALID = {
    "singleton": lambda value: value == 0 and type(value) is int,
    "next_id": _count,
    "saved_at": _time,
    "id": _count,
    "host": _host,
    "port": lambda value: type(value) is int and 0 <= value <= 65535,
    "name": _name,
    "position": _count,
    "own_forgotten": _count,
    "dropped": _count,
    "last_seen": _time,
    "sequence": _count,
    "author": lambda value: value is None or _count(value),
    "line": _line,
    "token": _or_none(_hex),
    "nonce": _or_none(_hex),
    "seq": _or_none(_count),
    "reply": _or_none(_reply),
    "told": _or_none(_count),
    "budget": _or_none(_count),
    "replied_host": _or_none(_host),
    "replied_port": _or_none(lambda value: type(value) is int and 0 <= value <= 65535),
    "generation": _count,
}


class StateFileError(Exception):
    """
    A state file that cannot be used; the message is one line for people.
    """


class StateWriteError(Exception):
    """
    A commit that the file refused (a full disk, an I/O error...): trouble
    with the file, not a bug.  The message is SQLite's own.
    """


# (device, inode) -> the descriptor lock() locked, until a store takes it:
# a second flock of the file would be refused, even in this process.
_LOCKS = {}


def _identity(status):
    return (status.st_dev, status.st_ino)


def _identity_at(path):
    """The (device, inode) of the file at C{path}, or L{None} if none is."""
    try:
        return _identity(os.stat(path))
    except FileNotFoundError:
        return None


def check(path):
    """
    Check, without changing anything or creating any file beside it, that
    C{path} can hold a room: a udpchat state file of this version holding
    only values that udpchat writes, or no file (or an empty one) for a new
    room, in a directory where SQLite can write its journal files.

    @raise StateFileError: if it cannot.
    """
    if not path or path.endswith(os.sep):
        raise StateFileError(f"{path!r} is not a file name")
    if os.path.isdir(path):
        raise StateFileError(f"{path} is a directory")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise StateFileError(f"directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StateFileError(
            f"cannot write in {directory} (SQLite keeps {os.path.basename(path)}-wal "
            "beside the file)"
        )
    _check_journal(path)
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return
    if not os.access(path, os.R_OK | os.W_OK):
        raise StateFileError(f"cannot read and write {path}")
    log = _read_log_at(path)
    try:
        with _reading(path) as connection:
            _check_identity(connection, path, whole=True)
            _read(connection, path, log=log[:2])
    except sqlite3.Error as e:
        raise StateFileError(f"{path} is not a udpchat state file ({e})") from None


def _check_journal(path):
    """
    Refuse a write-ahead log or a changes log beside a missing or empty
    file: it holds commits of a file that is gone, which a new room would
    throw away.
    """
    if os.path.exists(path) and os.path.getsize(path):
        return
    for suffix, least in (("-wal", 1), ("-changes", changelog.HEADER_BYTES + 1)):
        try:
            size = os.path.getsize(path + suffix)
        except OSError:
            continue
        if size >= least:
            missing = "empty" if os.path.exists(path) else "missing"
            raise StateFileError(
                f"{path} is {missing} but {path}{suffix} holds {size} bytes of its "
                f"commits: put {path} back, or remove {path}{suffix} to start a new room"
            )


def _read_log(fd, path):
    """
    C{(generation, payloads, end)} of the changes log open at C{fd}
    (L{changelog.read}).

    @raise StateFileError: if it cannot be read, or is not a log.
    """
    try:
        return changelog.read(fd)
    except OSError as e:
        raise StateFileError(f"cannot read {path}-changes: {e.strerror}") from None
    except changelog.BadLog as e:
        raise StateFileError(f"{path}-changes cannot be used: {e}") from None


def _read_log_at(path):
    # The changes log beside path, read only, as _read_log() reads it.
    try:
        fd = os.open(path + "-changes", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None, [], 0
    except OSError as e:
        raise StateFileError(f"cannot read {path}-changes: {e.strerror}") from None
    try:
        return _read_log(fd, path)
    finally:
        os.close(fd)


@contextmanager
def _reading(path):
    """
    A read-only connection to the room at C{path} that changes no file and
    creates none.  SQLite reading a file in WAL mode creates its C{-shm}
    (and C{-wal}) files beside it, even read-only: a file with a write-ahead
    log is therefore read from a private copy of both, and one without as
    immutable (no journal, no lock: the caller holds L{lock}).
    """
    wal = path + "-wal"
    if not os.path.exists(wal) or os.path.getsize(wal) == 0:
        connection = sqlite3.connect(f"file:{quote(path)}?immutable=1", uri=True)
        try:
            yield connection
        finally:
            connection.close()
        return
    with tempfile.TemporaryDirectory(prefix="udpchat-check-") as directory:
        copy = os.path.join(directory, "room.db")
        try:
            shutil.copyfile(path, copy)
            shutil.copyfile(wal, copy + "-wal")
        except OSError as e:
            raise StateFileError(
                f"cannot check {path}: copying it and its -wal to {directory} "
                f"failed ({e.strerror})"
            ) from None
        connection = sqlite3.connect(f"file:{quote(copy)}?mode=ro", uri=True)
        try:
            yield connection
        finally:
            connection.close()


def _check_identity(connection, path, whole=False):
    (application_id,) = connection.execute("PRAGMA application_id").fetchone()
    (version,) = connection.execute("PRAGMA user_version").fetchone()
    if application_id != APPLICATION_ID:
        raise StateFileError(f"{path} is not a udpchat state file")
    if version not in READABLE_VERSIONS:
        raise StateFileError(
            f"{path} has schema version {version}; this udpchat reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}"
        )
    if whole:
        # A file damaged past its header: found now, not after the fork.
        (verdict,) = connection.execute("PRAGMA quick_check").fetchone()
        if verdict != "ok":
            raise StateFileError(f"{path} is damaged ({verdict})")


def _read(connection, path, whole=True, log=(None, ())):
    """
    The room that C{connection}'s file holds, each value checked: C{(next_id,
    saved_at, members, lines, first, generation, replayed)}, with a
    L{MemberState} per member in join order (its idle timer as saved, its
    position as version 2 counts it) and C{(sequence, author, line)} per
    line held, oldest first, from sequence number C{first} on: the tables
    with the records of the changes log applied over them, C{replayed} of
    them, if the log is of the tables' C{generation}.

    @param whole: whether to check the schema too (for a file udpchat did
        not just write itself).
    @param log: C{(generation, payloads)} from L{changelog.read}, the
        generation L{None} for no log.
    @raise StateFileError: for a table, a column or a value that udpchat
        never writes, rows that contradict each other, or a log that
        belongs to another copy of the file.
    """

    def refuse(what):
        return StateFileError(f"{path} holds what udpchat never writes: {what}")

    columns = dict(_COLUMNS)
    (version,) = connection.execute("PRAGMA user_version").fetchone()
    if version == 1:
        columns["members"] = _MEMBER_COLUMNS_1
    elif version == 2:
        columns["members"] = _MEMBER_COLUMNS_2
    if version < 4:
        columns["room"] = _COLUMNS["room"][:-1]
    if whole:
        _check_schema(connection, path, columns, refuse)

    def checked(table, names, row, where=""):
        for column, value in zip(names, row):
            if not _VALID[column](value):
                shown = reprlib.repr(value)
                raise refuse(f"{where}{table} {names[0]} {row[0]!r}: {column} = {shown}")
        return row

    def rows(table):
        names = columns[table]
        for row in connection.execute(f"SELECT {', '.join(names)} FROM {table} ORDER BY 1"):
            yield checked(table, names, row)

    room = list(rows("room"))
    if len(room) != 1:
        raise refuse(f"{len(room)} rows in the table room")
    (next_id, saved_at, *generation) = room[0][1:]
    generation = generation[0] if generation else 0
    log_generation, payloads = log
    if not payloads or log_generation < generation:
        payloads = ()  # no records, or ones folded into the tables already
    elif log_generation > generation:
        raise StateFileError(
            f"{path}-changes is of generation {log_generation}, {path} of {generation}: "
            f"they are not the same copy of the room"
        )
    by_id = {row[0]: dict(zip(columns["members"], row)) for row in rows("members")}
    held = {sequence: (author, line) for sequence, author, line in rows("lines")}
    first = None
    for number, data in enumerate(payloads, 1):
        where = f"{path}-changes record {number}: "
        try:
            first, next_id, changed, removed, lines = changelog.decode(data)
        except changelog.BadBatch as e:
            raise refuse(f"{where}changes that cannot be read ({e})") from None
        for column, value in (("first", first), ("next_id", next_id)):
            if not _count(value):
                raise refuse(f"{where}{column} = {reprlib.repr(value)}")
        for id in removed:
            by_id.pop(checked("members", ("id",), (id,), where)[0], None)
        for row in changed:
            by_id[row[0]] = dict(zip(_COLUMNS["members"], checked("members", _COLUMNS["members"], row, where)))
        for row in lines:
            sequence, author, line = checked("lines", _COLUMNS["lines"], row, where)
            held[sequence] = (author, line)
    members = []
    sources, names, tokens = set(), set(), set()
    for id in sorted(by_id):
        member = by_id[id]
        source, name = (member["host"], member["port"]), member["name"]
        if id >= next_id:
            raise refuse(f"members id {id}, not below room next_id = {next_id}")
        if source in sources:
            raise refuse(f"two members at {source[0]} port {source[1]}")
        if name in names:
            raise refuse(f"two members named {name!r}")
        sources.add(source)
        names.add(name)
        position = member["position"] + member.get("own_forgotten", 0)
        members.append(
            MemberState(
                id,
                source,
                name,
                position,
                member["dropped"],
                member["last_seen"],
                _session(member, refuse, tokens),
            )
        )
    if first is None:
        lines = [(sequence, *held[sequence]) for sequence in sorted(held)]
        first = lines[0][0] if lines else max((member.position for member in members), default=0)
    else:
        # Lines before the log's first are gone; the tables may still
        # hold them until the next fold.
        lines = [(sequence, *held[sequence]) for sequence in sorted(held) if sequence >= first]
    for expected_sequence, (sequence, author, _) in enumerate(lines, first):
        if sequence != expected_sequence:
            raise refuse(f"no lines sequence {expected_sequence}, yet a line {sequence}")
        if author is not None and author >= next_id:
            raise refuse(
                f"lines sequence {sequence}: author = {author}, "
                f"not below room next_id = {next_id}"
            )
    end = first + len(lines)
    for member in members:
        if member.position > end:
            raise refuse(
                f"members id {member.id}: position = {member.position}, "
                f"beyond the lines held ({first} to {end - 1})"
            )
    return next_id, saved_at, members, lines, first, generation, len(payloads)


def _session(member, refuse, tokens):
    # A member's session, if it has one: all of its columns, or none but
    # the reply and the budget.
    values = [member.get(column) for column in _SESSION_COLUMNS]
    if member.get("token") is None:
        if any(value is not None for value in values):
            raise refuse(f"members id {member['id']}: a session without a token")
        return None
    token, nonce, seq, reply, told, budget, host, port = values
    if None in (nonce, seq, told, host, port):
        raise refuse(f"members id {member['id']}: a session with a column missing")
    for value in (token, nonce):
        if value in tokens:
            raise refuse(f"members id {member['id']}: a token or a nonce that another session has")
        tokens.add(value)
    return SessionState(token.encode(), nonce.encode(), seq, reply, told, budget, (host, port))


def _check_schema(connection, path, columns, refuse):
    """
    Refuse a file whose tables (and triggers, views, indexes) are not those
    of C{columns}, with their columns in that order.
    """
    found = {
        (kind, name)
        for kind, name in connection.execute("SELECT type, name FROM sqlite_master")
        if not name.startswith("sqlite_")
    }
    expected = {("table", table) for table in columns}
    for kind, name in sorted(found - expected):
        raise refuse(f"the {kind} {name}")
    for kind, name in sorted(expected - found):
        raise StateFileError(f"{path} is not a udpchat state file (no {kind} {name})")
    for table, names in columns.items():
        have = tuple(row[1] for row in connection.execute(f"PRAGMA table_info({table})"))
        if have != names:
            raise refuse(f"the columns {table}({', '.join(have)})")


def lock(path):
    """
    Lock the file at C{path} for this process, so that no other udpchat
    server uses it by whatever name it reaches it (a symbolic or a hard
    link): an C{flock} on the file itself, which SQLite's own (POSIX)
    locks leave alone.  The descriptor stays open, across twistd's fork
    too, until the L{Store} opening the file takes it over; a file that is
    not there yet is locked by the store that creates it.

    @return: the locked descriptor, or L{None} if there is no file (or no
        regular file: L{check} says what it is) to lock.
    @raise StateFileError: if another process holds the lock.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StateFileError(f"cannot open {path}: {e.strerror}") from None
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode):
        os.close(fd)
        return None
    _flock(fd, path)
    _LOCKS[_identity(status)] = fd
    return fd


def _flock(fd, path):
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno == errno.EWOULDBLOCK:
            raise StateFileError(f"another udpchat server is using {path}") from None
        raise StateFileError(f"cannot lock {path}: {e.strerror}") from None


def _take_lock(path):
    """
    The locked descriptor of the file at C{path}: the one L{lock} took, or
    a new one, creating a missing file readable by its owner only (it
    holds the messages; SQLite gives its -wal file the same permissions).
    """
    fd = _LOCKS.pop(_identity_at(path), None)
    if fd is None:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise StateFileError(f"cannot open {path}: {e.strerror}") from None
        _flock(fd, path)
    if _identity(os.fstat(fd)) != _identity_at(path):
        os.close(fd)
        raise StateFileError(f"{path} was replaced while it was being opened")
    return fd


def _session_member_row(state):
    # A MemberState with a session as the columns of members.
    session = state.session
    return (
        state.id, *state.source[:2], state.name, state.position, state.dropped, state.last_seen,
        session.token.decode(), session.nonce.decode(), session.seq, session.reply, session.told,
        session.budget, *session.replied_to[:2],
    )


def _roll_back(connection):
    # After some errors (a full disk among them) SQLite has rolled back
    # already; a failing ROLLBACK must not hide the error that matters.
    if connection.in_transaction:
        try:
            connection.execute("ROLLBACK")
        except sqlite3.Error:
            pass


class _Unfolded:
    """
    What the changes log holds, merged: the changes committed since the
    tables were last written, which the next fold writes to them.  Bounded
    by the room: a member's latest state, the ids removed, the lines still
    held.

    @ivar rewrite: whether the tables lack more than the changes show (a
        log left by an earlier run): then C{members} and C{lines} hold the
        whole room, and the fold writes the tables anew.
    @ivar batches: how many commits it merges.
    """

    def __init__(self, members=(), lines=(), first=0, next_id=0, batches=0):
        self.rewrite = batches > 0
        self.members = {state.id: state for state in members} if self.rewrite else {}
        self.lines = deque(lines) if self.rewrite else deque()
        self.removed = set()
        self.first = first
        self.next_id = next_id
        self.batches = batches

    def add(self, changes):
        members = self.members
        for id in changes.removed:
            members.pop(id, None)
            self.removed.add(id)
        for state in changes.members:
            members[state.id] = state
        lines = self.lines
        lines.extend(changes.lines)
        first = self.first = changes.first
        while lines and lines[0][0] < first:
            lines.popleft()
        self.next_id = changes.next_id
        self.batches += 1


def _fold(connection, unfolded):
    """
    Write what C{unfolded} merged into the tables, within the caller's
    transaction.
    """
    if unfolded.rewrite:
        connection.execute("DELETE FROM members")
        connection.execute("DELETE FROM lines")
    elif unfolded.removed:
        connection.executemany(
            "DELETE FROM members WHERE id = ?", [(id,) for id in unfolded.removed]
        )
    states = unfolded.members.values()
    plain = [
        (m.id, *m.source[:2], m.name, m.position, m.dropped, m.last_seen)
        for m in states
        if m.session is None
    ]
    if plain:
        connection.executemany(_SAVE_MEMBER, plain)
    if len(plain) < len(states):
        connection.executemany(
            _SAVE_SESSION_MEMBER, [_session_member_row(m) for m in states if m.session is not None]
        )
    if unfolded.lines:
        connection.executemany("INSERT INTO lines VALUES (?, ?, ?)", unfolded.lines)
    connection.execute("DELETE FROM lines WHERE sequence < ?", (unfolded.first,))
    # Member numbers are never given out twice, crash or not.
    connection.execute("UPDATE room SET next_id = ?", (unfolded.next_id,))


class Store:
    """
    A room's state file.

    @param path: the file; L{check} approved it.
    @param synchronous: C{normal} (a commit survives a crash of the process)
        or C{full} (it survives a power loss too, at a cost).
    @param shared: whether other connections may read and write the file
        while it is open (tests inject faults that way); otherwise SQLite
        holds it exclusively, which makes each commit cheaper.
    @param log_bytes: how many bytes of records the changes log
        (C{PATH-changes}, L{udpchat.changelog}) may hold before a commit
        folds them into the tables; 0 folds at every commit.

    A commit appends one record to the changes log; a checkpoint, or a log
    grown to C{log_bytes}, folds the log into the tables in one SQLite
    transaction (synced to disk, so that the log can then be emptied).

    @ivar lost: L{None}, or why the store commits no more: its file, the
        file's write-ahead log or its changes log was deleted or replaced
        (L{watch}), or the file could not be read back after a failed
        commit.
    """

    def __init__(self, path, synchronous="normal", shared=False, log_bytes=LOG_BYTES):
        self.path = path
        self.synchronous = synchronous
        self.shared = shared
        self.log_bytes = log_bytes
        self.lost = None
        self._connection = None
        self._lock = None
        self._log = None  # the changes log's descriptor
        self._log_end = 0  # its length
        self._generation = 0  # the tables', and the log's
        # (device, inode) of the file, its -wal and its -changes, opened
        self._files = None
        self._saved_first = 0  # the file holds no line before this one
        self._saved_next_id = 0
        # What the log holds; None after a failed fold, until revert().
        self._unfolded = _Unfolded()

    def open(self):
        """
        Lock the file (creating it if there is none) and open it for
        writing, creating the schema in a new file.

        @raise StateFileError: if another server holds it, or it changed
            since L{check} into a file that cannot be used.
        """
        path = self.path
        _check_journal(path)
        self._lock = _take_lock(path)
        try:
            connection = sqlite3.connect(path, isolation_level=None)
        except BaseException:
            self._release()
            raise
        try:
            if not self.shared:
                # Before the first access: the first read locks the file and
                # the first write locks it for writing, each for good, so a
                # commit takes no lock and the write-ahead log's index lives
                # in memory (no -shm file).  L{lock} kept others off anyway.
                connection.execute("PRAGMA locking_mode = EXCLUSIVE")
            # Before the first access, so that a new file gets it.
            connection.execute(f"PRAGMA page_size = {PAGE_BYTES}")
            (application_id,) = connection.execute("PRAGMA application_id").fetchone()
            if application_id == 0 and not self._tables(connection):
                # A new file: identify it before anything else is written.
                connection.executescript(
                    f"PRAGMA application_id = {APPLICATION_ID};"
                    f"PRAGMA user_version = {SCHEMA_VERSION};"
                    f"BEGIN; {_SCHEMA} COMMIT;"
                )
            _check_identity(connection, path)
            (version,) = connection.execute("PRAGMA user_version").fetchone()
            migrations = (_MIGRATE_FROM_1, _MIGRATE_FROM_2, _MIGRATE_FROM_3)[version - 1 :]
            if migrations:
                connection.executescript(f"BEGIN; {' '.join(migrations)} COMMIT;")
            connection.execute("PRAGMA journal_mode = WAL")
            (page_bytes,) = connection.execute("PRAGMA page_size").fetchone()
            connection.execute(f"PRAGMA wal_autocheckpoint = {WAL_BYTES // page_bytes}")
            connection.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")
            # SQLite creates the -wal at the first read in WAL mode: now.
            connection.execute("PRAGMA schema_version").fetchone()
            try:
                self._log = os.open(
                    path + "-changes", os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600
                )
            except OSError as e:
                raise StateFileError(f"cannot open {path}-changes: {e.strerror}") from None
            self._files = (
                _identity(os.fstat(self._lock)),
                _identity(os.stat(path + "-wal")),
                _identity(os.fstat(self._log)),
            )
        except BaseException:
            connection.close()
            self._release()
            raise
        self._connection = connection
        self.lost = None

    def _tables(self, connection):
        return connection.execute("SELECT name FROM sqlite_master").fetchall()

    def load(self, room, now):
        """
        Fill the new C{room} from the file, as it stood at the last commit,
        at time C{now}: idle timers resume where they stood, since members
        could not reach a stopped server.

        @raise StateFileError: for a value in the file that udpchat never
            writes.
        """
        log_generation, payloads, end = _read_log(self._log, self.path)
        next_id, saved_at, members, lines, first, generation, replayed = _read(
            self._connection, self.path, log=(log_generation, payloads)
        )
        downtime = max(0.0, now - saved_at) if saved_at else 0.0
        if downtime:
            members = [state._replace(last_seen=state.last_seen + downtime) for state in members]
        self._restore(room, members, lines, first, next_id, replayed)
        self._generation = generation
        # The log as it should be: of the tables' generation, with no record
        # cut short by a crash after the whole ones.
        try:
            if replayed:
                os.ftruncate(self._log, end)
                self._log_end = end
            else:
                self._reset_log(generation)
        except OSError as e:
            raise StateFileError(f"cannot write {self.path}-changes: {e.strerror}") from None

    def revert(self, room):
        """
        Return C{room} to what the file held at the last commit, once a
        commit has failed: nothing the batch did stays in effect (a poll
        takes nothing, a join makes no member).  Idle timers stay as the
        room has them: that a member was heard from is no promise.

        @raise StateFileError: if the file cannot be read back; the store is
            then L{lost}, as it is after any other exception.
        """
        connection = self._connection
        try:
            if connection.in_transaction:
                raise sqlite3.OperationalError("the failed commit could not be rolled back")
            log = _read_log(self._log, self.path)
            next_id, _, members, lines, first, generation, replayed = _read(
                connection, self.path, whole=False, log=log[:2]
            )
        except (sqlite3.Error, StateFileError) as e:
            self.lost = f"cannot read {self.path} back after a failed commit ({e})"
            raise StateFileError(self.lost) from None
        try:
            heard = {state.id: state.last_seen for state in room.take_changes(everyone=True).members}
            members = [
                state._replace(last_seen=heard.get(state.id, state.last_seen))
                for state in members
            ]
            self._restore(room, members, lines, first, next_id, replayed)
        except Exception as e:
            # A bug; the room is neither as it was nor as it is saved.
            self.lost = f"returning the room to {self.path}'s last commit failed ({e!r})"
            raise

    def _restore(self, room, members, lines, first, next_id, replayed):
        room.restore(members, [(author, line) for _, author, line in lines], first, next_id)
        self._saved_first = first
        self._saved_next_id = next_id
        # A log left by an earlier run: the first fold writes the whole
        # room, since what the tables lack is known only as the whole.
        self._unfolded = _Unfolded(members, lines, first, next_id, replayed)

    def commit(self, changes, now, checkpoint=False):
        """
        Save C{changes} (a L{udpchat.room.Changes}) at time C{now}: one
        record appended to the changes log, or, with C{checkpoint} or a full
        log, everything the log holds written into the tables, with the time
        (which is otherwise saved only now and then: an older time errs on
        the side of members: the downtime seems longer, so they stay
        longer).  A commit that fails saves nothing: L{revert} the room,
        whose changes are lost.

        @return: whether anything was written (something had changed).
        @raise StateWriteError: if the file refused the commit.
        @raise StateFileError: if the store is L{lost}.
        """
        if self.lost is not None:
            raise StateFileError(self.lost)
        if not (
            changes
            or checkpoint
            or changes.first != self._saved_first
            or changes.next_id != self._saved_next_id
        ):
            return False  # nothing changed: nothing to write
        if checkpoint or self._log_end - changelog.HEADER_BYTES >= self.log_bytes:
            unfolded, self._unfolded = self._unfolded, None
            unfolded.add(changes)
            self._fold(unfolded, now if checkpoint else None)
            self._unfolded = _Unfolded()
        else:
            self._append(changelog.record(changelog.encode(changes)))
            self._unfolded.add(changes)
        self._saved_first = changes.first
        self._saved_next_id = changes.next_id
        return True

    def _append(self, record):
        log = self._log
        try:
            if os.write(log, record) != len(record):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            if self.synchronous == "full":
                os.fdatasync(log)
        except OSError as e:
            try:
                os.ftruncate(log, self._log_end)
            except OSError as cut:
                self.lost = f"cannot cut {self.path}-changes back after a failed write ({cut.strerror})"
                raise StateFileError(self.lost) from None
            # A full disk, an I/O error: not a bug.
            raise StateWriteError(e.strerror) from e
        self._log_end += len(record)

    def _fold(self, unfolded, now):
        # Write the tables, synced, in the next generation; then empty the
        # log, which is of the last one: should the server stop in between,
        # the log's generation shows that the tables hold it already.
        connection = self._connection
        generation = self._generation + 1
        try:
            if self.synchronous != "full":
                connection.execute("PRAGMA synchronous = FULL")
            connection.execute("BEGIN")
            _fold(connection, unfolded)
            connection.execute("UPDATE room SET generation = ?", (generation,))
            if now is not None:
                connection.execute("UPDATE room SET saved_at = ?", (now,))
            connection.execute("COMMIT")
        except BaseException as e:
            _roll_back(connection)
            # A full disk, an I/O error, a damaged file: not a bug.
            if isinstance(e, sqlite3.OperationalError) or type(e) is sqlite3.DatabaseError:
                raise StateWriteError(str(e)) from e
            raise
        finally:
            if self.synchronous != "full":
                try:
                    connection.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")
                except sqlite3.Error:
                    pass  # the next fold sets FULL again; commits do not read it
        self._generation = generation
        try:
            self._reset_log(generation)
        except OSError as e:
            self.lost = f"cannot empty {self.path}-changes ({e.strerror})"
            raise StateFileError(self.lost) from None

    def _reset_log(self, generation):
        log = self._log
        os.ftruncate(log, 0)
        self._log_end = 0
        os.write(log, changelog.header(generation))
        self._log_end = changelog.HEADER_BYTES
        if self.synchronous == "full":
            os.fdatasync(log)

    def watch(self):
        """
        Whether the file, its write-ahead log and its changes log are still
        the ones opened, at their names: L{None} if so, else what became of
        them (the store is then L{lost}).  Three C{stat} calls: for a timer,
        not every commit.
        """
        if self.lost is None and self._files is not None:
            names = (self.path, self.path + "-wal", self.path + "-changes")
            for name, opened in zip(names, self._files):
                try:
                    identity = _identity(os.stat(name))
                except FileNotFoundError:
                    self.lost = f"{name} was deleted"
                except OSError as e:
                    self.lost = f"{name} cannot be found ({e.strerror})"
                else:
                    if identity != opened:
                        self.lost = f"{name} was replaced by another file"
                if self.lost is not None:
                    break
        return self.lost

    def close(self):
        """
        Close the file, and release its lock; L{open} may open it again.

        @return: whether the file at L{path} holds every commit: not if it
            was deleted or replaced (a -wal or -changes that was is written
            back into the file first, if that is still there).
        """
        connection, self._connection = self._connection, None
        kept = True
        if connection is not None:
            if self.lost is not None:
                kept = self._write_back(connection)
            connection.close()
        if self._log is not None:
            if self.lost is None and self._log_end <= changelog.HEADER_BYTES:
                # Folded: the file holds the room alone (as after SQLite's
                # own checkpoint, which removes the -wal on closing).
                try:
                    os.unlink(self.path + "-changes")
                except OSError:
                    pass  # an empty log is harmless
            os.close(self._log)
            self._log = None
        self._release()
        return kept

    def _write_back(self, connection):
        # SQLite still holds the write-ahead log it opened, deleted or not,
        # and the store what the changes log holds: copy both into the file,
        # if that is still at its name.
        try:
            if _identity_at(self.path) != self._files[0]:
                return False
            unfolded = self._unfolded
            if unfolded is None:
                # A fold failed: only the log knows what it holds.
                if _identity_at(self.path + "-changes") != self._files[2]:
                    return False
            elif unfolded.batches:
                connection.execute("BEGIN")
                _fold(connection, unfolded)
                connection.execute("UPDATE room SET generation = ?", (self._generation + 1,))
                connection.execute("COMMIT")
            (busy, _, _) = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except (OSError, sqlite3.Error):
            _roll_back(connection)
            return False
        return busy == 0

    def _release(self):
        if self._lock is not None:
            # Only once SQLite has closed the file: closing any descriptor
            # of it drops every POSIX lock this process holds on it.
            os.close(self._lock)
            self._lock = None

"""
The room on disk: a SQLite database that survives restarts and crashes.

The store saves the room as it is: its members (with their read positions)
and the lines of its shared log still held, numbered as in the log.  It
learns what to save from the L{udpchat.room.Changes} the room hands out,
and reads nothing else of the room.  The adapter commits what changed
before it sends the replies those changes cause, so a reply is a promise
kept: whatever a member was told (a line acknowledged, lines fetched)
survives a crash of the process.

Opening the file for writing waits for L{Store.open}, in C{startService}:
twistd builds the service before it forks and drops privileges, and an
SQLite connection must not cross a fork.  L{check} inspects the file
read-only while the command line is parsed, so that a bad file is a usage
error, and L{lock} keeps a second server off the same file.
"""

import fcntl
import os
import sqlite3
from urllib.parse import quote

from udpchat.room import MemberState

APPLICATION_ID = 0x75647063  # "udpc"
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
"""Version 1 (udpchat 1.0) is migrated to version 2 when the file is opened."""
SYNCHRONOUS = ("normal", "full")

WAL_BYTES = 32 * 1024 * 1024
"""Write-ahead log between two checkpoints: a commit is mostly an append."""

PAGE_BYTES = 1024
"""
The page size of a new file: a commit writes each page it changes (a few)
to the write-ahead log whole, and rows are small.
"""

_SAVE_MEMBER = """
INSERT INTO members VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    name = excluded.name,
    position = excluded.position,
    dropped = excluded.dropped,
    last_seen = excluded.last_seen
"""

_SCHEMA = """
CREATE TABLE room (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 0),
    next_id INTEGER NOT NULL, -- the number the next member will get
    -- When the last checkpoint was (at least once a minute, and on
    -- stopping): idle timers stop while the server does.
    saved_at REAL NOT NULL
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
    last_seen REAL NOT NULL
);
CREATE TABLE lines (
    sequence INTEGER PRIMARY KEY,
    author INTEGER,           -- a member id, or NULL
    line BLOB NOT NULL
);
INSERT INTO room VALUES (0, 0, 0);
"""

# Version 1 kept beside each position how many of the member's own lines
# the log had forgotten after it; version 2 counts them in the position.
_MIGRATE_FROM_1 = """
UPDATE members SET position = position + own_forgotten;
ALTER TABLE members DROP COLUMN own_forgotten;
PRAGMA user_version = 2;
"""


class StateFileError(Exception):
    """
    A state file that cannot be used; the message is one line for people.
    """


def check(path):
    """
    Check, without writing anything, that C{path} can hold a room: a udpchat
    state file of this version, or no file (or an empty one) for a new room,
    in a directory where SQLite can write its journal files.

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
            "and -shm beside the file)"
        )
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return
    if not os.access(path, os.R_OK | os.W_OK):
        raise StateFileError(f"cannot read and write {path}")
    try:
        connection = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True)
        try:
            _check_identity(connection, path, whole=True)
        finally:
            connection.close()
    except sqlite3.Error as e:
        raise StateFileError(f"{path} is not a udpchat state file ({e})") from None


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
        for table in ("room", "members", "lines"):
            connection.execute(f"SELECT * FROM {table} LIMIT 1").fetchall()


def lock(path):
    """
    Lock C{path} for this process, so that no other udpchat server uses it.

    The lock is an C{flock} on a side file, C{PATH.lock}; the descriptor
    stays open, across twistd's fork too, for as long as the process lives.

    @return: the locked file descriptor.
    @raise StateFileError: if another process holds the lock.
    """
    lock_path = path + ".lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise StateFileError(f"cannot open {lock_path}: {e.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise StateFileError(f"another udpchat server is using {path}") from None
    return fd


class Store:
    """
    A room's state file.

    @param path: the file; L{check} approved it.
    @param synchronous: C{normal} (a commit survives a crash of the process)
        or C{full} (it survives a power loss too, at a cost).
    """

    def __init__(self, path, synchronous="normal"):
        self.path = path
        self.synchronous = synchronous
        self._connection = None
        self._saved_first = 0  # the file holds no line before this one
        self._saved_next_id = 0
        self._unsaved = None  # Changes a failed commit could not save

    def open(self):
        """
        Open the file for writing, creating the schema in a new file.

        @raise StateFileError: if the file changed since L{check}.
        """
        # A new file is private: it holds the group's messages.  SQLite
        # gives its -wal and -shm files the same permissions.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        connection = sqlite3.connect(self.path, isolation_level=None)
        try:
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
            _check_identity(connection, self.path)
            (version,) = connection.execute("PRAGMA user_version").fetchone()
            if version == 1:
                connection.executescript(f"BEGIN; {_MIGRATE_FROM_1} COMMIT;")
            connection.execute("PRAGMA journal_mode = WAL")
            (page_bytes,) = connection.execute("PRAGMA page_size").fetchone()
            connection.execute(f"PRAGMA wal_autocheckpoint = {WAL_BYTES // page_bytes}")
            connection.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")
        except BaseException:
            connection.close()
            raise
        self._connection = connection

    def _tables(self, connection):
        return connection.execute("SELECT name FROM sqlite_master").fetchall()

    def load(self, room, now):
        """
        Fill the new C{room} from the file, as it stood at the last commit,
        at time C{now}: idle timers resume where they stood, since members
        could not reach a stopped server.
        """
        connection = self._connection
        saved_next_id, saved_at = connection.execute(
            "SELECT next_id, saved_at FROM room"
        ).fetchone()
        downtime = max(0.0, now - saved_at) if saved_at else 0.0
        members = [
            MemberState(id, (host, port), name, position, dropped, last_seen + downtime)
            for id, host, port, name, position, dropped, last_seen in connection.execute(
                "SELECT id, host, port, name, position, dropped, last_seen"
                " FROM members ORDER BY id"
            )
        ]
        lines = connection.execute(
            "SELECT sequence, author, line FROM lines ORDER BY sequence"
        ).fetchall()
        # The file holds exactly the lines the room held, so the oldest is
        # the room's first; a room that held none had every member at its
        # end (a member can only fall behind lines that are still held).
        if lines:
            first = lines[0][0]
        else:
            first = max((member.position for member in members), default=0)
        room.restore(members, [(author, line) for _, author, line in lines], first, saved_next_id)
        self._saved_first = first
        self._saved_next_id = saved_next_id

    def commit(self, changes, now, checkpoint=False):
        """
        Save C{changes} (a L{udpchat.room.Changes}) in one transaction, at
        time C{now}; with C{checkpoint}, the time too, which is otherwise
        saved only now and then (an older time errs on the side of members:
        the downtime seems longer, so they stay longer).  Changes that a
        failed commit could not save are saved with the next.
        """
        if self._unsaved is not None:
            changes = self._unsaved.then(changes)
        if not (
            changes
            or checkpoint
            or changes.first != self._saved_first
            or changes.next_id != self._saved_next_id
        ):
            return  # nothing changed: no transaction
        connection = self._connection
        try:
            connection.execute("BEGIN")
            if changes.removed:
                connection.executemany(
                    "DELETE FROM members WHERE id = ?", [(id,) for id in changes.removed]
                )
            if changes.members:
                connection.executemany(
                    _SAVE_MEMBER,
                    [(m.id, *m.source[:2], m.name, m.position, m.dropped, m.last_seen) for m in changes.members],
                )
            if changes.lines:
                connection.executemany("INSERT INTO lines VALUES (?, ?, ?)", changes.lines)
            if changes.first != self._saved_first:
                connection.execute("DELETE FROM lines WHERE sequence < ?", (changes.first,))
            if checkpoint:
                connection.execute(
                    "UPDATE room SET next_id = ?, saved_at = ?", (changes.next_id, now)
                )
            elif changes.next_id != self._saved_next_id:
                # Member numbers are never given out twice, crash or not.
                connection.execute("UPDATE room SET next_id = ?", (changes.next_id,))
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            self._unsaved = changes
            raise
        self._unsaved = None
        self._saved_first = changes.first
        self._saved_next_id = changes.next_id

    def close(self):
        """Close the file; L{open} may open it again."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

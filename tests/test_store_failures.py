"""
L{ChatServerProtocol} when its store fails: nothing of a batch whose commit
failed stays in effect, and the log says so once.
"""

import os
import sqlite3
import tempfile
from collections import Counter

from twisted.internet.task import Clock
from twisted.internet.testing import FakeDatagramTransport
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from udpchat.room import Room
from udpchat.server import ChatServerProtocol
from udpchat.store import StateWriteError, Store
from udpchat.wire import ILLEGAL

from tests.test_store import read_back

AL = ("127.0.0.1", 4000)
BO = ("127.0.0.1", 4001)
CY = ("127.0.0.1", 4002)
FULL = "database or disk is full"


class FailingStore(Store):
    """
    A real store whose commits fail as on a full disk while C{error} is set
    (all of them: a stricter disk than a real one, which refuses only what
    would be written).
    """

    error = None

    def commit(self, changes, now, checkpoint=False):
        if self.error is not None:
            raise StateWriteError(self.error)
        return Store.commit(self, changes, now, checkpoint)


class FailedCommitTests(SynchronousTestCase):
    """
    A batch whose commit fails is undone: its requests get no reply, and
    the room is as the store last committed it.
    """

    def setUp(self):
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        self.path = os.path.join(directory.name, "room.db")
        # Faults come through a second connection, into the tables, which
        # every commit writes (log_bytes=0).
        self.store = FailingStore(self.path, shared=True, log_bytes=0)
        self.store.open()
        self.addCleanup(self.store.close)
        self.room = Room(track_state=True)
        self.store.load(self.room, 0)
        self.clock = Clock()
        self.transport = FakeDatagramTransport()
        self.protocol = ChatServerProtocol(self.room, self.clock, store=self.store)
        self.protocol.makeConnection(self.transport)

    def batch(self, *requests):
        """Handle C{requests}, C{(datagram, source)} pairs, as one batch; return its replies."""
        before = len(self.transport.written)
        for datagram, source in requests:
            self.protocol.datagramReceived(datagram, source)
        self.clock.advance(0)
        return self.transport.written[before:]

    def test_outage_answers_nothing_and_takes_nothing(self):
        """While commits fail, no request that changes the room is answered, and none of them happened once writing works again."""
        self.batch((b"1 Al", AL), (b"1 Bo", BO), (b"2 one", AL))
        self.store.error = FULL
        with capturedLogs() as outage:
            during = [
                self.batch((b"2 two", AL)),
                self.batch((b"5", BO)),
                self.batch((b"5", BO), (b"1 Cy", CY)),
                self.batch((b"3 Ann", AL)),
            ]
            self.protocol.checkpoint()
        self.store.error = None
        with capturedLogs() as recovery:
            after = self.batch((b"5", BO), (b"5", CY), (b"2 three", AL), (b"1 Di", CY))
        self.assertEqual(
            (
                during,
                after,
                read_back(self.path).members(),
                [(e["log_level"], e.get("error")) for e in outage + recovery if "path" in e],
            ),
            (
                [[], [], [], []],
                [(b"Al: one", BO), (ILLEGAL, CY), (b"", AL), (b"Bo, Al", CY)],
                [(AL, "Al"), (BO, "Bo"), (CY, "Di")],
                [(LogLevel.error, FULL), (LogLevel.warn, None)],
            ),
        )

    def test_failed_commit_on_a_bug_is_undone_and_logged_as_one(self):
        """A commit that hits a bug (here, a constraint the store does not expect) is undone, and logged as a bug with its traceback."""
        self.batch((b"1 Al", AL), (b"1 Bo", BO))
        other = sqlite3.connect(self.path, isolation_level=None)
        self.addCleanup(other.close)
        other.execute("CREATE TRIGGER full BEFORE INSERT ON lines BEGIN SELECT RAISE(ABORT, 'full'); END")
        with capturedLogs() as events:
            during = self.batch((b"2 hi", BO))
        other.execute("DROP TRIGGER full")
        after = self.batch((b"5", AL), (b"2 again", BO), (b"5", AL))
        self.assertEqual(
            (
                during,
                after,
                [e["log_failure"].type for e in events if e.get("log_failure")],
                self.protocol.counts,
            ),
            (
                [],
                [(b"Bo has joined", AL), (b"", BO), (b"Bo: again", AL)],
                [sqlite3.IntegrityError],
                Counter({"fault": 1, "uncommitted": 1}),
            ),
        )
        self.flushLoggedErrors(sqlite3.IntegrityError)

"""
Tests for L{udpchat.notify}: what the server tells systemd, unit by unit
on a L{Clock} with a real datagram socket standing in for systemd's, and
end to end from the real C{twistd -n udpchat}.
"""

import os
import signal
import socket
import statistics
import tempfile
import time
import uuid

from twisted.internet.task import Clock
from twisted.internet.testing import FakeDatagramTransport
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from tests.harness import DEADLINE, NotifySocket, ProcessTestCase, environment
from tests.test_tap import LOOPBACK, OptionsTestMixin
from udpchat.notify import STATUS_INTERVAL, NotifyService, notify_address, watchdog_interval
from udpchat.room import Room
from udpchat.server import ChatServerProtocol
from udpchat.tap import makeService

AL = ("127.0.0.1", 4000)
BO = ("127.0.0.1", 4001)


class NotifyAddressTests(SynchronousTestCase):
    """
    L{notify_address}: which sockets C{NOTIFY_SOCKET} may name.
    """

    def test_a_path(self):
        """An absolute path is the socket's path."""
        self.assertEqual(notify_address({"NOTIFY_SOCKET": "/run/systemd/notify"}), "/run/systemd/notify")

    def test_an_abstract_socket(self):
        """C{@name} is the abstract socket C{name}: a NUL byte first."""
        self.assertEqual(notify_address({"NOTIFY_SOCKET": "@notify/1"}), "\0notify/1")

    def test_none(self):
        """Unset, empty, relative or of another family (vsock): no socket."""
        for environ in ({}, {"NOTIFY_SOCKET": ""}, {"NOTIFY_SOCKET": "run/notify"},
                        {"NOTIFY_SOCKET": "vsock:2:1234"}):
            self.assertIsNone(notify_address(environ), environ)


class WatchdogIntervalTests(SynchronousTestCase):
    """
    L{watchdog_interval}: half of C{WATCHDOG_USEC}, for this process only.
    """

    def test_half_of_watchdog_usec(self):
        """WATCHDOG_USEC=200000 (0.2 s) asks for a ping every 0.1 s."""
        self.assertEqual(watchdog_interval({"WATCHDOG_USEC": "200000"}, 7), 0.1)

    def test_for_this_process(self):
        """WATCHDOG_PID naming this process asks it; naming another does not."""
        environ = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}
        self.assertEqual((watchdog_interval(environ, 7), watchdog_interval(environ, 8)), (15.0, None))

    def test_no_watchdog(self):
        """Unset, zero or junk: no watchdog."""
        for usec in (None, "", "0", "-5", "soon", "1.5"):
            environ = {} if usec is None else {"WATCHDOG_USEC": usec}
            self.assertIsNone(watchdog_interval(environ, 7), usec)


class NotifyServiceTests(SynchronousTestCase):
    """
    L{NotifyService} on a L{Clock}, notifying a real datagram socket.
    """

    def setUp(self):
        self.systemd = NotifySocket()
        self.addCleanup(self.systemd.close)
        self.systemd.socket.setblocking(False)
        self.clock = Clock()
        self.protocol = ChatServerProtocol(Room(idle_timeout=0), self.clock)
        self.protocol.makeConnection(FakeDatagramTransport())

    def service(self, pid=7, **environ):
        service = NotifyService(
            self.systemd.path, {"NOTIFY_SOCKET": self.systemd.path, **environ},
            self.protocol, self.clock, getpid=lambda: pid,
        )
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        return service

    def received(self):
        """Every notification sent since the last call, each as its lines."""
        messages = []
        while True:
            try:
                messages.append(self.systemd.socket.recv(65536).decode().split("\n"))
            except BlockingIOError:
                return messages

    def test_ready_with_the_members_when_started(self):
        """Started, it says READY=1 and the members, in one notification."""
        self.protocol.datagramReceived(b"1 Al", AL)
        self.service()
        self.assertEqual(self.received(), [["READY=1", "STATUS=1 member"]])

    def test_status_says_the_request_rate(self):
        """Every STATUS_INTERVAL seconds the status says the members and the requests a second since the last."""
        self.service()
        self.received()
        for datagram in (b"1 Al", b"2 hi", b"5", b"junk", b"5"):
            self.protocol.datagramReceived(datagram, AL)
        self.clock.advance(STATUS_INTERVAL)
        self.protocol.datagramReceived(b"1 Bo", BO)
        self.clock.advance(STATUS_INTERVAL)
        self.assertEqual(
            self.received(),
            [["STATUS=1 member, 1.0 requests/s"], ["STATUS=2 members, 0.2 requests/s"]],
        )

    def test_watchdog_at_half_of_watchdog_usec(self):
        """With WATCHDOG_USEC, WATCHDOG=1 at once, then every half of it, from the reactor."""
        self.service(WATCHDOG_USEC="200000")
        pings = []
        for _ in range(5):
            pings.append(sum(m == ["WATCHDOG=1"] for m in self.received()))
            self.clock.advance(0.1)
        self.assertEqual(pings, [1, 1, 1, 1, 1])

    def test_no_watchdog_for_another_process(self):
        """WATCHDOG_PID naming another process: no WATCHDOG=1."""
        self.service(WATCHDOG_USEC="200000", WATCHDOG_PID="8")
        self.clock.advance(1)
        self.assertNotIn(["WATCHDOG=1"], self.received())

    def test_stopping_when_stopped(self):
        """Stopped, it says STOPPING=1, and nothing more after that."""
        service = self.service(WATCHDOG_USEC="200000")
        self.received()
        service.stopService()
        self.clock.advance(STATUS_INTERVAL)
        self.assertEqual(self.received(), [["STOPPING=1"]])

    def test_an_abstract_socket(self):
        """NOTIFY_SOCKET=@name reaches the abstract socket of that name."""
        name = f"udpchat-test-{uuid.uuid4().hex}"
        abstract = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(abstract.close)
        abstract.bind("\0" + name)
        abstract.settimeout(DEADLINE)
        environ = {"NOTIFY_SOCKET": "@" + name}
        service = NotifyService(notify_address(environ), environ, self.protocol, self.clock)
        service.startService()
        service.stopService()
        self.assertEqual([abstract.recv(100), abstract.recv(100)], [b"READY=1\nSTATUS=0 members", b"STOPPING=1"])

    def test_failing_to_notify_is_said_once(self):
        """A socket that is gone: one warning, however many notifications fail; one line when it works again."""
        path = self.systemd.path
        self.systemd.socket.close()
        os.remove(path)
        with capturedLogs() as events:
            self.service(WATCHDOG_USEC="200000")
            self.clock.advance(1)
            again = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.addCleanup(again.close)
            again.bind(path)
            self.clock.advance(0.1)
        self.assertEqual(
            [(e["log_level"], e["log_format"].split(" ")[0], e.get("error")) for e in events],
            [(LogLevel.warn, "cannot", "No such file or directory"), (LogLevel.info, "notifying", None)],
        )


class ReadinessTests(OptionsTestMixin, SynchronousTestCase):
    """
    makeService with NOTIFY_SOCKET: ready only once the chat service serves.
    """

    def test_no_ready_when_the_state_cannot_be_opened(self):
        """A state file that cannot be opened stops the start before READY=1 is sent."""
        systemd = NotifySocket()
        self.addCleanup(systemd.close)
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        path = os.path.join(directory.name, "room.db")
        config = self.parse(*LOOPBACK, "--state", path)
        os.mkdir(path)  # after the check: what twistd's fork may meet
        service = makeService(config, reactor=Clock(), environ={"NOTIFY_SOCKET": systemd.path})
        with capturedLogs():
            self.assertRaises(SystemExit, service.startService)
        systemd.socket.setblocking(False)
        self.assertRaises(BlockingIOError, systemd.socket.recv, 100)


class NotifyDaemonTests(ProcessTestCase):
    """
    The real twistd -n udpchat under a stand-in for systemd.
    """

    def test_ready_watchdog_and_stopping(self):
        """READY=1 first, when the port answers; WATCHDOG=1 every 0.1 s for WATCHDOG_USEC=200000; STOPPING=1 on SIGTERM."""
        systemd = self.notify_socket()
        server = self.server(
            env=environment(NOTIFY_SOCKET=systemd.path, WATCHDOG_USEC="200000")
        )
        ready = systemd.wait_for("READY=1")
        self.assertEqual((ready, len(systemd.messages)), (["READY=1", "STATUS=0 members"], 1))
        self.assertEqual(self.member(server).request(b"1 Ann"), b"")
        started = time.monotonic()
        while time.monotonic() - started < 1.0:
            systemd.wait_for("WATCHDOG=1")
        pings = [at for at, lines in systemd.messages if lines == ["WATCHDOG=1"]]
        gaps = [later - earlier for earlier, later in zip(pings, pings[1:])]
        self.assertTrue(0.07 < statistics.median(gaps) < 0.15, gaps)
        self.assertGreaterEqual(len(pings), 7)
        server.process.send_signal(signal.SIGTERM)
        systemd.wait_for("STOPPING=1")
        self.assertIn(server.stop(), (0, -signal.SIGTERM))

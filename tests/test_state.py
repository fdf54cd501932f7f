"""
C{--state} against the real daemon: restarts, crashes (C{kill -9} at random
moments), bad state files and two servers on one file.
"""

import os
import random
import signal
import sqlite3
import tempfile
import threading

from tests.harness import ProcessTestCase, as_nobody, require_root

ILLEGAL = b"Illegal message"


class StateCase(ProcessTestCase):
    """
    Servers on one state file, C{self.path}, in a directory of the test's own.
    """

    def setUp(self):
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        self.directory = directory.name
        self.path = os.path.join(self.directory, "room.db")

    def server(self, *options, **kwargs):
        """A running server on C{self.path}; see L{ProcessTestCase.server}."""
        return super().server("--state", self.path, *options, **kwargs)


class RestartTests(StateCase):
    """
    A server restarted on its state file serves the same room.
    """

    def test_room_survives_sigterm_and_restart(self):
        """Members, names and exactly the pending lines are there after a restart."""
        server = self.server()
        al, bo, cy = (self.member(server, f"127.0.{i}.1") for i in range(3))
        self.assertEqual([al.request(b"1 Al"), bo.request(b"1 Bo"), cy.request(b"1 Cy")], [b"", b"Al", b"Bo, Al"])
        al.request(b"2 hello")
        bo.request(b"5")
        cy.request(b"3 Cyd")
        bo.request(b"2 hi")
        self.assertIn(server.stop(), (0, -signal.SIGTERM))
        self.assertTrue(server.output.search(r"udpchat stopped: 3 members and \d+ stored lines kept in "))
        again = self.server()
        for member in (al, bo, cy):
            member.server_address = again.address()
        self.assertTrue(again.output.search(r"restored 3 members and \d+ stored lines from "))
        self.assertEqual(
            [al.request(b"5"), bo.request(b"5"), cy.request(b"5")],
            [
                b"Bo has joined\nCy has joined\nCy changed his name to Cyd\nBo: hi",
                b"Cy changed his name to Cyd",
                b"Al: hello\nBo: hi",
            ],
        )
        newcomer = self.member(again, "127.0.9.1")
        self.assertEqual([newcomer.request(b"1 Cyd"), newcomer.request(b"1 Di")], [ILLEGAL, b"Cyd, Bo, Al"])

    def test_empty_file_starts_a_new_room(self):
        """A 0-byte file is a new room."""
        open(self.path, "wb").close()
        server = self.server()
        self.assertEqual(self.member(server, "127.0.0.1").request(b"1 Al"), b"")


class CrashTests(StateCase):
    """
    kill -9 at random moments of a scripted session: no acknowledged line is
    lost, and no line reaches a member twice.

    Delivery is at most once: a poll's lines are taken (and committed) before
    they are sent, so a poll whose reply the kill cut off may lose the lines
    it carried.  Only those may be missing.
    """

    ROUNDS = 6

    def chat(self, members, names, stop, log):
        """Say and poll in turns until the server stops answering."""
        rng = random.Random(len(log["sent"]))
        count = 0
        while not stop.is_set():
            i = rng.randrange(len(members))
            member = members[i]
            member.socket.settimeout(0.5)
            try:
                if rng.random() < 0.5:
                    line = b"%s: m%d" % (names[i], len(log["sent"]) * 1000 + count)
                    count += 1
                    log["attempted"].append((i, line))
                    if member.request(b"2 " + line.split(b": ", 1)[1]) == b"":
                        log["sent"].append((i, line))
                else:
                    # If this reply is lost, it held lines said before now.
                    log["cut_off"][i] = len(log["attempted"])
                    reply = member.request(b"5")
                    del log["cut_off"][i]
                    log["received"][i] += [l for l in reply.split(b"\n") if b": m" in l]
            except OSError:  # a timeout: the server was killed
                for j, before in log["cut_off"].items():
                    log["maybe_lost"][j] |= {line for a, line in log["attempted"][:before] if a != j}
                log["cut_off"].clear()
                return

    def test_kill_9_loses_no_acknowledged_line_and_repeats_none(self):
        """Across kill -9 and restarts, no acknowledged line is lost and none arrives twice."""
        names = [b"Al", b"Bo", b"Cy"]
        server = self.server()
        members = [self.member(server, f"127.0.{i}.1") for i in range(3)]
        for member, name in zip(members, names):
            self.assertNotEqual(member.request(b"1 " + name), ILLEGAL)
        log = {
            "sent": [],
            "attempted": [],
            "received": {0: [], 1: [], 2: []},
            "cut_off": {},  # member -> lines attempted when its unanswered poll went
            "maybe_lost": {0: set(), 1: set(), 2: set()},
        }
        rng = random.Random(1)
        for round in range(self.ROUNDS):
            stop = threading.Event()
            chatter = threading.Thread(target=self.chat, args=(members, names, stop, log))
            chatter.start()
            # The kill lands anywhere in the session: mid-request, mid-commit.
            chatter.join(rng.uniform(0.05, 0.6))
            server.process.send_signal(signal.SIGKILL)
            server.stop()
            stop.set()
            chatter.join(10)
            server = self.server()
            for member in members:
                member.server_address = server.address()
                member.socket.settimeout(10)
        for i, member in enumerate(members):
            for _ in range(100):
                reply = member.request(b"5")
                if not reply:
                    break
                log["received"][i] += [l for l in reply.split(b"\n") if b": m" in l]
        for i in range(3):
            received = log["received"][i]
            acknowledged = [line for author, line in log["sent"] if author != i]
            possible = {line for author, line in log["attempted"] if author != i}
            self.assertEqual(len(received), len(set(received)), f"member {i} got a line twice")
            missing = set(acknowledged) - set(received)
            self.assertLessEqual(missing, log["maybe_lost"][i], f"member {i} lost lines")
            self.assertLessEqual(set(received), possible)
            # Lines of one author arrive in the order they were said.
            for author in range(3):
                theirs = [line for line in received if line.startswith(names[author])]
                said = [line for a, line in log["attempted"] if a == author and line in theirs]
                self.assertEqual(theirs, said)
        self.assertGreater(len(log["sent"]), 20)


class BadStateFileTests(StateCase):
    """
    What --state and --state-sync refuse (a one-line usage error, the file
    left as it was), and what they serve.
    """

    def assert_untouched(self, content, *options, message):
        """A state file holding C{content} is refused with C{message}, and left as it was."""
        with open(self.path, "wb") as f:
            f.write(content)
        output = self.usage_error("--state", self.path, *options)
        self.assertIn(message, output)
        self.assertEqual(open(self.path, "rb").read(), content)
        self.assertFalse(os.path.exists(self.path + "-wal"))

    def test_garbage(self):
        """Garbage bytes: one clear line, non-zero exit, file untouched."""
        self.assert_untouched(os.urandom(3000), message="is not a udpchat state file")

    def test_newer_schema(self):
        """A newer schema version is refused, the file left as it was."""
        connection = sqlite3.connect(self.path)
        connection.execute(f"PRAGMA application_id = {0x75647063}")
        connection.execute("PRAGMA user_version = 9")
        connection.execute("CREATE TABLE future (x)")
        connection.commit()
        connection.close()
        content = open(self.path, "rb").read()
        # Which versions it reads changes with the schema; that it names 9 does not.
        self.assert_untouched(content, message="has schema version 9; this udpchat reads version")

    def test_directory(self):
        """A directory as the state file is refused."""
        self.assertIn("is a directory", self.usage_error("--state", self.directory))

    def test_read_only_directory(self):
        """A directory where the WAL files cannot be written is refused (as an unprivileged user)."""
        require_root("it runs the server as another user")
        os.chmod(self.directory, 0o755)
        reason = self.usage_error("--state", self.path, argv_prefix=as_nobody())
        self.assertIn("cannot write in " + self.directory, reason)

    def test_bad_sync_mode(self):
        """--state-sync takes normal or full."""
        self.assertEqual(
            self.usage_error("--state", self.path, "--state-sync", "off"),
            "--state-sync must be one of normal, full, not 'off'",
        )

    def test_second_server_on_one_file_is_refused(self):
        """Two servers never share a state file."""
        first = self.server()
        reason = self.usage_error("--state", self.path)
        self.assertIn("another udpchat server is using " + self.path, reason)
        self.assertEqual(self.member(first, "127.0.0.1").request(b"1 Al"), b"")

    def test_full_sync_serves(self):
        """--state-sync full works."""
        server = self.server("--state-sync", "full")
        self.assertEqual(self.member(server, "127.0.0.1").request(b"1 Al"), b"")

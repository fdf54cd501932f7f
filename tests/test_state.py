"""
C{--state} against the real daemon: restarts, crashes (C{kill -9} at random
moments), a full disk, bad state files, two servers on one file, and files
pulled away under a running server.
"""

import os
import random
import shutil
import signal
import socket
import sqlite3
import tempfile
import threading

from udpchat.room import Room
from udpchat.store import Store

from tests.harness import DEADLINE, ProcessTestCase, as_nobody, require_root
from tests.test_store import files, small_filesystem

ILLEGAL = b"Illegal message"
UNANSWERED = 1.0
"""Seconds to wait for a reply that may not come."""


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

    def test_other_names_of_a_file_in_use_are_refused(self):
        """A symbolic link, a hard link, or the file itself once 1.0's lock file is gone: each second server is refused in one line."""
        first = self.server()
        symbolic = os.path.join(self.directory, "symbolic.db")
        hard = os.path.join(self.directory, "hard.db")
        os.symlink(self.path, symbolic)
        os.link(self.path, hard)
        if os.path.exists(self.path + ".lock"):
            os.unlink(self.path + ".lock")  # udpchat 1.0 locked this name
        reasons = [self.usage_error("--state", name) for name in (self.path, symbolic, hard)]
        self.assertEqual(
            (reasons, sorted(os.listdir(self.directory)), self.member(first, name="Al").request(b"5")),
            (
                [f"--state: another udpchat server is using {name}" for name in (self.path, symbolic, hard)],
                ["hard.db", "room.db", "room.db-changes", "room.db-wal", "symbolic.db"],
                b"",
            ),
        )

    def crash_copy(self, change=None):
        """
        Put at C{self.path} a room (Al and Bo, a line of Al's) as a crash
        leaves it: the file and its -wal, as they stood while a store held
        them, after another connection made C{change} (SQL) if given.
        Return the directory's files.
        """
        with tempfile.TemporaryDirectory() as elsewhere:
            origin = os.path.join(elsewhere, "room.db")
            room = Room(track_state=True)
            # Changed by a second connection; every commit in the tables.
            saved = Store(origin, shared=True, log_bytes=0)
            saved.open()
            saved.load(room, 0)
            room.receive(("192.0.2.1", 1), b"1 Al", 0)
            room.receive(("192.0.2.2", 2), b"1 Bo", 0)
            room.receive(("192.0.2.1", 1), b"2 one", 0)
            saved.commit(room.take_changes(), 0)
            other = sqlite3.connect(origin, isolation_level=None)
            if change is not None:
                other.executescript(change)
            shutil.copyfile(origin, self.path)
            shutil.copyfile(origin + "-wal", self.path + "-wal")
            other.close()
            saved.close()
        return files(self.directory)

    def test_refused_file_with_its_journal_is_left_as_it_was(self):
        """A value udpchat never writes, in the -wal a crash left, is refused in one line; nothing is changed or created beside the file."""
        before = self.crash_copy("UPDATE members SET position = 'far' WHERE id = 1")
        reason = self.usage_error("--state", self.path)
        self.assertEqual(
            (reason, sorted(before), files(self.directory) == before),
            (
                f"--state: {self.path} holds what udpchat never writes: members id 1: position = 'far'",
                ["room.db", "room.db-wal"],
                True,
            ),
        )

    def test_empty_file_beside_a_journal_is_refused(self):
        """A 0-byte file beside the -wal that holds its commits is refused, not taken for a new room; both are left as they were."""
        self.crash_copy()
        open(self.path, "wb").close()
        before = files(self.directory)
        reason = self.usage_error("--state", self.path)
        wal = self.path + "-wal"
        self.assertEqual(
            (reason, files(self.directory) == before),
            (
                f"--state: {self.path} is empty but {wal} holds {len(before['room.db-wal'])} "
                f"bytes of its commits: put {self.path} back, or remove {wal} to start a new room",
                True,
            ),
        )

    def test_values_are_checked_before_the_server_starts(self):
        """A file without its room row, or with text in a number column, is a one-line usage error, not a traceback."""
        reasons = []
        for change, message in [
            ("DELETE FROM room", "0 rows in the table room"),
            ("UPDATE members SET dropped = -3 WHERE id = 0", "members id 0: dropped = -3"),
            ("ALTER TABLE lines ADD COLUMN extra", "the columns lines(sequence, author, line, extra)"),
        ]:
            for name in os.listdir(self.directory):
                os.unlink(os.path.join(self.directory, name))
            self.crash_copy(change)
            reasons.append((self.usage_error("--state", self.path), message))
        self.assertEqual(
            [reason for reason, _ in reasons],
            [f"--state: {self.path} holds what udpchat never writes: {message}" for _, message in reasons],
        )


class PulledAwayTests(StateCase):
    """
    The state file or its -wal deleted or replaced under a running server:
    it stops, saying so, and never claims to keep the room in a file that
    is gone.
    """

    def exited(self, server):
        """Wait for C{server} to stop by itself; return its exit code and output."""
        code = server.process.wait(DEADLINE)
        server.output.join()
        return code, server.output.text()

    def test_deleted_file_stops_the_server(self):
        """With its file deleted, the server stops within seconds, saying the room is lost."""
        server = self.server()
        self.member(server, name="Al")
        os.unlink(self.path)
        code, output = self.exited(server)
        self.assertEqual(
            (
                code,
                f"the state file cannot be used any more: {self.path} was deleted; udpchat stops" in output,
                f"udpchat stopped: 1 member and 0 stored lines lost: {self.path} was deleted" in output,
                "kept in" in output,
            ),
            (0, True, True, False),
        )

    def test_stopped_at_once_after_deletion_does_not_claim_to_keep_the_room(self):
        """SIGTERM right after the file is deleted: the last line says the room is lost, not kept."""
        server = self.server()
        self.member(server, name="Al")
        os.unlink(self.path)
        server.stop()
        output = server.output.text()
        self.assertEqual(
            (f"udpchat stopped: 1 member and 0 stored lines lost: {self.path} was deleted" in output, "kept in" in output),
            (True, False),
        )

    def test_replaced_file_stops_the_server_and_is_left_alone(self):
        """With another file put in place of its own, the server stops, and leaves that file alone."""
        server = self.server()
        self.member(server, name="Al")
        other = os.path.join(self.directory, "other")
        with open(other, "wb") as f:
            f.write(b"not yours")
        os.replace(other, self.path)
        code, output = self.exited(server)
        self.assertEqual(
            (code, f"{self.path} was replaced by another file; udpchat stops" in output, open(self.path, "rb").read()),
            (0, True, b"not yours"),
        )

    def test_deleted_journal_stops_the_server_with_every_commit_kept(self):
        """With its -wal deleted, the server stops, writing its commits back into the file: a new server has every acknowledged line."""
        server = self.server()
        al = self.member(server, "127.0.0.1", name="Al")
        bo = self.member(server, "127.0.0.2", name="Bo")
        self.assertEqual(al.request(b"2 one"), b"")
        os.unlink(self.path + "-wal")
        code, output = self.exited(server)
        again = self.server()
        bo.server_address = again.address()
        self.assertEqual(
            (
                code,
                f"{self.path}-wal was deleted; udpchat stops" in output,
                f"udpchat stopped: 2 members and 2 stored lines kept in {self.path} "
                f"({self.path}-wal was deleted: its commits were written back)" in output,
                bo.request(b"5"),
            ),
            (0, True, True, b"Al: one"),
        )


class FullDiskTests(StateCase):
    """
    --state on a filesystem that fills up: a real one, a small tmpfs (as
    root; skipped otherwise, saying so).
    """

    def setUp(self):
        self.directory = small_filesystem(self, "1m")
        self.path = os.path.join(self.directory, "room.db")
        # Space to give back once the disk is full.
        self.ballast = os.path.join(self.directory, "ballast")
        with open(self.ballast, "wb") as f:
            f.write(bytes(384 * 1024))

    def unanswered(self, member, datagram):
        """Send C{datagram}; return its reply, or None if none came."""
        member.socket.settimeout(UNANSWERED)
        try:
            return member.request(datagram)
        except socket.timeout:
            return None
        finally:
            member.socket.settimeout(DEADLINE)

    def test_acknowledged_lines_are_delivered_across_a_full_disk(self):
        """
        A member's lines are acknowledged until the disk is full; another
        member's polls meanwhile take nothing they were not answered with;
        once space is back it receives every acknowledged line, exactly once.
        A join with no reply made no member; the log says so once per outage
        (a small commit may fit where a line did not: the outage ends), and
        when it is over.  Bo's backlog holds every line: the disk, not
        --max-pending, is what runs out.
        """
        server = self.server("--max-pending", "1000000")
        al = self.member(server, "127.0.0.1", name="Al")
        bo = self.member(server, "127.0.0.2", name="Bo")
        al.request(b"5")  # "Bo has joined": now Bo alone has Al's lines to read
        said, acknowledged = [], []
        while True:
            line = b" ".join([b"%05d" % len(said)] * 4)
            said.append(b"Al: " + line)
            reply = self.unanswered(al, b"2 " + line)
            if reply is None:
                break
            acknowledged.append(said[-1])
        received = []
        outage = []
        for _ in range(5):
            reply = self.unanswered(bo, b"5")
            outage.append(reply)
            if reply:
                received += reply.split(b"\n")
        cy = self.member(server, "127.0.0.3")
        joined = self.unanswered(cy, b"1 Cy")
        os.unlink(self.ballast)
        self.assertEqual(al.request(b"2 back"), b"")
        while True:
            reply = bo.request(b"5")
            if not reply:
                break
            received += reply.split(b"\n")
        strangers = (cy.request(b"5"), self.member(server, "127.0.0.4").request(b"1 Di"))
        server.stop()
        output = server.output.text()
        outages = output.count(f"cannot write the state file {self.path}: No space left on device")
        self.assertEqual(
            (
                received[: len(acknowledged)] == acknowledged,
                set(received) <= set(said) | {b"Al: back"},
                len(received) == len(set(received)),
                received[-1],
                joined,
                strangers,
                outages >= 1,
                output.count(f"the state file {self.path} can be written again") == outages,
                "cannot rollback" in output or "hit a bug" in output or "Traceback" in output,
            ),
            (True, True, True, b"Al: back", None, (ILLEGAL, b"Bo, Al"), True, True, False),
        )

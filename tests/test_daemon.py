"""
End-to-end tests of the real C{twistd udpchat}: the protocol over IPv4, IPv6
and a dual-stack socket, what it logs, how it refuses bad command lines, the
reply cap, daemon mode, the systemd unit and shutdown on SIGTERM.

Every server here is a real twistd subprocess on loopback, every member a real
UDP socket; waits have deadlines, and every process started is ended by PID.
"""

import os
import re
import shlex
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

from tests.harness import (
    DEADLINE,
    LISTENING,
    TWISTD,
    ProcessTestCase,
    environment,
    hang_up_as_a_shell_would,
    run_isolated,
    wait_for,
)

ILLEGAL = b"Illegal message"
ROOT = Path(__file__).parent.parent
UNIT = ROOT / "contrib" / "udpchat.service"
IP_AND_UDP_HEADERS = {socket.AF_INET: 20 + 8, socket.AF_INET6: 40 + 8}


def drain(member, limit=1000):
    """
    Poll until the reply is empty; return the non-empty replies, in order.
    """
    replies = []
    for _ in range(limit):
        reply = member.request(b"5")
        if not reply:
            return replies
        replies.append(reply)
    raise AssertionError(f"still polling after {limit} replies")


def lines_of(replies):
    """The lines of poll replies, in order."""
    return [line for reply in replies for line in reply.split(b"\n")]


def assert_packed(case, replies, lines, cap):
    """
    Assert that each of C{replies} is at most C{cap} bytes, and that each but
    the last is full: the next of C{lines} would not have fitted.
    """
    taken = 0
    for reply in replies:
        case.assertLessEqual(len(reply), cap)
        taken += reply.count(b"\n") + 1
        if taken < len(lines):
            case.assertGreater(len(reply) + 1 + len(lines[taken]), cap)


def process_ended(pid):
    """Whether process C{pid} has exited."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # Where nothing reaps orphans (some container inits), an exited daemon
    # stays a zombie, which signal 0 still finds.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def read_pid(pidfile):
    """The PID in C{pidfile}, or None while it is missing or incomplete."""
    try:
        return int(pidfile.read_text())
    except (FileNotFoundError, ValueError):
        return None


def readme_section(title):
    """The text of README.rst's section C{title}, its markup and line breaks removed."""
    text = (ROOT / "README.rst").read_text()
    start = text.index(f"\n{title}\n") + len(title) + 2
    heading = re.compile(r"\n(\S[^\n]*)\n([=~^-])\2+\n")
    following = heading.search(text, start + 1)
    body = text[start : following.start() if following else len(text)]
    return " ".join(body.replace("**", "").replace("``", "").split())


def seconds(timespan):
    """The seconds of a systemd time span such as C{30s}, C{2min} or C{1min 30s}."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "ms": 0.001}
    parts = re.findall(r"(\d+)\s*([a-z]*)", timespan)
    return sum(int(number) * units[unit] for number, unit in parts)


def unit_settings():
    """The C{(section, key, value)} settings of the systemd unit, in order."""
    settings, section, pending = [], None, ""
    for raw in UNIT.read_text().splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, _, value = line.partition("=")
        settings.append((section, key.strip(), value.strip()))
    return settings


class IPv4ProtocolTests(ProcessTestCase):
    """
    The protocol, end to end, between member sockets and twistd on 127.0.0.1.
    """

    def test_members_join_say_rename_leave_and_poll(self):
        """Join lists the others newest first; a poll returns queued lines oldest first."""
        server = self.server()
        ann, bob, cy = (self.member(server) for _ in range(3))
        self.assertEqual(ann.request(b"1 Ann"), b"")
        self.assertEqual(bob.request(b"1 Bob"), b"Ann")
        self.assertEqual(cy.request(b"1 Cy"), b"Bob, Ann")
        self.assertEqual(ann.request(b"5"), b"Bob has joined\nCy has joined")
        self.assertEqual(ann.request(b"2 Hello, all"), b"")
        self.assertEqual(bob.request(b"2 Hi Ann"), b"")
        self.assertEqual(bob.request(b"3 Robert"), b"")
        self.assertEqual(cy.request(b"4"), b"")
        self.assertEqual(
            ann.request(b"5"),
            b"Bob: Hi Ann\nBob changed his name to Robert\nCy has left the group",
        )
        self.assertEqual(
            bob.request(b"5"), b"Cy has joined\nAnn: Hello, all\nCy has left the group"
        )
        self.assertEqual(ann.request(b"5"), b"")
        self.assertEqual(cy.request(b"5"), ILLEGAL)

    def test_illegal_requests_get_illegal_message_and_change_nothing(self):
        """Malformed, non-UTF-8 and oversize datagrams get exactly b"Illegal message"."""
        server = self.server()
        ann, bob, stranger = (self.member(server) for _ in range(3))
        self.assertEqual(ann.request(b"1 Ann"), b"")
        self.assertEqual(bob.request(b"1 Bob"), b"Ann")
        self.assertEqual(ann.request(b"5"), b"Bob has joined")
        largest = b"2 " + "\N{LATIN SMALL LETTER E WITH ACUTE}".encode() * 512 + b"\r\n"
        self.assertEqual(len(largest), 1028)
        # Each oversize datagram starts with the largest legal request, so
        # that reading it truncated would deliver a line.
        illegal = [
            b"2 \xff\xfe",
            b"3 \xc3",
            b"",
            b"6",
            b"5 ",
            b" 5",
            largest + b"!",
            largest + b"!!!",
            largest + b"x" * (5000 - len(largest)),
        ]
        self.assertEqual([len(d) for d in illegal[-3:]], [1029, 1031, 5000])
        for datagram in illegal:
            self.assertEqual(
                bob.request(datagram), ILLEGAL, f"{datagram[:20]!r}, {len(datagram)} bytes"
            )
        self.assertEqual(stranger.request(b"1 \xff"), ILLEGAL)
        self.assertEqual(stranger.request(b"5"), ILLEGAL)
        self.assertEqual(ann.request(b"5"), b"")
        self.assertEqual(bob.request(b"5"), b"")

    def test_largest_legal_request_is_delivered_without_line_ending(self):
        """A 1028-byte "2 " + 1024 bytes + CRLF is legal and queued without the CRLF."""
        server = self.server()
        ann, bob = (self.member(server) for _ in range(2))
        text = "\N{LATIN SMALL LETTER E WITH ACUTE}".encode() * 512
        self.assertEqual(ann.request(b"1 Ann"), b"")
        self.assertEqual(bob.request(b"1 Bob"), b"Ann")
        self.assertEqual(bob.request(b"2 " + text + b"\r\n"), b"")
        self.assertEqual(ann.request(b"5"), b"Bob has joined\nBob: " + text)


class IPv6Tests(ProcessTestCase):
    """
    twistd listening on ::1.
    """

    def test_members_chat_over_ipv6(self):
        """Members on ::1 join, chat and poll; the log shows [::1]:port."""
        server = self.server(interface="::1")
        self.assertEqual(server.host, "::1")
        ann, bob = (self.member(server.address("::1")) for _ in range(2))
        self.assertEqual(ann.socket.family, socket.AF_INET6)
        self.assertEqual(ann.request(b"1 Ann"), b"")
        self.assertEqual(bob.request(b"1 Bob"), b"Ann")
        self.assertEqual(bob.request(b"2 over six"), b"")
        self.assertEqual(ann.request(b"5"), b"Bob has joined\nBob: over six")
        port = ann.socket.getsockname()[1]
        wait_for(lambda: server.output.search(rf"'Ann' joined from \[::1\]:{port}\b"))


class DualStackTests(ProcessTestCase):
    """
    twistd without --interface: one socket on "::" that serves IPv4 too.
    """

    def test_ipv4_and_ipv6_members_chat_with_each_other(self):
        """An IPv4 and an IPv6 member share the room; the log shows plain IPv4."""
        server = self.server(interface=None)
        self.assertEqual(server.host, "::")
        four = self.member(("127.0.0.1", server.port))
        six = self.member(("::1", server.port))
        self.assertEqual(four.socket.family, socket.AF_INET)
        self.assertEqual(six.socket.family, socket.AF_INET6)
        self.assertEqual(four.request(b"1 Four"), b"")
        self.assertEqual(six.request(b"1 Six"), b"Four")
        self.assertEqual(four.request(b"2 hello from v4"), b"")
        self.assertEqual(six.request(b"5"), b"Four: hello from v4")
        self.assertEqual(six.request(b"2 hello from v6"), b"")
        self.assertEqual(four.request(b"5"), b"Six has joined\nSix: hello from v6")
        self.assertEqual(four.request(b"4"), b"")
        self.assertEqual(six.request(b"5"), b"Four has left the group")
        port = four.socket.getsockname()[1]
        wait_for(lambda: server.output.search(rf"'Four' joined from 127\.0\.0\.1:{port}\b"))
        wait_for(lambda: server.output.search(rf"'Four' at 127\.0\.0\.1:{port} left"))
        self.assertNotIn("::ffff:", server.output.text())


class LoggingTests(ProcessTestCase):
    """
    What twistd udpchat writes to its log.
    """

    def chat(self, server, count):
        """
        Have Ann say C{count} lines that Bob polls, then Bob leave; wait for
        the leave event, so that the output holds everything before it.
        """
        ann, bob = (self.member(server) for _ in range(2))
        self.assertEqual(ann.request(b"1 Ann"), b"")
        self.assertEqual(bob.request(b"1 Bob"), b"Ann")
        said = [b"whisper-%03d" % (i,) for i in range(count)]
        for text in said:
            self.assertEqual(ann.request(b"2 " + text), b"")
        self.assertEqual(lines_of(drain(bob)), [b"Ann: " + text for text in said])
        self.assertEqual(bob.request(b"4"), b"")
        wait_for(lambda: server.output.search(r"'Bob' at \S+ left"))

    def test_listening_event_is_logged_once(self):
        """The start-up line names the bound host and port, once."""
        server = self.server()
        self.assertEqual(server.host, "127.0.0.1")
        self.assertNotEqual(server.port, 0)
        self.chat(server, 1)
        events = [m.groups() for m in map(LISTENING.search, server.output.lines) if m]
        self.assertEqual(events, [("127.0.0.1", str(server.port))])

    def test_default_level_logs_no_chat_text_or_requests(self):
        """At the default level 200 chat lines and their polls add no log lines."""
        server = self.server()
        self.chat(server, 200)
        output = server.output.text()
        self.assertNotIn("whisper", output)
        self.assertNotIn(" sent ", output)
        self.assertLess(len(server.output.lines), 20, output)

    def test_debug_level_logs_every_request(self):
        """With --log-level debug every request is logged, chat text included."""
        server = self.server("--log-level", "debug")
        self.chat(server, 200)
        said = r"127\.0\.0\.1:\d+ sent b'2 whisper-\d{3}'"
        self.assertEqual(sum(bool(re.search(said, line)) for line in server.output.lines), 200)
        self.assertTrue(server.output.search(r"127\.0\.0\.1:\d+ sent b'5'"))


class CommandLineTests(ProcessTestCase):
    """
    Bad command lines: a non-zero exit and one reason line, never a traceback.
    """

    def assert_refused(self, options, *mentions):
        """
        Run C{twistd -n udpchat OPTIONS}; assert that it fails with a last
        line that gives the reason and mentions each of C{mentions}.
        """
        reason = self.usage_error(*options)
        for mention in mentions:
            self.assertIn(mention, reason)

    def test_port_that_is_not_a_number_is_refused(self):
        """--port abc is refused with a reason."""
        self.assert_refused(["--interface", "127.0.0.1", "--port", "abc"], "--port", "'abc'")

    def test_port_above_65535_is_refused(self):
        """--port 70000 is refused with a reason."""
        self.assert_refused(["--interface", "127.0.0.1", "--port", "70000"], "--port", "'70000'")

    def test_negative_port_is_refused(self):
        """--port -1 is refused with a reason."""
        self.assert_refused(["--interface", "127.0.0.1", "--port", "-1"], "--port", "'-1'")

    def test_interface_that_is_not_an_ip_address_is_refused(self):
        """--interface not-an-ip is refused with a reason."""
        self.assert_refused(
            ["--port", "0", "--interface", "not-an-ip"], "--interface", "'not-an-ip'"
        )

    def test_max_reply_bytes_below_1200_is_refused(self):
        """--max-reply-bytes 100 is refused with a reason."""
        self.assert_refused(
            ["--port", "0", "--interface", "127.0.0.1", "--max-reply-bytes", "100"],
            "--max-reply-bytes",
            "'100'",
        )

    def test_max_reply_bytes_above_largest_udp_payload_is_refused(self):
        """--max-reply-bytes 70000 is refused with a reason."""
        self.assert_refused(
            ["--port", "0", "--interface", "127.0.0.1", "--max-reply-bytes", "70000"],
            "--max-reply-bytes",
            "'70000'",
        )

    def test_unknown_log_level_is_refused(self):
        """--log-level loud is refused with a reason."""
        self.assert_refused(
            ["--port", "0", "--interface", "127.0.0.1", "--log-level", "loud"],
            "--log-level",
            "'loud'",
        )

    def test_unknown_option_is_refused(self):
        """--bogus-option is refused with a reason."""
        self.assert_refused(
            ["--port", "0", "--interface", "127.0.0.1", "--bogus-option"], "--bogus-option"
        )

    def test_port_in_use_is_refused(self):
        """A port another socket holds is refused with a reason naming the port."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
            holder.bind(("127.0.0.1", 0))
            port = str(holder.getsockname()[1])
            self.assert_refused(["--port", port, "--interface", "127.0.0.1"], port)

    # "Permission denied" (port 1 as a non-root user) is in test_privileges.py,
    # which switches users to meet it.


class ReplyCapTests(ProcessTestCase):
    """
    --max-reply-bytes caps every reply, join and poll alike.
    """

    def backlog(self, max_reply_bytes, count=80):
        """
        Queue C{count} lines of exactly 1000 bytes for a member of a server
        with C{max_reply_bytes}; return the lines and the replies that poll
        them.
        """
        server = self.server("--max-reply-bytes", str(max_reply_bytes))
        writer, reader = (self.member(server) for _ in range(2))
        self.assertEqual(writer.request(b"1 Writer"), b"")
        self.assertEqual(reader.request(b"1 Reader"), b"Writer")
        lines = []
        for i in range(count):
            line = b"Writer: %04d " % (i,)
            line += b"x" * (1000 - len(line))
            lines.append(line)
            self.assertEqual(writer.request(b"2 " + line[len(b"Writer: ") :]), b"")
        return lines, drain(reader)

    def test_join_reply_is_capped_with_and_n_more(self):
        """With 40 long names in the room, a join reply fits 1200 bytes and counts the rest."""
        server = self.server("--max-reply-bytes", "1200")
        names = [f"member-{i:02d}-".ljust(32, "x").encode() for i in range(40)]
        for name in names:
            self.member(server).request(b"1 " + name)
        reply = self.member(server).request(b"1 Newcomer")
        self.assertLessEqual(len(reply), 1200)
        *shown, tail = reply.split(b", ")
        more = re.fullmatch(rb"and (\d+) more", tail)
        self.assertTrue(more, reply)
        self.assertTrue(shown, reply)
        self.assertEqual(shown, names[::-1][: len(shown)])
        self.assertEqual(int(more.group(1)), len(names) - len(shown))

    def test_backlog_comes_in_capped_polls_each_line_once_in_order(self):
        """80 pending 1000-byte lines come over several polls of at most 1200 bytes."""
        lines, replies = self.backlog(1200)
        self.assertGreater(len(replies), 1)
        assert_packed(self, replies, lines, 1200)
        self.assertEqual(lines_of(replies), lines)

    def test_larger_cap_sends_backlog_in_fewer_larger_replies(self):
        """With --max-reply-bytes 65507 the same backlog comes in fewer, larger replies."""
        lines, small = self.backlog(1200)
        same, large = self.backlog(65507)
        self.assertEqual(same, lines)
        self.assertEqual(lines_of(large), lines)
        self.assertLess(len(large), len(small))
        self.assertGreater(max(map(len, large)), 1200)
        assert_packed(self, large, lines, 65507)


class DaemonTests(ProcessTestCase):
    """
    twistd without -n: it detaches, writes a pidfile and a logfile.
    """

    def assert_daemon_serves_and_stops_on(self, signum):
        """
        Start a daemon, chat through it, send it C{signum}: it must stop as
        on SIGTERM, logging that, leaving only its log file.
        """
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        cwd = Path(directory.name)
        pidfile, logfile = cwd / "twistd.pid", cwd / "twistd.log"
        started = {}

        def end_daemon():
            pid = started.get("pid") or read_pid(pidfile)
            if pid is None or process_ended(pid):
                return
            os.kill(pid, signal.SIGTERM)
            try:
                wait_for(lambda: process_ended(pid))
            except AssertionError:
                os.kill(pid, signal.SIGKILL)

        self.addCleanup(end_daemon)
        result = subprocess.run(
            [TWISTD, "--pidfile", str(pidfile), "--logfile", str(logfile),
             "udpchat", "--port", "0", "--interface", "127.0.0.1"],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=DEADLINE,
            preexec_fn=hang_up_as_a_shell_would,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        pid = started["pid"] = wait_for(lambda: read_pid(pidfile))
        self.assertNotEqual(pid, os.getpid())
        match = wait_for(lambda: logfile.exists() and LISTENING.search(logfile.read_text()))
        self.assertEqual(match.group(1), "127.0.0.1")
        ann, bob = (self.member(("127.0.0.1", int(match.group(2)))) for _ in range(2))
        self.assertEqual(ann.request(b"1 Ann"), b"")
        self.assertEqual(bob.request(b"1 Bob"), b"Ann")
        self.assertEqual(bob.request(b"2 from a daemon"), b"")
        self.assertEqual(ann.request(b"5"), b"Bob has joined\nBob: from a daemon")

        os.kill(pid, signum)
        wait_for(lambda: not pidfile.exists())
        wait_for(lambda: process_ended(pid))
        log = logfile.read_text()
        self.assertNotIn("Traceback", log)
        self.assertRegex(log, r"udpchat stopped: 2 members and \d+ stored lines? dropped")
        self.assertEqual(sorted(p.name for p in cwd.iterdir()), ["twistd.log"])

    def test_daemon_serves_and_stops_on_sigterm(self):
        """A daemonized server writes its pidfile and log, chats, and exits on SIGTERM."""
        self.assert_daemon_serves_and_stops_on(signal.SIGTERM)

    def test_daemon_stops_on_sighup_as_on_sigterm(self):
        """On SIGHUP a daemon logs that it stopped and removes its pidfile, as on SIGTERM."""
        self.assert_daemon_serves_and_stops_on(signal.SIGHUP)


class PidfileTests(ProcessTestCase):
    """
    twistd's pid file, as README.rst describes it.
    """

    def test_pidfile_of_a_running_server_refuses_a_second_one(self):
        """While the pid file names a running server, a second one from there is refused."""
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        pidfile = Path(directory.name) / "twistd.pid"
        argv = [TWISTD, "-n", f"--pidfile={pidfile}", "udpchat", "--port", "0",
                "--interface", "127.0.0.1"]
        first = self.server(argv=argv)
        self.assertEqual(read_pid(pidfile), first.process.pid)
        second = run_isolated(argv)
        self.assertEqual(second.returncode, 1)
        self.assertIn(f"Another twistd server is running, PID {first.process.pid}",
                      second.stderr.decode())

    def test_pidfile_left_by_kill_9_is_removed_at_the_next_start(self):
        """A pid file left by a killed server does not stop the next one: twistd removes it."""
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        pidfile = Path(directory.name) / "twistd.pid"
        argv = [TWISTD, "-n", f"--pidfile={pidfile}", "udpchat", "--port", "0",
                "--interface", "127.0.0.1"]
        first = self.server(argv=argv)
        self.assertEqual(first.stop(signum=signal.SIGKILL), -signal.SIGKILL)
        self.assertEqual(read_pid(pidfile), first.process.pid)
        second = self.server(argv=argv)
        self.assertEqual(read_pid(pidfile), second.process.pid)
        self.assertIn(f"Removing stale pidfile {pidfile}", second.output.text())
        self.assertEqual(self.member(second).request(b"1 Al"), b"")
        self.assertIn("is removed by the next start (Removing stale pidfile)",
                      readme_section("The server"))


class AmplificationTests(ProcessTestCase):
    """
    The figures of README.rst's Amplification section, measured.
    """

    def test_empty_datagram_amplification_is_the_one_stated(self):
        """README.rst states what an empty datagram's reply weighs against it on the wire."""
        server = self.server(interface=None)
        stated = readme_section("Amplification")
        for host in ("127.0.0.1", "::1"):
            member = self.member(server.address(host))
            reply = member.request(b"")
            self.assertEqual(reply, ILLEGAL)
            headers = IP_AND_UDP_HEADERS[member.socket.family]
            self.assertIn(f"{(len(reply) + headers) / headers:.2f}x", stated, host)


class SystemdUnitTests(ProcessTestCase):
    """
    contrib/udpchat.service runs a working server, the way systemd would.
    """

    def values(self, key):
        """The values the unit's [Service] section gives C{key}."""
        return [v for section, k, v in unit_settings() if section == "Service" and k == key]

    def test_exec_start_runs_a_server_members_can_chat_with(self):
        """The unit's ExecStart, on free loopback ports, serves chat in the foreground and tells systemd it is ready."""
        [command] = self.values("ExecStart")
        argv = shlex.split(command.lstrip("-+!:"))
        self.assertTrue(os.path.isabs(argv[0]), argv[0])
        self.assertEqual(Path(argv[0]).name, "twistd")
        self.assertIn("udpchat", argv)
        # Type=notify needs the foreground (the main process notifies); a
        # daemon would also escape cleanup.
        twistd_options = argv[1 : argv.index("udpchat")]
        self.assertTrue({"-n", "--nodaemon"} & set(twistd_options), argv)
        argv[0] = TWISTD
        for i, arg in enumerate(argv):
            if arg in ("--port", "-p"):
                argv[i + 1] = "0"
            elif arg.startswith("--port="):
                argv[i] = "--port=0"
            elif arg == "--metrics":
                argv[i + 1] = "127.0.0.1:0"
        # %S is systemd's state directory, where StateDirectory= makes ours.
        self.assertEqual(self.values("StateDirectory"), ["udpchat"])
        state = tempfile.TemporaryDirectory()
        self.addCleanup(state.cleanup)
        os.mkdir(os.path.join(state.name, "udpchat"))
        argv = [arg.replace("%S", state.name) for arg in argv]
        self.assertTrue(any("udpchat/room.db" in arg for arg in argv), argv)
        argv += ["--interface", "127.0.0.1"]
        systemd = self.notify_socket()
        [watchdog] = self.values("WatchdogSec")
        server = self.server(
            argv=argv,
            env=environment(
                NOTIFY_SOCKET=systemd.path, WATCHDOG_USEC=str(seconds(watchdog) * 10**6)
            ),
        )
        self.assertEqual(server.host, "127.0.0.1")
        self.assertIn("READY=1", systemd.wait_for("READY=1"))
        ann, bob = (self.member(server) for _ in range(2))
        self.assertEqual(ann.request(b"1 Ann"), b"")
        self.assertEqual(bob.request(b"1 Bob"), b"Ann")
        self.assertEqual(bob.request(b"2 under systemd"), b"")
        self.assertEqual(ann.request(b"5"), b"Bob has joined\nBob: under systemd")
        # ProtectSystem=strict: the service may write no pidfile or logfile.
        self.assertEqual(os.listdir(server.cwd.name), [])

    def test_unit_has_no_exec_reload(self):
        """The unit offers no reload: SIGHUP stops the server, as SIGTERM does."""
        self.assertEqual(self.values("ExecReload"), [])

    def test_unit_notifies_and_is_unprivileged(self):
        """The unit is Type=notify with a watchdog, and runs as a dynamic or named non-root user."""
        self.assertEqual(self.values("Type"), ["notify"])
        self.assertEqual(self.values("NotifyAccess"), ["main"])
        [watchdog] = self.values("WatchdogSec")
        self.assertGreater(seconds(watchdog), 0)
        dynamic = [v.lower() in ("yes", "true", "on", "1") for v in self.values("DynamicUser")]
        users = [u for u in self.values("User") if u and u not in ("root", "0")]
        self.assertTrue(any(dynamic) or users, "neither DynamicUser=yes nor User=")


class ShutdownTests(ProcessTestCase):
    """
    The foreground server and SIGTERM, SIGHUP.
    """

    def test_sighup_stops_server_as_sigterm_does(self):
        """SIGHUP ends twistd -n cleanly (exit status 0), logging what it drops."""
        server = self.server()
        ann, bob = (self.member(server) for _ in range(2))
        self.assertEqual(ann.request(b"1 Ann"), b"")
        self.assertEqual(bob.request(b"1 Bob"), b"Ann")
        self.assertEqual(server.stop(signum=signal.SIGHUP), 0)
        output = server.output.text()
        self.assertNotIn("Traceback", output)
        self.assertRegex(output, "Received SIGHUP, shutting down")
        self.assertRegex(output, r"udpchat stopped: 2 members and 1 stored line dropped")

    def test_sighup_keeps_the_state_and_restart_restores_it(self):
        """With --state, SIGHUP saves the room, and the next server restores it."""
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        path = os.path.join(directory.name, "room.db")
        server = self.server("--state", path)
        ann, bob = (self.member(server) for _ in range(2))
        self.assertEqual(ann.request(b"1 Ann"), b"")
        self.assertEqual(bob.request(b"1 Bob"), b"Ann")
        self.assertEqual(bob.request(b"2 before the hangup"), b"")
        self.assertEqual(server.stop(signum=signal.SIGHUP), 0)
        self.assertRegex(
            server.output.text(),
            r"udpchat stopped: 2 members and \d+ stored lines? kept in " + re.escape(path),
        )
        again = self.server("--state", path, "--port", str(server.port))
        self.assertRegex(again.output.text(), r"restored 2 members and \d+ stored lines? from ")
        self.assertEqual(ann.request(b"5"), b"Bob has joined\nBob: before the hangup")

    def test_sigterm_stops_server_promptly_without_traceback(self):
        """SIGTERM ends twistd -n within 5 seconds (or it is killed), cleanly."""
        server = self.server()
        member = self.member(server)
        self.assertEqual(member.request(b"1 Ann"), b"")
        code = server.stop(timeout=5)
        self.assertIn(code, (0, -signal.SIGTERM))
        self.assertNotIn("Traceback", server.output.text())

    def test_sigterm_logs_the_count_of_illegal_requests_not_yet_summarised(self):
        """Illegal requests counted since the last summary are logged at shutdown."""
        server = self.server()
        member = self.member(server)
        for datagram in (b"6", b"", b"5"):
            self.assertEqual(member.request(datagram), ILLEGAL)
        self.assertFalse(server.output.search("illegal requests"))
        self.assertIn(server.stop(), (0, -signal.SIGTERM))
        self.assertTrue(server.output.search(r"\b3 illegal requests refused"), server.output.text())

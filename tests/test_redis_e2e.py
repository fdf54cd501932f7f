"""
The Redis backend end to end (issue 14): real C{twistd udpchat --state
redis://...} daemons on a real redis-server (L{tests.redisserver}), members
on real UDP sockets.

Two daemons on one Redis and one C{--room} serve one group: a script of
requests, each socket's requests alternating between the two, gets the very
replies one in-memory daemon gives.  Daemons sharing a port (C{--reuse-port})
lose and repeat nothing for session members when one is killed.  Redis
stopped or hung under load: no reply for what is not stored, one log line
each way, and chat resumes.  Every daemon restarted: the group is intact, as
with one daemon on a SQLite file.  Start-up errors are one line that never
shows the password.

Every wait has a deadline, and every process is ended by the PID that
started it (the harness's L{Server}, L{RedisServer}).
"""

import itertools
import os
import re
import signal
import socket
import tempfile
import threading
import time

from udpchat.sharedroom import CALL_TIMEOUT

from tests.harness import DEADLINE, free_port, wait_for
from tests.redisserver import RedisServer, free_tcp_port, requires_redis, shared_redis
from tests.test_sessions_e2e import CHAT_DEADLINE, SessionTestCase, chat

ILLEGAL = b"Illegal message"

SILENCE = 0.3
"""Seconds to wait for a reply that must not come."""

LINES = 20
"""Lines each session member says in a chat."""

NOT_ANSWERING = r"Redis at redis://127\.0\.0\.1:\d+/0 does not answer"
ANSWERING = r"Redis at redis://127\.0\.0\.1:\d+/0 answers again"

_rooms = itertools.count(1)


def new_room():
    """A group name (C{--room}) that no other test in this process uses."""
    return f"e2e-{os.getpid()}-{next(_rooms)}"


def count_lines(server, pattern):
    """How many lines of C{server}'s output match C{pattern}."""
    return sum(1 for line in list(server.output.lines) if re.search(pattern, line))


def line_number(server, pattern):
    """The index of the first line of C{server}'s output matching C{pattern}, or None."""
    return next((i for i, line in enumerate(list(server.output.lines)) if re.search(pattern, line)), None)


def answering(server):
    """
    Wait until C{server} answers a stranger's C{5} (C{Illegal message},
    which changes nothing).  A daemon on Redis logs that it listens before
    its first connection to Redis is made, and gives no reply to what it
    reads until then.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        probe.settimeout(0.05)

        def answered():
            probe.sendto(b"5", server.address())
            try:
                return probe.recv(70000) == ILLEGAL
            except TimeoutError:
                return False

        wait_for(answered, interval=0)


# -- scripts of requests: one daemon's replies against two daemons' ------------

AGAIN = object()
"""A script step's datagram: the one this socket sent last, sent again."""

RESTART = object()
"""A script step: every daemon is stopped and started again."""

NO_REPLY = "no reply"
"""A script step's mark: the request must get no reply."""

NONCE = b"%032x" % 0x5A3
OTHER_NONCE = b"%032x" % 0xD1
LONG = b"x" * 1000
"""A text of which two lines do not fit in one reply of 1200 bytes."""

CONFORMANCE_OPTIONS = ("--max-pending", "3", "--max-members", "4")

CONFORMANCE = [
    ("a", b"1 Al"),
    ("b", b"1 Al"),  # taken, through the other daemon
    ("b", b"1 Bo"),
    ("c", b"1 Cy"),
    ("a", b"5"),
    ("a", b"2 hello"),
    ("b", b"3 Al"),
    ("b", b"3 Bob"),
    ("b", b"3 Bob"),  # one's own name
    ("c", b"1 Cyd"),  # a member joining again
    ("d", b"5"),  # not a member
    ("d", b"2 hi"),
    ("d", b"3 Di"),
    ("d", b"4"),
    ("d", b"1 and 3 more"),
    ("d", b"1 Illegal message"),
    ("b", b""),
    ("b", b"5 "),
    ("b", b" 5"),
    ("b", b"2 \xff\xfe"),
    ("b", b"2 " + b"y" * 1025),
    ("d", ILLEGAL, NO_REPLY),
    ("c", b"5"),
    # The backlog cap: at most 3 lines wait for a member.
    ("a", b"2 one"),
    ("a", b"2 two"),
    ("a", b"2 three"),
    ("a", b"2 four"),
    ("a", b"2 five"),
    ("b", b"5"),
    ("b", b"5"),
    # Lines too long to share a reply.
    ("c", b"2 " + LONG),
    ("c", b"2 " + LONG),
    ("a", b"5"),
    ("a", b"5"),
    ("a", b"5"),
    # Sessions: a registration, repeated; a full group refuses the next.
    ("s", b"6 %s Sam" % NONCE),
    ("s", AGAIN),
    ("d", b"1 Di"),
    ("d", b"6 %s Di" % OTHER_NONCE),
    ("s", b"7 {tok} 1 hi all"),
    ("s", AGAIN),
    ("s", b"5"),  # 1.0 requests from a session member's address
    ("s", b"2 forged"),
    ("s", b"3 Mallory"),
    ("a", b"5"),
    ("b", b"2 welcome Sam"),
    ("s", b"8 {tok} 2 {pos}"),
    ("s", AGAIN),
    # Roaming: the token from a new socket, through the other daemon.
    ("t", b"8 {tok} 3 {pos}"),
    ("t", AGAIN),
    ("s", b"7 {tok} 1 hi all", NO_REPLY),  # older than the newest: ignored
    ("s", b"5"),  # the old address is nobody's now
    ("b", b"5"),
    ("t", b"9 {tok} 4 Al"),
    ("t", b"9 {tok} 5 Samuel"),
    ("t", b"7 {tok} 6 bye"),
    ("t", b"0 {tok} 7"),
    ("t", AGAIN),
    ("t", b"7 {tok} 8 gone"),
    ("d", b"1 Di"),
    ("a", b"5"),
    ("b", b"4"),
    ("b", b"5"),
    ("c", b"5"),
    ("d", b"5"),
    ("a", b"5"),
]

RESTART_SCRIPT = [
    ("a", b"1 Al"),
    ("b", b"1 Bo"),
    ("c", b"1 Cy"),
    ("s", b"6 %s Sam" % NONCE),
    ("a", b"2 hello"),
    ("b", b"5"),
    ("c", b"3 Cyd"),
    ("b", b"2 hi"),
    ("s", b"7 {tok} 1 Sam here"),
    ("s", b"8 {tok} 2 {pos}"),
    ("b", b"2 for Sam"),
    ("s", b"7 {tok} 3 before"),
    (RESTART,),
    ("s", AGAIN),  # its reply is kept across the restart
    ("a", b"5"),
    ("b", b"5"),
    ("c", b"5"),
    ("d", b"1 Cyd"),
    ("d", b"1 Sam"),
    ("d", b"1 Di"),
    ("s", b"8 {tok} 4 {pos}"),
    ("s", b"7 {tok} 5 after"),
    ("a", b"5"),
    ("a", b"4"),
    ("s", b"0 {tok} 6"),
    ("b", b"5"),
    ("c", b"5"),
    ("d", b"5"),
]


class Transcript:
    """
    What a script of requests got: for each step, the socket, the
    datagram as the script wrote it, the reply (None for none, tokens
    written C{{tok}}), and the index of the daemon it went to.
    """

    def __init__(self):
        self.steps = []

    def replies(self):
        """The steps without the daemons: what must not depend on how many serve."""
        return [(who, datagram, reply) for who, datagram, reply, _ in self.steps]

    def daemons(self, who):
        """The daemons that C{who}'s requests went to, in order."""
        return [daemon for name, _, _, daemon in self.steps if name == who]


def play(testcase, steps, addresses, restart=None):
    """
    Send C{steps} from one UDP socket per name, each request to the next of
    C{addresses} in turn for that socket (a socket's first request goes to
    the daemon after the previous new socket's), waiting for each reply;
    return the L{Transcript}.  C{restart()} returns the addresses of the
    daemons started again, for a L{RESTART} step.
    """
    sockets = {}
    sent = {}
    last = {}
    known = {}  # {tok} and {pos}: the session's token and next position
    transcript = Transcript()
    for step in steps:
        if step[0] is RESTART:
            addresses = restart()
            continue
        who, template, *mark = step
        if who not in sockets:
            sockets[who] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            testcase.addCleanup(sockets[who].close)
            sockets[who].bind(("127.0.0.1", 0))
            sent[who] = len(sockets) - 1
        sock = sockets[who]
        if template is AGAIN:
            datagram, shown = last[who], b"again"
        else:
            datagram = template.replace(b"{tok}", known.get("tok", b"")).replace(b"{pos}", known.get("pos", b""))
            shown = template
        last[who] = datagram
        daemon = sent[who] % len(addresses)
        sent[who] += 1
        address = addresses[daemon]
        sock.sendto(datagram, address)
        reply = _reply(sock, address, SILENCE if mark == [NO_REPLY] else DEADLINE)
        if reply is not None:
            _learn(datagram, reply, known)
            if "tok" in known:
                reply = reply.replace(known["tok"], b"{tok}")
        transcript.steps.append((who, shown, reply, daemon))
    return transcript


def _answered(member, datagram):
    # [the reply] to datagram, or None if none came within the socket's timeout.
    member.socket.sendto(datagram, member.server_address)
    try:
        return [member.socket.recv(70000)]
    except TimeoutError:
        return None


def _reply(sock, address, timeout):
    # One datagram, from the daemon asked, or None after timeout seconds.
    sock.settimeout(timeout)
    try:
        reply, sender = sock.recvfrom(70000)
    except TimeoutError:
        return None
    if sender[:2] != address:
        raise AssertionError(f"a reply from {sender}, not from {address}: {reply!r}")
    return reply


def _learn(datagram, reply, known):
    # The token from a registration's reply, the next position from a poll's.
    head = reply.split(b"\n", 1)[0]
    registered = re.fullmatch(rb"0 ([0-9a-f]{32}) (\d+)", head)
    if datagram.startswith(b"6 ") and registered:
        known["tok"], known["pos"] = registered.groups()
    polled = re.fullmatch(rb"\d+ (\d+)", head)
    if datagram.startswith(b"8 ") and polled:
        known["pos"] = polled.group(1)


class RedisTestCase(SessionTestCase):
    """Daemons on Redis, Redis servers of a test's own, each ended when the test ends."""

    def redis(self, **kwargs):
        """A L{RedisServer} of this test's own, to stop, start or suspend."""
        redis = RedisServer(**kwargs)
        self.addCleanup(redis.close)
        return redis

    def daemons(self, count, redis, room, *options):
        """
        C{count} daemons serving group C{room} in C{redis}, each started
        once the one before answers (see L{answering}).
        """
        daemons = []
        for _ in range(count):
            daemons.append(self.server("--state", redis.url, "--room", room, *options))
            answering(daemons[-1])
        return daemons

    def chat_around(self, members, event, pauser=None):
        """
        L{chat} among C{members}, C{LINES} lines each; once C{pauser} (by
        default C{members[0]}) is halfway, it waits while the others go on
        and C{event()} runs in this thread (a redis-server started in a
        thread that ends dies with it), then says the rest of its lines.
        """
        pauser = members[0] if pauser is None else pauser
        halfway, done = threading.Event(), threading.Event()
        failures = []

        def midway(member):
            if member is pauser:
                halfway.set()
                if not done.wait(CHAT_DEADLINE):
                    raise AssertionError("the event mid-chat did not end")

        def run():
            try:
                chat(members, LINES, midway)
            except BaseException as e:
                failures.append(e)

        chatting = threading.Thread(target=run, name="chat", daemon=True)
        chatting.start()
        try:
            wait_for(lambda: halfway.is_set() or not chatting.is_alive(), timeout=CHAT_DEADLINE, interval=0.001)
            if halfway.is_set():
                event()
        finally:
            done.set()
            chatting.join(CHAT_DEADLINE + DEADLINE)
        if chatting.is_alive():
            raise AssertionError("the chat did not end")
        if failures:
            raise failures[0]


@requires_redis
class TwoDaemonsTests(RedisTestCase):
    """
    Two daemons on one Redis and one group, each socket's requests
    alternating between them: the protocol as one daemon serves it.
    """

    def test_alternating_daemons_reply_as_one_daemon_does(self):
        """A script of every kind of request gets, through two daemons in turn, one in-memory daemon's replies."""
        alone = self.server(*CONFORMANCE_OPTIONS)
        expected = play(self, CONFORMANCE, [alone.address()])
        pair = self.daemons(2, shared_redis(), new_room(), *CONFORMANCE_OPTIONS)
        got = play(self, CONFORMANCE, [daemon.address() for daemon in pair])
        self.assertEqual(got.replies(), expected.replies())
        # Each socket's requests went to one daemon and the other in turn,
        # and the rules were met, not merely matched.
        self.assertEqual(got.daemons("a")[:4], [0, 1, 0, 1])
        self.assertEqual(got.daemons("b")[:4], [1, 0, 1, 0])
        replies = expected.replies()
        self.assertEqual(replies[1], ("b", b"1 Al", ILLEGAL))
        self.assertIn(("b", b"5", b"[4 lines dropped]\nAl: three\nAl: four\nAl: five"), replies)
        self.assertIn(("d", b"6 %s Di" % OTHER_NONCE, b"0 refused room full"), replies)
        self.assertIn(("s", b"again", b"1"), replies)
        self.assertIn(("t", b"9 {tok} 4 Al", b"4 refused name taken"), replies)
        # The roaming request reached the daemon that the session's last did not.
        roam = next(i for i, step in enumerate(got.steps) if step[0] == "t")
        before = [step for step in got.steps[:roam] if step[0] == "s"]
        self.assertNotEqual(got.steps[roam][3], before[-1][3])
        self.assertTrue(pair[1].output.search(r"'Sam' moved from 127\.0\.0\.1:\d+ to 127\.0\.0\.1:\d+"))
        for daemon in pair:
            self.assertNotIn("Traceback", daemon.output.text())

    def test_an_idle_member_is_removed_once_for_the_group(self):
        """With --idle-timeout 1, both daemons sweep, and a silent member leaves once: one line, one log event."""
        pair = self.daemons(2, shared_redis(), new_room(), "--idle-timeout", "1")
        al = self.member(pair[0], name="Al")
        bo = self.member(pair[1], name="Bo")
        lines = []

        def poll():
            # Through each daemon in turn, so that Bo stays.
            bo.server_address = pair[len(lines) % 2].address()
            reply = bo.request(b"5")
            lines.append(reply)
            return b"Al has left the group" in reply

        wait_for(poll, timeout=DEADLINE, interval=0.05)
        # Another sweep of each daemon finds nobody left to remove.
        ends = time.monotonic() + 1.2
        while time.monotonic() < ends:
            poll()
            time.sleep(0.05)
        self.assertEqual([reply for reply in lines if reply], [b"Al has left the group"])
        removed = r"'Al' at 127\.0\.0\.1:\d+ removed after 1 seconds of silence"
        self.assertEqual(sum(count_lines(daemon, removed) for daemon in pair), 1)
        self.assertEqual(al.request(b"5"), ILLEGAL)


@requires_redis
class SharedPortFailoverTests(RedisTestCase):
    """
    Two daemons sharing one port (C{--reuse-port}), session members spread
    over them by the kernel, and one daemon killed mid-chat.
    """

    def served_by(self, daemons, name, source):
        """The index of the one of C{daemons} that logged C{name} joining from C{source}."""
        joined = rf"'{name}' joined from 127\.0\.0\.1:{source[1]}\b"
        return wait_for(lambda: [i for i, daemon in enumerate(daemons) if daemon.output.search(joined)])[0]

    def spread(self, address, daemons, each=2, most=16):
        """
        Register session members m0, m1... at C{address} until each of
        C{daemons} has served at least C{each} registrations; return them,
        and the index of the daemon that served each.
        """
        members, served = [], []
        while min(served.count(i) for i in range(len(daemons))) < each:
            self.assertLess(len(members), most, f"the kernel gave every member to one daemon: {served}")
            member = self.session_member(address, f"m{len(members)}")
            served.append(self.served_by(daemons, member.name, member.source))
            members.append(member)
        return members, served

    def test_kill_9_of_one_daemon_loses_and_repeats_nothing(self):
        """kill -9 of one of two daemons on one port mid-chat: each acknowledged line once to each other member."""
        redis, room, port = shared_redis(), new_room(), free_port()
        daemons = self.daemons(2, redis, room, "--port", str(port), "--reuse-port")
        self.assertEqual([daemon.port for daemon in daemons], [port, port])
        victim, survivor = daemons
        address = ("127.0.0.1", port)
        # A 1.0 member that the kernel sends to the daemon to be killed;
        # those sent to the other stay silent members.  The probe that
        # waited for the second daemon may have reached the first: a join
        # the second read before it could store anything is sent again.
        for i in range(16):
            old = self.member(address)
            old.socket.settimeout(SILENCE)
            (joined,) = wait_for(lambda: _answered(old, b"1 Old%d" % i), interval=0)
            self.assertNotEqual(joined, ILLEGAL)
            old.socket.settimeout(DEADLINE)
            if self.served_by(daemons, f"Old{i}", old.socket.getsockname()) == 0:
                break
        else:
            self.fail("the kernel sent no 1.0 member to the first daemon")
        members, served = self.spread(address, daemons)
        killed = []

        def kill():
            victim.process.send_signal(signal.SIGKILL)
            killed.append(victim.process.wait(DEADLINE))

        # Half of one of its members' lines are said after it is killed.
        self.chat_around(members, kill, pauser=members[served.index(0)])
        self.assertEqual(killed, [-signal.SIGKILL])
        self.assert_chat_delivered(members, LINES)
        # The 1.0 member is still a member, now served by the survivor.
        self.assertTrue(old.request(b"5").startswith(b"m0 has joined\nm1 has joined"))
        self.assertIsNone(survivor.output.search(r" left$| removed after "))
        self.assertNotIn("Traceback", survivor.output.text())


@requires_redis
class RedisOutageTests(RedisTestCase):
    """
    Redis stopped and started, or hung, under daemons serving a group: no
    reply for what is not stored, one log line for the outage and one for
    the recovery, and the chat goes on.
    """

    def test_redis_stopped_and_started_under_load(self):
        """Redis stopped mid-chat: requests then get no reply; once it is back, every acknowledged line arrives once."""
        redis = self.redis()
        daemons = self.daemons(2, redis, new_room())
        old = self.member(daemons[0], name="Old")
        members = [
            self.session_member(daemons[i % 2].address(), f"m{i}") for i in range(4)
        ]

        def outage():
            redis.stop()
            # Neither daemon can store anything now: no reply, from either.
            for daemon in daemons:
                old.socket.sendto(b"2 said while Redis was down", daemon.address())
            old.socket.sendto(b"5", daemons[1].address())
            old.expect_silence(1.0)
            for daemon in daemons:
                wait_for(lambda: daemon.output.search(NOT_ANSWERING))
            redis.start()

        self.chat_around(members, outage)
        # Nothing that got no reply was delivered: the others got only the chat.
        self.assert_chat_delivered(members, LINES)
        for daemon in daemons:
            self.assertEqual(count_lines(daemon, NOT_ANSWERING), 1, daemon.output.text())
            self.assertEqual(count_lines(daemon, ANSWERING), 1, daemon.output.text())
            self.assertLess(line_number(daemon, NOT_ANSWERING), line_number(daemon, ANSWERING))
            self.assertNotIn("Traceback", daemon.output.text())
        old.server_address = daemons[1].address()
        self.assertTrue(old.request(b"5").startswith(b"m0 has joined\nm1 has joined"))

    def test_a_hung_redis_times_out_and_gets_no_reply(self):
        """Redis stopped (SIGSTOP): a request gets no reply, the call times out after CALL_TIMEOUT and says so once."""
        redis = self.redis()
        (daemon,) = self.daemons(1, redis, new_room())
        al, bo = self.member(daemon, name="Al"), self.member(daemon, name="Bo")
        redis.suspend()
        hung_at = time.monotonic()
        al.socket.sendto(b"2 said while Redis hung", daemon.address())
        wait_for(lambda: daemon.output.search(NOT_ANSWERING), timeout=CALL_TIMEOUT + DEADLINE)
        self.assertGreaterEqual(time.monotonic() - hung_at, CALL_TIMEOUT - 0.5)
        redis.resume()
        # Polled until the daemon, connected again, answers.
        bo.socket.settimeout(SILENCE)
        wait_for(lambda: _answered(bo, b"5"), interval=0)
        wait_for(lambda: daemon.output.search(ANSWERING))
        al.expect_silence(SILENCE)
        self.assertEqual(count_lines(daemon, NOT_ANSWERING), 1, daemon.output.text())
        self.assertEqual(count_lines(daemon, ANSWERING), 1, daemon.output.text())
        self.assertNotIn("Traceback", daemon.output.text())


@requires_redis
class RestartTests(RedisTestCase):
    """Every daemon of a group stopped and new ones started: the group is intact."""

    def test_group_survives_a_restart_of_every_daemon(self):
        """Members, names, pending lines and sessions after SIGTERM of both daemons, as with one on a SQLite file."""
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        path = os.path.join(directory.name, "room.db")
        alone = [self.server("--state", path)]

        def restart_alone():
            self.assertIn(alone[0].stop(), (0, -signal.SIGTERM))
            alone[0] = self.server("--state", path)
            return [alone[0].address()]

        expected = play(self, RESTART_SCRIPT, [alone[0].address()], restart_alone)
        redis, room = shared_redis(), new_room()
        pair = [self.daemons(2, redis, room)]

        def restart_pair():
            for daemon in pair[0]:
                self.assertIn(daemon.stop(), (0, -signal.SIGTERM))
                self.assertTrue(daemon.output.search(rf"udpchat stopped: the group stays in Redis at .*, group {room}$"))
            pair[0] = self.daemons(2, redis, room)
            return [daemon.address() for daemon in pair[0]]

        got = play(self, RESTART_SCRIPT, [daemon.address() for daemon in pair[0]], restart_pair)
        self.assertEqual(got.replies(), expected.replies())
        replies = expected.replies()
        after = replies[replies.index(("s", b"7 {tok} 3 before", b"3")) + 1 :]
        self.assertEqual(after[0], ("s", b"again", b"3"))
        self.assertIn(("d", b"1 Cyd", ILLEGAL), after)
        self.assertIn(("d", b"1 Di", b"Sam, Cyd, Bo, Al"), after)
        self.assertIn(("s", b"7 {tok} 5 after", b"5"), after)
        self.assertIn(("c", b"5", b"Sam has joined\nAl: hello\nBo: hi\nSam: Sam here\nBo: for Sam\nSam: before"), after)


@requires_redis
class StartUpTests(RedisTestCase):
    """What a daemon says when its Redis cannot serve it: one line, never the password."""

    def test_unreachable_redis_is_a_one_line_error(self):
        """A Redis nobody listens for: one usage error line naming where, exit status 1."""
        port = free_tcp_port()
        reason = self.usage_error("--state", f"redis://127.0.0.1:{port}/0", "--room", new_room())
        self.assertIn(f"cannot reach Redis at 127.0.0.1:{port}", reason)

    def test_wrong_password_is_refused_without_showing_it(self):
        """A wrong password (with a user or without), none, or a bad URL: one line, and no password in it."""
        redis = self.redis(password="right-secret-4242")
        where = f"127.0.0.1:{redis.port}"
        for url, refused in [
            (f"redis://:wrong-secret-1717@{where}", "AUTH"),
            (f"redis://default:wrong%40secret-1717@{where}/0", "AUTH"),
            (f"redis://{where}", "INFO"),
            (f"redis://:right-secret-4242@{where}/99", "SELECT"),
        ]:
            reason = self.usage_error("--state", url, "--room", new_room())
            self.assertIn(f"Redis at {where} refused {refused}: ", reason)
            self.assertNotIn("secret", reason)
        reason = self.usage_error("--state", "redis://:wrong-secret-1717@127.0.0.1:99999")
        self.assertIn("redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]", reason)
        self.assertNotIn("secret", reason)

    def test_right_password_is_never_logged(self):
        """A daemon given the right password serves, and its output never shows the password."""
        redis = self.redis(password="right-secret-4242")
        (daemon,) = self.daemons(1, redis, new_room())
        self.assertEqual(self.member(daemon).request(b"1 Al"), b"")
        self.assertIn(daemon.stop(), (0, -signal.SIGTERM))
        self.assertTrue(daemon.output.search(rf"stays in Redis at redis://127\.0\.0\.1:{redis.port}/0"))
        self.assertNotIn("secret", daemon.output.text())

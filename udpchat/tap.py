"""
The twistd plugin's command line (C{twistd udpchat --help}) and service.

Every option is checked here, and the socket is bound here too, so that a bad
value, a port in use or a permission problem is a one-line usage error before
twistd daemonizes, never a traceback afterwards.
"""

import ipaddress

from twisted.logger import LogLevel
from twisted.python import usage

from udpchat import limits, store
from udpchat.binding import ReceiveBufferTooSmall, bind_udp
from udpchat.room import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_MEMBERS,
    DEFAULT_MAX_PENDING,
    DEFAULT_MAX_REPLY_BYTES,
    Room,
)
from udpchat.server import ChatServerProtocol, ChatService

DEFAULT_PORT = 12345
DEFAULT_MAX_MEMBERS_PER_PREFIX = 100
DEFAULT_REQUEST_RATE = 200
DEFAULT_REQUEST_BURST = 400
DEFAULT_REPLY_RATE = 128 * 1024
DEFAULT_REPLY_BURST = 256 * 1024
LARGEST_UDP_PAYLOAD = 65507  # 65535 - 8 (UDP header) - 20 (IPv4 header)
LOG_LEVELS = ("debug", "info", "warn", "error", "critical")
A_YEAR = 366 * 24 * 3600


class Options(usage.Options):
    """
    Options of C{twistd udpchat}.  After parsing, C{self["socket"]} is the
    bound socket that L{makeService} serves on, and C{self["exempt"]} the
    list of exempt networks.
    """

    synopsis = "[options]"
    longdesc = (
        "Run a udpchat group-chat server. Clients send one request per UDP "
        "datagram; see README.rst for the protocol and for the reasoning "
        "behind each limit's default."
    )
    optParameters = [
        ["port", "p", str(DEFAULT_PORT), "UDP port to listen on; 0 picks a free port."],
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
            f"Largest reply datagram, {DEFAULT_MAX_REPLY_BYTES} to "
            f"{LARGEST_UDP_PAYLOAD} bytes.",
        ],
        ["max-members", None, str(DEFAULT_MAX_MEMBERS), "Most members in the room."],
        [
            "max-members-per-prefix",
            None,
            None,
            "Most members from one IPv4 /24 or IPv6 /64 "
            f"[default: {DEFAULT_MAX_MEMBERS_PER_PREFIX}, or --max-members if lower].",
        ],
        [
            "max-pending",
            None,
            str(DEFAULT_MAX_PENDING),
            "Most lines waiting for one member; older ones are dropped, "
            "and the member told how many.",
        ],
        [
            "idle-timeout",
            None,
            str(int(DEFAULT_IDLE_TIMEOUT)),
            "Seconds of silence after which a member is removed; 0: never.",
        ],
        [
            "request-rate",
            None,
            str(DEFAULT_REQUEST_RATE),
            "Requests per second allowed from one IPv4 address or IPv6 /64.",
        ],
        [
            "request-burst",
            None,
            str(DEFAULT_REQUEST_BURST),
            "Requests one IPv4 address or IPv6 /64 may send at once.",
        ],
        [
            "reply-rate",
            None,
            str(DEFAULT_REPLY_RATE),
            "Reply bytes per second (headers included) sent to one "
            "IPv4 /24 or IPv6 /56.",
        ],
        [
            "reply-burst",
            None,
            str(DEFAULT_REPLY_BURST),
            "Reply bytes one IPv4 /24 or IPv6 /56 may be sent at once; at "
            "least --max-reply-bytes + 48.",
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
            "Kernel receive buffer (SO_RCVBUF) in bytes, to absorb bursts "
            "[default: the system's].",
        ],
        [
            "state",
            None,
            None,
            "SQLite file that keeps the room across restarts and crashes "
            "[default: none, the room lives in memory].",
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
    ]

    def postOptions(self):
        self["port"] = _number("--port", self["port"], 0, 65535)
        self["max-reply-bytes"] = _number(
            "--max-reply-bytes",
            self["max-reply-bytes"],
            DEFAULT_MAX_REPLY_BYTES,
            LARGEST_UDP_PAYLOAD,
        )
        self["max-members"] = _number("--max-members", self["max-members"], 1, 10**6)
        if self["max-members-per-prefix"] is None:
            self["max-members-per-prefix"] = min(
                DEFAULT_MAX_MEMBERS_PER_PREFIX, self["max-members"]
            )
        else:
            self["max-members-per-prefix"] = _number(
                "--max-members-per-prefix",
                self["max-members-per-prefix"],
                1,
                self["max-members"],
                "(--max-members)",
            )
        self["max-pending"] = _number("--max-pending", self["max-pending"], 1, 10**6)
        self["idle-timeout"] = _number("--idle-timeout", self["idle-timeout"], 0, A_YEAR)
        self["request-rate"] = _number("--request-rate", self["request-rate"], 1, 10**6)
        self["request-burst"] = _number("--request-burst", self["request-burst"], 1, 10**6)
        self["reply-rate"] = _number("--reply-rate", self["reply-rate"], 1, 10**9)
        self["reply-burst"] = _number(
            "--reply-burst",
            self["reply-burst"],
            self["max-reply-bytes"] + limits.IPV6_HEADER_BYTES,
            10**9,
            "(--max-reply-bytes + 48, so that the largest reply can be sent)",
        )
        try:
            self["exempt"] = limits.parse_networks(self["exempt"])
        except ValueError as e:
            raise usage.UsageError(f"--exempt: {e}") from None
        if self["receive-buffer"] is not None:
            self["receive-buffer"] = _number(
                "--receive-buffer", self["receive-buffer"], 4096, 2**29
            )
        if self["state-sync"] not in store.SYNCHRONOUS:
            raise usage.UsageError(
                f"--state-sync must be one of {', '.join(store.SYNCHRONOUS)}, "
                f"not {self['state-sync']!r}"
            )
        if self["state"] is not None:
            # Read-only now; written only in startService, after the fork.
            try:
                store.check(self["state"])
                self["state-lock"] = store.lock(self["state"])
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
            self["socket"] = bind_udp(interface, self["port"], self["receive-buffer"])
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


def _number(option, text, low, high, why=""):
    """Parse C{text} as a whole number from C{low} to C{high}."""
    if not (text.isascii() and text.isdigit() and low <= int(text) <= high):
        raise usage.UsageError(
            f"{option} must be a whole number from {low} to {high}"
            f"{' ' + why if why else ''}, not {text!r}"
        )
    return int(text)


def makeService(config, reactor=None):
    """
    Build the udpchat service from parsed L{Options}.
    """
    if reactor is None:
        from twisted.internet import reactor
    limiter = limits.Limiter(
        limits.Classifier(config["exempt"]),
        requests=limits.TokenBuckets(config["request-rate"], config["request-burst"]),
        replies=limits.TokenBuckets(config["reply-rate"], config["reply-burst"]),
        max_reply_bytes=config["max-reply-bytes"],
    )
    room = Room(
        max_reply_bytes=config["max-reply-bytes"],
        max_members=config["max-members"],
        max_pending=config["max-pending"],
        idle_timeout=config["idle-timeout"],
        group_of=limiter.group_of,
        max_members_per_group=config["max-members-per-prefix"],
    )
    state = None
    if config["state"] is not None:
        state = store.Store(config["state"], synchronous=config["state-sync"])
    protocol = ChatServerProtocol(
        room, reactor, log_level=config["log-level"], limiter=limiter, store=state
    )
    return ChatService(config["socket"], protocol, reactor)

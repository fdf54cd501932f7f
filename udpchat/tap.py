"""
The twistd plugin's command line (C{twistd udpchat --help}) and service.

Every option is checked here, and the socket is bound here too, so that a bad
value, a port in use or a permission problem is a one-line usage error before
twistd daemonizes, never a traceback afterwards.
"""

import ipaddress

from twisted.logger import LogLevel
from twisted.python import usage

from udpchat.binding import bind_udp
from udpchat.room import DEFAULT_MAX_REPLY_BYTES, Room
from udpchat.server import ChatServerProtocol, ChatService

DEFAULT_PORT = 12345
LARGEST_UDP_PAYLOAD = 65507  # 65535 - 8 (UDP header) - 20 (IPv4 header)
LOG_LEVELS = ("debug", "info", "warn", "error", "critical")


class Options(usage.Options):
    """
    Options of C{twistd udpchat}.  After parsing, C{self["socket"]} is the
    bound socket that L{makeService} serves on.
    """

    synopsis = "[options]"
    longdesc = (
        "Run a udpchat group-chat server. Clients send one request per UDP "
        "datagram; see README.rst for the protocol."
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
            self["socket"] = bind_udp(interface, self["port"])
        except OSError as e:
            where = "every interface" if interface is None else interface
            raise usage.UsageError(
                f"cannot listen on UDP port {self['port']} of {where}: "
                f"{e.strerror or e}"
            ) from None


def _number(option, text, low, high):
    """Parse C{text} as a whole number from C{low} to C{high}."""
    if not (text.isascii() and text.isdigit() and low <= int(text) <= high):
        raise usage.UsageError(
            f"{option} must be a whole number from {low} to {high}, not {text!r}"
        )
    return int(text)


def makeService(config, reactor=None):
    """
    Build the udpchat service from parsed L{Options}.
    """
    if reactor is None:
        from twisted.internet import reactor
    room = Room(max_reply_bytes=config["max-reply-bytes"])
    protocol = ChatServerProtocol(room, reactor, log_level=config["log-level"])
    return ChatService(config["socket"], protocol, reactor)

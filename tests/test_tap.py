"""
Tests for L{udpchat.tap}: the twistd command line and the service it builds,
and for L{udpchat.binding}, which binds the socket while options are checked.

Every parse passes C{--interface} with a loopback address and C{--port 0}, so
no test binds a public or fixed port.
"""

import os
import socket

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.internet.testing import FakeDatagramTransport
from twisted.logger import LogLevel, capturedLogs
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from udpchat.binding import bind_udp
from udpchat.server import ChatServerProtocol, ChatService
from udpchat.tap import Options, makeService

LOOPBACK = ["--interface", "127.0.0.1", "--port", "0"]


class OptionsTestMixin:
    """
    Parse options, closing whatever socket they bind.
    """

    def parse(self, *args):
        """Parse C{args}; return the options, whose socket closes after the test."""
        config = Options()
        config.parseOptions(list(args))
        self.addCleanup(config["socket"].close)
        return config

    def usage_error(self, *args):
        """Parse C{args}, which must fail; return the usage error's message."""
        config = Options()
        try:
            config.parseOptions(list(args))
        except usage.UsageError as e:
            return str(e)
        config["socket"].close()
        self.fail(f"{args!r} parsed: {dict(config)!r}")

    def free_port(self, interface="127.0.0.1"):
        """A UDP port number that was free a moment ago."""
        sock = bind_udp(interface, 0)
        port = sock.getsockname()[1]
        sock.close()
        return port


class OptionsTests(OptionsTestMixin, SynchronousTestCase):
    """
    Tests for L{Options}: values, defaults and the bound socket.
    """

    def test_documented_defaults(self):
        """The defaults are the ones README.rst documents."""
        defaults = {name: default for name, _, default, _ in Options.optParameters}
        self.assertEqual(
            defaults,
            {
                "port": "12345",
                "interface": None,
                "max-reply-bytes": "1200",
                "max-members": "1000",
                "max-members-per-prefix": None,
                "max-pending": "1000",
                "idle-timeout": "3600",
                "request-rate": "200",
                "request-burst": "400",
                "reply-rate": "131072",
                "reply-burst": "262144",
                "exempt": "127.0.0.0/8,::1/128",
                "receive-buffer": None,
                "state": None,
                "state-sync": "normal",
                "log-level": "info",
            },
        )

    def test_help_shows_defaults(self):
        """The help text states the default port, reply cap and log level."""
        text = " ".join(str(Options()).split())
        self.assertIn("[default: 12345]", text)
        self.assertIn("[default: 1200]", text)
        self.assertIn("[default: info]", text)

    def test_parsed_defaults(self):
        """Without those options, the reply cap is 1200 and the level info."""
        config = self.parse(*LOOPBACK)
        self.assertEqual(config["max-reply-bytes"], 1200)
        self.assertIs(config["log-level"], LogLevel.info)

    def test_socket_is_bound_after_parsing(self):
        """After parsing, C{config["socket"]} is a non-blocking bound UDP socket."""
        config = self.parse(*LOOPBACK)
        sock = config["socket"]
        self.assertIsInstance(sock, socket.socket)
        self.assertEqual(sock.type, socket.SOCK_DGRAM)
        self.assertFalse(sock.getblocking())
        host, port = sock.getsockname()
        self.assertEqual(host, "127.0.0.1")
        self.assertNotEqual(port, 0)

    def test_port_zero_is_accepted(self):
        """Port 0 is accepted and picks a free port."""
        config = self.parse(*LOOPBACK)
        self.assertEqual(config["port"], 0)
        self.assertNotEqual(config["socket"].getsockname()[1], 0)

    def test_given_port_is_bound(self):
        """A free port given with --port is the one bound, as an int."""
        port = self.free_port()
        config = self.parse("--interface", "127.0.0.1", "--port", str(port))
        self.assertEqual(config["port"], port)
        self.assertEqual(config["socket"].getsockname(), ("127.0.0.1", port))

    def test_short_port_option(self):
        """-p is --port."""
        config = self.parse("--interface", "127.0.0.1", "-p", "0")
        self.assertEqual(config["port"], 0)

    def test_smallest_max_reply_bytes_is_accepted(self):
        """--max-reply-bytes 1200 is accepted, as an int."""
        config = self.parse(*LOOPBACK, "--max-reply-bytes", "1200")
        self.assertEqual(config["max-reply-bytes"], 1200)

    def test_largest_max_reply_bytes_is_accepted(self):
        """--max-reply-bytes 65507, the largest UDP payload over IPv4, is accepted."""
        config = self.parse(*LOOPBACK, "--max-reply-bytes", "65507")
        self.assertEqual(config["max-reply-bytes"], 65507)

    def test_log_levels_are_parsed(self):
        """Each --log-level name becomes its L{LogLevel}."""
        expected = {
            "debug": LogLevel.debug,
            "info": LogLevel.info,
            "warn": LogLevel.warn,
            "error": LogLevel.error,
            "critical": LogLevel.critical,
        }
        parsed = {
            name: self.parse(*LOOPBACK, "--log-level", name)["log-level"]
            for name in expected
        }
        self.assertEqual(parsed, expected)

    def test_ipv6_interface_gives_ipv6_socket(self):
        """--interface ::1 binds an AF_INET6 socket on ::1."""
        config = self.parse("--interface", "::1", "--port", "0")
        sock = config["socket"]
        self.assertEqual(sock.family, socket.AF_INET6)
        self.assertEqual(sock.getsockname()[0], "::1")

    def test_ipv4_interface_gives_ipv4_socket(self):
        """--interface 127.0.0.1 binds an AF_INET socket."""
        config = self.parse(*LOOPBACK)
        self.assertEqual(config["socket"].family, socket.AF_INET)


class OptionsErrorTests(OptionsTestMixin, SynchronousTestCase):
    """
    Tests for the usage errors of L{Options}: each names the bad option.
    """

    def assert_port_refused(self, value):
        """Parsing --port C{value} must fail naming the option and value."""
        message = self.usage_error("--interface", "127.0.0.1", "--port", value)
        self.assertIn("--port", message)
        self.assertIn(repr(value), message)

    def test_port_not_a_number(self):
        """--port abc is a usage error naming --port."""
        self.assert_port_refused("abc")

    def test_port_negative(self):
        """--port -1 is a usage error naming --port."""
        self.assert_port_refused("-1")

    def test_port_too_large(self):
        """--port 65536 and 70000 are usage errors naming --port."""
        self.assert_port_refused("65536")
        self.assert_port_refused("70000")

    def test_port_with_space(self):
        """--port ' 5' is a usage error naming --port."""
        self.assert_port_refused(" 5")

    def test_port_with_sign(self):
        """--port +5 is a usage error naming --port."""
        self.assert_port_refused("+5")

    def test_port_non_ascii_digit(self):
        """--port with an Arabic-Indic five is a usage error naming --port."""
        self.assert_port_refused("\u0665")

    def test_port_empty(self):
        """An empty --port is a usage error naming --port."""
        self.assert_port_refused("")

    def test_port_range_in_message(self):
        """The --port error states the accepted range."""
        message = self.usage_error("--interface", "127.0.0.1", "--port", "abc")
        self.assertIn("0 to 65535", message)

    def assert_max_reply_bytes_refused(self, value):
        """Parsing --max-reply-bytes C{value} must fail, stating the range."""
        message = self.usage_error(*LOOPBACK, "--max-reply-bytes", value)
        self.assertIn("--max-reply-bytes", message)
        self.assertIn(repr(value), message)
        self.assertIn("1200 to 65507", message)

    def test_max_reply_bytes_too_small(self):
        """--max-reply-bytes 1199 is a usage error naming the option."""
        self.assert_max_reply_bytes_refused("1199")

    def test_max_reply_bytes_too_large(self):
        """--max-reply-bytes 65508 is a usage error naming the option."""
        self.assert_max_reply_bytes_refused("65508")

    def test_max_reply_bytes_not_a_number(self):
        """--max-reply-bytes x is a usage error naming the option."""
        self.assert_max_reply_bytes_refused("x")

    def assert_interface_refused(self, value):
        """Parsing --interface C{value} must fail naming the option and value."""
        message = self.usage_error("--interface", value, "--port", "0")
        self.assertIn("--interface", message)
        self.assertIn(repr(value), message)

    def test_interface_not_an_ip(self):
        """--interface not-an-ip is a usage error naming --interface."""
        self.assert_interface_refused("not-an-ip")

    def test_interface_host_name(self):
        """--interface localhost is a usage error: host names are not resolved."""
        self.assert_interface_refused("localhost")

    def test_interface_octet_out_of_range(self):
        """--interface 999.1.1.1 is a usage error naming --interface."""
        self.assert_interface_refused("999.1.1.1")

    def test_log_level_unknown(self):
        """--log-level verbose is a usage error listing the levels."""
        message = self.usage_error(*LOOPBACK, "--log-level", "verbose")
        self.assertIn("--log-level", message)
        self.assertIn("'verbose'", message)
        self.assertIn("debug, info, warn, error, critical", message)

    def test_unknown_option(self):
        """An unknown option is a usage error naming it."""
        message = self.usage_error(*LOOPBACK, "--bogus")
        self.assertIn("--bogus", message)

    def test_port_in_use(self):
        """A port already bound is a usage error naming the port and interface."""
        taken = bind_udp("127.0.0.1", 0)
        self.addCleanup(taken.close)
        port = taken.getsockname()[1]
        message = self.usage_error("--interface", "127.0.0.1", "--port", str(port))
        self.assertIn(f"port {port}", message)
        self.assertIn("127.0.0.1", message)


class BindUDPTests(SynchronousTestCase):
    """
    Tests for L{bind_udp}.
    """

    def bind(self, interface, port=0):
        """Bind with L{bind_udp}; the socket closes after the test."""
        sock = bind_udp(interface, port)
        self.addCleanup(sock.close)
        return sock

    def test_every_interface_is_dual_stack(self):
        """Without an interface, the socket is IPv6 on :: with IPV6_V6ONLY off."""
        sock = self.bind(None)
        self.assertEqual(sock.family, socket.AF_INET6)
        self.assertEqual(sock.getsockname()[0], "::")
        self.assertEqual(
            sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY), 0
        )

    def test_ipv4_interface(self):
        """An IPv4 literal gives a non-blocking AF_INET socket bound to it."""
        sock = self.bind("127.0.0.1")
        self.assertEqual(sock.family, socket.AF_INET)
        self.assertEqual(sock.getsockname()[0], "127.0.0.1")
        self.assertFalse(sock.getblocking())

    def test_ipv6_interface(self):
        """An IPv6 literal gives a non-blocking AF_INET6 socket bound to it."""
        sock = self.bind("::1")
        self.assertEqual(sock.family, socket.AF_INET6)
        self.assertEqual(sock.getsockname()[0], "::1")
        self.assertFalse(sock.getblocking())

    def test_port_in_use_raises(self):
        """Binding a port already bound raises L{OSError}."""
        port = self.bind("127.0.0.1").getsockname()[1]
        self.assertRaises(OSError, bind_udp, "127.0.0.1", port)


class MakeServiceTests(OptionsTestMixin, SynchronousTestCase):
    """
    Tests for L{makeService}; the service is built, never started.
    """

    def make(self, *args, reactor=None):
        """Parse C{args} and build the service, on a L{Clock} by default."""
        config = self.parse(*LOOPBACK, *args)
        if reactor is None:
            reactor = Clock()
        return config, makeService(config, reactor=reactor)

    def test_returns_chat_service(self):
        """makeService returns a L{ChatService} around a L{ChatServerProtocol}."""
        config, service = self.make()
        self.assertIsInstance(service, ChatService)
        self.assertIsInstance(service.protocol, ChatServerProtocol)
        self.assertFalse(service.running)

    def test_service_serves_the_parsed_socket(self):
        """The service owns the socket the options bound."""
        config, service = self.make()
        self.assertIs(service._socket, config["socket"])

    def test_max_reply_bytes_passed_to_room(self):
        """The room's reply cap is the --max-reply-bytes value."""
        config, service = self.make("--max-reply-bytes", "4000")
        self.assertEqual(service.protocol.room.max_reply_bytes, 4000)

    def test_default_max_reply_bytes_passed_to_room(self):
        """Without --max-reply-bytes, the room's reply cap is 1200."""
        config, service = self.make()
        self.assertEqual(service.protocol.room.max_reply_bytes, 1200)

    def test_debug_logs_requests(self):
        """--log-level debug makes the protocol log every request."""
        config, service = self.make("--log-level", "debug")
        self.assertTrue(service.protocol._log_requests)

    def test_info_does_not_log_requests(self):
        """The default log level does not log every request."""
        config, service = self.make()
        self.assertFalse(service.protocol._log_requests)

    def test_log_level_filters_protocol_events(self):
        """--log-level warn reaches the protocol: a join logs nothing."""
        config, service = self.make("--log-level", "warn")
        proto = service.protocol
        transport = FakeDatagramTransport()
        proto.makeConnection(transport)
        with capturedLogs() as events:
            proto.datagramReceived(b"1 Al", ("127.0.0.1", 4000))
        self.assertEqual(events, [])
        self.assertEqual(transport.written, [(b"", ("127.0.0.1", 4000))])

    def test_reactor_is_the_protocol_clock(self):
        """The given reactor is the service's reactor and the protocol's clock."""
        clock = Clock()
        config, service = self.make(reactor=clock)
        self.assertIs(service._reactor, clock)
        self.assertIs(service.protocol._clock, clock)

    def test_default_reactor_is_global(self):
        """Without a reactor, makeService uses the global reactor."""
        config = self.parse(*LOOPBACK)
        service = makeService(config)
        self.assertIs(service._reactor, reactor)
        self.assertIs(service.protocol._clock, reactor)


class LimitOptionsTests(OptionsTestMixin, SynchronousTestCase):
    """
    Every limit option at, just under and just over its bounds, and the
    combinations that make no sense.
    """

    # option: (lowest accepted, highest accepted)
    BOUNDS = {
        "--max-members": (1, 10**6),
        "--max-pending": (1, 10**6),
        "--idle-timeout": (0, 366 * 24 * 3600),
        "--request-rate": (1, 10**6),
        "--request-burst": (1, 10**6),
        "--reply-rate": (1, 10**9),
        "--reply-burst": (1248, 10**9),
        "--max-members-per-prefix": (1, 1000),
    }

    def test_bounds_are_accepted(self):
        """The lowest and highest value of each option parse to that number."""
        for option, (low, high) in self.BOUNDS.items():
            for value in (low, high):
                config = self.parse(*LOOPBACK, option, str(value))
                self.assertEqual(config[option[2:]], value, option)

    def test_beyond_bounds_are_usage_errors(self):
        """One below the lowest, one above the highest, and junk are refused, naming the option."""
        for option, (low, high) in self.BOUNDS.items():
            for value in (str(low - 1), str(high + 1), "", "1.5", "-1", "ten", " 5"):
                if value == "-1" and low == 0:
                    continue  # that is the "one below" case already
                message = self.usage_error(*LOOPBACK, option, value)
                self.assertIn(option, message)
                self.assertIn(repr(value), message)

    def test_per_prefix_default_follows_a_smaller_room(self):
        """Without --max-members-per-prefix, a room of 10 allows 10 per prefix."""
        config = self.parse(*LOOPBACK, "--max-members", "10")
        self.assertEqual(config["max-members-per-prefix"], 10)

    def test_per_prefix_above_room_size_is_refused(self):
        """More members per prefix than in the room makes no sense."""
        message = self.usage_error(*LOOPBACK, "--max-members", "10", "--max-members-per-prefix", "11")
        self.assertIn("--max-members-per-prefix must be a whole number from 1 to 10", message)

    def test_reply_burst_must_hold_the_largest_reply(self):
        """A reply budget that could never pay for the largest reply is refused."""
        self.parse(*LOOPBACK, "--max-reply-bytes", "4000", "--reply-burst", "4048")
        message = self.usage_error(*LOOPBACK, "--max-reply-bytes", "4000", "--reply-burst", "4047")
        self.assertIn("--max-reply-bytes + 48", message)

    def test_exempt_networks(self):
        """--exempt takes networks, or none."""
        config = self.parse(*LOOPBACK, "--exempt", "10.0.0.0/8,::1")
        none = self.parse(*LOOPBACK, "--exempt", "none")
        self.assertEqual(([str(n) for n in config["exempt"]], none["exempt"]), (["10.0.0.0/8", "::1/128"], []))

    def test_bad_exempt_is_usage_error(self):
        """An --exempt that is not a list of networks is refused."""
        for value in ("localhost", "10.0.0.0/40", "127.0.0.1,"):
            self.assertIn("--exempt", self.usage_error(*LOOPBACK, "--exempt", value))

    def test_receive_buffer_is_set(self):
        """--receive-buffer sets SO_RCVBUF on the bound socket (Linux reports it doubled)."""
        config = self.parse(*LOOPBACK, "--receive-buffer", "65536")
        self.assertGreaterEqual(
            config["socket"].getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF), 65536
        )

    def test_receive_buffer_bounds(self):
        """--receive-buffer is 4096 to 2**29 bytes."""
        for value in ("4095", str(2**29 + 1), "big"):
            self.assertIn("--receive-buffer", self.usage_error(*LOOPBACK, "--receive-buffer", value))

    def test_limits_reach_room_and_limiter(self):
        """makeService gives the room and the limiter the parsed values."""
        config = self.parse(
            *LOOPBACK,
            *("--max-members", "50", "--max-members-per-prefix", "5", "--max-pending", "7"),
            *("--idle-timeout", "0", "--request-rate", "3", "--request-burst", "4"),
            *("--reply-rate", "5000", "--reply-burst", "6000"),
        )
        protocol = makeService(config, reactor=Clock()).protocol
        room, limiter = protocol.room, protocol._limiter
        self.assertEqual(
            (
                room.max_members,
                room.max_members_per_group,
                room.max_pending,
                room.idle_timeout,
                (limiter.requests.rate, limiter.requests.burst),
                (limiter.replies.rate, limiter.replies.burst),
                room.group_of(("192.0.2.1", 5)) == room.group_of(("192.0.2.200", 6)),
                room.group_of(("127.0.0.1", 5)),
            ),
            (50, 5, 7, 0, (3, 4), (5000, 6000), True, None),
        )


class DocumentationTests(SynchronousTestCase):
    """
    README.rst documents every option with its default.
    """

    def test_every_option_is_documented_with_its_default(self):
        from pathlib import Path

        readme = (Path(__file__).parent.parent / "README.rst").read_text()
        for name, _, default, _ in Options.optParameters:
            row = next(
                (line for line in readme.splitlines() if line.replace("``-p``, ", "").startswith(f"``--{name}``")),
                None,
            )
            self.assertIsNotNone(row, name)
            if default is not None and name != "exempt":
                self.assertIn(f" {default} ", f" {row} ".replace("``", " "), name)
        self.assertIn("``127.0.0.0/8,``", readme)


class ReceiveBufferTests(OptionsTestMixin, SynchronousTestCase):
    """
    --receive-buffer beyond net.core.rmem_max, as root (CI and development run as root).
    """

    def test_root_gets_more_than_rmem_max(self):
        """Root is granted a buffer larger than net.core.rmem_max (SO_RCVBUFFORCE)."""
        self.assertEqual(os.geteuid(), 0, "run as root")
        with open("/proc/sys/net/core/rmem_max") as f:
            size = int(f.read()) * 2
        config = self.parse(*LOOPBACK, "--receive-buffer", str(size))
        self.assertGreaterEqual(config["socket"].getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF), 2 * size)

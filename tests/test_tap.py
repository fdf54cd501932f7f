"""
Tests for L{udpchat.tap}: the twistd command line and the service it builds,
and for L{udpchat.binding}, which binds the socket while options are checked.

Every parse passes C{--interface} with a loopback address and C{--port 0}, so
no test binds a public or fixed port.
"""

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

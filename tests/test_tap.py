"""
Tests for L{udpchat.tap}: the twistd command line and the service it builds,
and for L{udpchat.binding}, which binds the socket while options are checked.

Every parse passes C{--interface} with a loopback address and C{--port 0}, so
no test binds a public or fixed port.  The ranges of the whole-number
options come from L{udpchat.tap.NUMBERS}, the one place that declares them.
"""

import os
import re
import signal
import socket
from pathlib import Path

from twisted.application.service import IServiceCollection, Service
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import ReactorNotRunning
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import FakeDatagramTransport
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from tests.harness import DEADLINE
from tests.redisserver import requires_redis, shared_redis
from udpchat.binding import bind_udp
from udpchat.server import ChatServerProtocol, ChatService
from udpchat.tap import NUMBERS, OptionBound, Options, StopOnHangUp, makeService

LOOPBACK = ["--interface", "127.0.0.1", "--port", "0"]
README = Path(__file__).resolve().parent.parent / "README.rst"
# Values no whole-number option takes, whatever its range.
JUNK = ("", "1.5", "-1", "+5", " 5", "5 ", "ten", "1e3", "0x10", "\u0665", "9" * 5000)


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

    def refusal(self, config, args):
        """
        Parse C{args} into C{config}; return the reason it was refused (the
        one line twistd ends with, after C{twistd udpchat: }), or None.
        """
        try:
            config.parseOptions(list(args))
        except SystemExit as e:
            prefix = "twistd udpchat: "
            self.assertIsInstance(e.code, str)
            self.assertTrue(e.code.startswith(prefix), e.code)
            self.assertNotIn("\n", e.code)
            return e.code[len(prefix) :]
        return None

    def usage_error(self, *args):
        """Parse C{args}, which must fail; return the reason."""
        config = Options()
        reason = self.refusal(config, args)
        if reason is None:
            config["socket"].close()
            self.fail(f"{args!r} parsed: {dict(config)!r}")
        return reason

    def assert_accepted(self, option, value):
        """
        Parsing C{option} C{value} gives C{value} as an int; or, where the
        host refuses it (a port in use, a receive buffer larger than the
        kernel grants a user), the error is the host's, not the range's.
        """
        config = Options()
        reason = self.refusal(config, [*LOOPBACK, option, str(value)])
        if reason is not None:
            host_refusals = ("cannot listen on UDP port", f"{option} {value}: the kernel granted")
            self.assertTrue(reason.startswith(host_refusals), f"{option} {value}: {reason}")
            return
        self.addCleanup(config["socket"].close)
        self.assertEqual(config[option[2:]], value, option)

    def assert_out_of_range(self, option, value, low, high):
        """Parsing C{option} C{value} is refused, stating the option, the range and the value."""
        message = self.usage_error(*LOOPBACK, option, value)
        self.assertTrue(
            message.startswith(f"{option} must be a whole number from {low} to {high}"), message
        )
        self.assertTrue(message.endswith(f", not {value!r}"), message)

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
                "room": None,
                "state-sync": "normal",
                "log-level": "info",
                "metrics": None,
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


def chat_service(service):
    """The L{ChatService} in the service (or tree of services) C{service}."""
    if isinstance(service, ChatService):
        return service
    for child in IServiceCollection(service, ()):
        found = chat_service(child)
        if found is not None:
            return found
    return None


def exchange(protocol, datagrams, source=("127.0.0.1", 4000)):
    """
    Feed C{datagrams} from C{source} to C{protocol} as one batch, on a fake
    transport it gets the first time; return what it wrote in reply.
    """
    if protocol.transport is None:
        protocol.makeConnection(FakeDatagramTransport())
    written = protocol.transport.written
    before = len(written)
    for datagram in datagrams:
        protocol.datagramReceived(datagram, source)
    protocol.flush()
    return written[before:]


class MakeServiceTests(OptionsTestMixin, SynchronousTestCase):
    """
    Tests for L{makeService}; the service is built, never started.
    """

    def make(self, *args, reactor=None):
        """
        Parse C{args} and build the service, on a L{Clock} by default;
        return the options and the protocol it serves.
        """
        config = self.parse(*LOOPBACK, *args)
        if reactor is None:
            reactor = Clock()
        return config, chat_service(makeService(config, reactor=reactor)).protocol

    def test_returns_chat_service(self):
        """makeService returns a service, not started, around a L{ChatServerProtocol}."""
        config = self.parse(*LOOPBACK)
        service = makeService(config, reactor=Clock())
        self.assertFalse(service.running)
        self.assertIsInstance(chat_service(service), ChatService)
        self.assertIsInstance(chat_service(service).protocol, ChatServerProtocol)

    def test_max_reply_bytes_passed_to_room(self):
        """The room's reply cap is the --max-reply-bytes value."""
        config, protocol = self.make("--max-reply-bytes", "4000")
        self.assertEqual(protocol.room.max_reply_bytes, 4000)

    def test_sessions_only_refuses_legacy_joins(self):
        """--sessions-only makes the room refuse 1 Name and take 6 Nonce Name; without it, both join."""
        replies = []
        for args in ((), ("--sessions-only",)):
            _, protocol = self.make(*args)
            replies.append(
                (
                    protocol.room.receive(("192.0.2.1", 1), b"1 Al", 0),
                    protocol.room.receive(("192.0.2.2", 2), b"6 %032x Bo" % 7, 0)[:2],
                )
            )
        self.assertEqual(replies, [(b"", b"0 "), (b"Illegal message", b"0 ")])

    def test_default_max_reply_bytes_passed_to_room(self):
        """Without --max-reply-bytes, the room's reply cap is 1200."""
        config, protocol = self.make()
        self.assertEqual(protocol.room.max_reply_bytes, 1200)

    def requests_logged(self, *args):
        """The datagrams logged as requests when a join arrives, with C{args}."""
        config, protocol = self.make(*args)
        with capturedLogs() as events:
            exchange(protocol, [b"1 Al"])
        return [event["datagram"] for event in events if "datagram" in event]

    def test_debug_logs_requests(self):
        """--log-level debug makes the protocol log every request."""
        self.assertEqual(self.requests_logged("--log-level", "debug"), [b"1 Al"])

    def test_info_does_not_log_requests(self):
        """The default log level does not log every request."""
        self.assertEqual(self.requests_logged(), [])

    def test_log_level_filters_protocol_events(self):
        """--log-level warn reaches the protocol: a join logs nothing."""
        config, protocol = self.make("--log-level", "warn")
        with capturedLogs() as events:
            written = exchange(protocol, [b"1 Al"])
        self.assertEqual(events, [])
        self.assertEqual(written, [(b"", ("127.0.0.1", 4000))])

    def test_reactor_is_the_protocol_clock(self):
        """
        The given reactor is the protocol's clock: a request budget spent
        refills as that clock, and only that clock, advances.
        """
        clock = Clock()
        config, protocol = self.make("--request-rate", "1", "--request-burst", "1", reactor=clock)
        stranger = ("192.0.2.1", 4000)
        replies = [len(exchange(protocol, [b"5", b"5"], stranger))]
        clock.advance(1)
        replies.append(len(exchange(protocol, [b"5", b"5"], stranger)))
        self.assertEqual(replies, [1, 1])


class OneReply(DatagramProtocol):
    """A client socket whose L{reply} fires with the first datagram it receives."""

    def __init__(self):
        self.reply = Deferred()

    def datagramReceived(self, datagram, address):
        if not self.reply.called:
            self.reply.callback(datagram)


class RecordingReactor:
    """The global reactor, noting the name of each attribute asked of it."""

    def __init__(self):
        self.asked = set()

    def __getattr__(self, name):
        self.asked.add(name)
        return getattr(reactor, name)


class ServingTests(OptionsTestMixin, TestCase):
    """
    The service makeService returns, started on a real reactor, answers on
    the socket the options bound.
    """

    @inlineCallbacks
    def join(self, config, service):
        """Start C{service}; return its reply to a join sent to C{config}'s socket."""
        address = config["socket"].getsockname()
        client = OneReply()
        port = reactor.listenUDP(0, client, interface="127.0.0.1")
        service.startService()
        try:
            port.write(b"1 Al", address)
            reply = yield client.reply.addTimeout(DEADLINE, reactor)
        finally:
            yield service.stopService()
            yield port.stopListening()
        return reply

    @inlineCallbacks
    def test_default_reactor_is_global(self):
        """Without a reactor, the service serves the parsed socket on the global reactor."""
        config = self.parse(*LOOPBACK)
        reply = yield self.join(config, makeService(config))
        self.assertEqual(reply, b"")

    @inlineCallbacks
    def test_given_reactor_serves(self):
        """With a reactor, the service serves the parsed socket on that reactor."""
        config = self.parse(*LOOPBACK)
        given = RecordingReactor()
        reply = yield self.join(config, makeService(config, reactor=given))
        self.assertEqual(reply, b"")
        # However the socket is handed over, the given reactor watches it.
        self.assertTrue(given.asked & {"adoptDatagramPort", "addReader"}, given.asked)


class StoppableReactor:
    """
    The reactor as a signal handler sees it: what it is asked to call from
    a thread waits for L{run_calls}; L{stop} counts, and refuses a second.
    """

    def __init__(self):
        self.calls = []
        self.stops = 0

    def callFromThread(self, f, *args, **kwargs):
        self.calls.append((f, args, kwargs))

    def run_calls(self):
        calls, self.calls = self.calls, []
        for f, args, kwargs in calls:
            f(*args, **kwargs)

    def stop(self):
        if self.stops:
            raise ReactorNotRunning("Can't stop reactor that isn't running.")
        self.stops += 1


class StoppingChild(Service):
    """A service whose stop ends only when C{stopped} fires."""

    def __init__(self):
        self.stopped = Deferred()

    def stopService(self):
        Service.stopService(self)
        return self.stopped


class HangUpTests(SynchronousTestCase):
    """
    L{StopOnHangUp}, the service at the top of what makeService builds, and
    SIGHUP sent to this very process.
    """

    def setUp(self):
        before = signal.getsignal(signal.SIGHUP)
        self.addCleanup(signal.signal, signal.SIGHUP, signal.SIG_DFL if before is None else before)
        # As a shell starts a server, even if the tests run under nohup.
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        self.reactor = StoppableReactor()
        self.service = StopOnHangUp(self.reactor)

    def hang_up(self):
        """Send SIGHUP to this process, which must be handled (not kill it)."""
        self.assertNotIn(signal.getsignal(signal.SIGHUP), (signal.SIG_DFL, None))
        signal.raise_signal(signal.SIGHUP)

    def test_makeService_serves_under_it(self):
        """makeService builds its services under a L{StopOnHangUp}."""
        config = Options()
        config.parseOptions(LOOPBACK)
        self.addCleanup(config["socket"].close)
        self.assertIsInstance(makeService(config, reactor=Clock()), StopOnHangUp)

    def test_sighup_stops_the_reactor(self):
        """SIGHUP while the service runs stops the reactor, and says so."""
        self.service.startService()
        self.hang_up()
        self.assertEqual(self.reactor.stops, 0, "stopped inside the signal handler")
        with capturedLogs() as events:
            self.reactor.run_calls()
        self.assertEqual(self.reactor.stops, 1)
        self.assertEqual(
            [event["log_format"] for event in events], ["Received SIGHUP, shutting down."]
        )

    def test_sighup_while_stopping_changes_nothing(self):
        """A second SIGHUP, the reactor stopping, is neither an error nor logged."""
        self.service.startService()
        self.hang_up()
        self.hang_up()
        with capturedLogs() as events:
            self.reactor.run_calls()
        self.assertEqual(self.reactor.stops, 1)
        self.assertEqual(len(events), 1)

    def test_handler_is_put_back_once_every_child_has_stopped(self):
        """SIGHUP is handled until the children's stop ends; then the handler before is back."""
        def before(signum, frame):
            pass

        signal.signal(signal.SIGHUP, before)
        child = StoppingChild()
        child.setServiceParent(self.service)
        self.service.startService()
        stopped = self.service.stopService()
        self.hang_up()
        self.reactor.run_calls()
        self.assertEqual(self.reactor.stops, 1)
        self.assertNoResult(stopped)
        child.stopped.callback(None)
        self.successResultOf(stopped)
        self.assertIs(signal.getsignal(signal.SIGHUP), before)

    def test_ignored_sighup_stays_ignored(self):
        """A SIGHUP ignored when the service starts (nohup) stays ignored."""
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self.service.startService()
        self.assertIs(signal.getsignal(signal.SIGHUP), signal.SIG_IGN)
        signal.raise_signal(signal.SIGHUP)
        self.service.stopService()
        self.assertEqual((self.reactor.calls, self.reactor.stops), ([], 0))
        self.assertIs(signal.getsignal(signal.SIGHUP), signal.SIG_IGN)


class BoundsTests(OptionsTestMixin, SynchronousTestCase):
    """
    Every whole-number option at, just beyond and far beyond its range, as
    L{NUMBERS} declares it; and the declaration itself.
    """

    def ranges(self):
        """
        C{(option, low, high)} for each option of L{NUMBERS}; a bound that
        depends on another option is taken at that option's default.
        """
        defaults = self.parse(*LOOPBACK)
        return [(f"--{name}", *number.bounds(defaults)) for name, number in NUMBERS.items()]

    def test_bounds_are_accepted(self):
        """The lowest and highest value of each option parse to that number."""
        for option, low, high in self.ranges():
            self.assert_accepted(option, low)
            self.assert_accepted(option, high)

    def test_beyond_bounds_are_usage_errors(self):
        """One below the lowest and one above the highest are refused, stating the range."""
        for option, low, high in self.ranges():
            self.assert_out_of_range(option, str(low - 1), low, high)
            self.assert_out_of_range(option, str(high + 1), low, high)

    def test_junk_is_a_usage_error(self):
        """Signs, spaces, fractions, other scripts' digits and thousands of digits are refused."""
        for option, low, high in self.ranges():
            for value in JUNK:
                self.assert_out_of_range(option, value, low, high)

    def test_leading_zeros_are_the_number(self):
        """A value with leading zeros, however many, is that number."""
        config = self.parse(*LOOPBACK, "--max-members", "0" * 100 + "7")
        self.assertEqual(config["max-members"], 7)

    def test_message_form(self):
        """The whole message of an out-of-range value is the one README.rst shows."""
        message = self.usage_error(*LOOPBACK, "--max-members", "0")
        self.assertEqual(message, "--max-members must be a whole number from 1 to 1000000, not '0'")
        self.assertIn(f"    twistd udpchat: {message}\n", README.read_text())

    def test_every_number_is_an_option(self):
        """L{NUMBERS} declares options that exist, and a bound only on an option before it."""
        names = [row[0] for row in Options.optParameters]
        self.assertLessEqual(set(NUMBERS), set(names))
        earlier = set()
        for name, number in NUMBERS.items():
            for bound in (number.low, number.high):
                if isinstance(bound, OptionBound):
                    self.assertIn(bound.option, earlier, name)
            earlier.add(name)

    def test_help_shows_each_range(self):
        """--help states each whole-number option's range, dependent bounds by name."""
        docs = {name: doc for name, _, _, doc in Options.optParameters}
        text = "".join(str(Options()).split())  # help wraps lines, even at hyphens
        for name, number in NUMBERS.items():
            self.assertIn(str(number), docs[name])
            self.assertIn("".join(docs[name].split()), text, name)
        self.assertIn("1 to --max-members", docs["max-members-per-prefix"])
        self.assertIn("--max-reply-bytes + 48 to 1000000000", docs["reply-burst"])


class LimitOptionsTests(OptionsTestMixin, SynchronousTestCase):
    """
    The limit options: their dependent bounds, defaults, the other checks,
    and what reaches the room and the limiter.
    """

    def test_per_prefix_default_follows_a_smaller_room(self):
        """Without --max-members-per-prefix, a room of 10 allows 10 per prefix."""
        config = self.parse(*LOOPBACK, "--max-members", "10")
        self.assertEqual(config["max-members-per-prefix"], 10)

    def test_per_prefix_default(self):
        """Without --max-members-per-prefix, the default room allows 100 per prefix."""
        self.assertEqual(self.parse(*LOOPBACK)["max-members-per-prefix"], 100)

    def test_per_prefix_above_room_size_is_refused(self):
        """More members per prefix than in the room makes no sense."""
        self.parse(*LOOPBACK, "--max-members", "10", "--max-members-per-prefix", "10")
        message = self.usage_error(*LOOPBACK, "--max-members", "10", "--max-members-per-prefix", "11")
        self.assertEqual(
            message, "--max-members-per-prefix must be a whole number from 1 to 10 (--max-members), not '11'"
        )

    def test_per_prefix_bound_ignores_option_order(self):
        """--max-members given after --max-members-per-prefix still bounds it."""
        message = self.usage_error(*LOOPBACK, "--max-members-per-prefix", "11", "--max-members", "10")
        self.assertIn("from 1 to 10 (--max-members)", message)

    def test_reply_burst_must_hold_the_largest_reply(self):
        """A reply budget that could never pay for the largest reply is refused."""
        self.parse(*LOOPBACK, "--max-reply-bytes", "4000", "--reply-burst", "4048")
        message = self.usage_error(*LOOPBACK, "--max-reply-bytes", "4000", "--reply-burst", "4047")
        self.assertEqual(
            message,
            "--reply-burst must be a whole number from 4048 to 1000000000 (--max-reply-bytes + 48, "
            "so that the largest reply can be sent), not '4047'",
        )

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

    def test_receive_buffer_defaults_to_the_system(self):
        """Without --receive-buffer, the option is None: the system's size."""
        self.assertIsNone(self.parse(*LOOPBACK)["receive-buffer"])

    def test_state_and_sync_defaults(self):
        """Without --state the room lives in memory, and --state-sync is normal."""
        config = self.parse(*LOOPBACK)
        self.assertEqual((config["state"], config["state-sync"]), (None, "normal"))

    def test_bad_state_sync_is_usage_error(self):
        """--state-sync takes normal or full."""
        self.assertEqual(
            self.usage_error(*LOOPBACK, "--state-sync", "off"),
            "--state-sync must be one of normal, full, not 'off'",
        )

    def test_limits_reach_room(self):
        """makeService gives the room the parsed limits, and groups by prefix except for loopback."""
        config = self.parse(
            *LOOPBACK,
            *("--max-members", "50", "--max-members-per-prefix", "5", "--max-pending", "7"),
            "--idle-timeout", "0",
        )
        room = chat_service(makeService(config, reactor=Clock())).protocol.room
        self.assertEqual(
            (
                room.max_members,
                room.max_members_per_group,
                room.max_pending,
                room.idle_timeout,
                room.group_of(("192.0.2.1", 5)) == room.group_of(("192.0.2.200", 6)),
                room.group_of(("192.0.2.1", 5)) == room.group_of(("192.0.3.1", 6)),
                room.group_of(("127.0.0.1", 5)),
            ),
            (50, 5, 7, 0, True, False, None),
        )

    def answered(self, *args):
        """
        With C{args}, how many of three polls from one address (not exempt)
        are answered at once, and then after one second.
        """
        clock = Clock()
        config = self.parse(*LOOPBACK, *args)
        protocol = chat_service(makeService(config, reactor=clock)).protocol
        source = ("192.0.2.1", 4000)
        first = len(exchange(protocol, [b"5"] * 3, source))
        clock.advance(1)
        return first, len(exchange(protocol, [b"5"] * 3, source))

    def test_request_limits_reach_the_limiter(self):
        """--request-burst requests are answered at once, then --request-rate a second."""
        self.assertEqual(self.answered("--request-rate", "1", "--request-burst", "2"), (2, 1))
        self.assertEqual(self.answered("--request-rate", "2", "--request-burst", "1"), (1, 1))

    def test_reply_limits_reach_the_limiter(self):
        """
        --reply-burst bytes may be sent at once, then --reply-rate a second,
        headers included: each poll takes the largest reply (1200 + 28
        bytes) and gives back what its reply (15 + 28) did not cost.
        """
        # From 1248, 1205 are left after a reply; one second at 23 a
        # second makes 1228, exactly a largest reply.
        self.assertEqual(self.answered("--reply-burst", "1248", "--reply-rate", "23"), (1, 1))
        self.assertEqual(self.answered("--reply-burst", "1248", "--reply-rate", "22"), (1, 0))
        # 6000 pays for the first poll and leaves 5957 >= 1228 for the next.
        self.assertEqual(self.answered("--reply-burst", "6000", "--reply-rate", "1")[0], 3)


def option_tables(text):
    """
    The rows of the option tables of reStructuredText C{text} (simple
    tables headed C{Option}): C{{name: (default, meaning)}}, each cell's
    lines joined by spaces.
    """
    rows = {}
    lines = text.splitlines()
    for i, border in enumerate(lines[:-1]):
        if not (re.fullmatch(r"=+( +=+)+", border) and lines[i + 1].startswith("Option ")):
            continue
        starts = [m.start() for m in re.finditer("=+", border)]
        cells = None
        for line in lines[i + 3 :]:
            if line.startswith("="):
                break
            parts = [line[a:b].strip() for a, b in zip(starts, starts[1:] + [None])]
            if parts[0]:
                cells = [[part] for part in parts[1:]]
                for name in re.findall(r"``--([a-z-]+)``", parts[0]):
                    rows[name] = cells
            else:
                for cell, part in zip(cells, parts[1:]):
                    cell.append(part)
    return {name: tuple(" ".join(cell).strip() for cell in cells) for name, cells in rows.items()}


def plain(text):
    """C{text} without reStructuredText literals' backquotes, its spaces collapsed."""
    return " ".join(text.replace("``", "").split())


class DocumentationTests(SynchronousTestCase):
    """
    README.rst documents every option, its default and its range.
    """

    def setUp(self):
        self.rows = option_tables(README.read_text())

    def test_every_option_is_documented(self):
        """README's option tables hold exactly the options (and flags) of L{Options}."""
        self.assertEqual(
            set(self.rows), {row[0] for row in Options.optParameters + Options.optFlags}
        )

    def test_defaults_are_documented(self):
        """Each option with a default has it, and only it, in README's Default column."""
        for name, _, default, _ in Options.optParameters:
            if default is not None:
                self.assertEqual("".join(plain(self.rows[name][0]).split()), default, name)

    def test_ranges_are_documented(self):
        """Each whole-number option's README row states its range as --help does."""
        for name, number in NUMBERS.items():
            self.assertIn(str(number), plain(self.rows[name][1]), name)


class ReceiveBufferTests(OptionsTestMixin, SynchronousTestCase):
    """
    --receive-buffer beyond net.core.rmem_max, as root (CI and development run as root).
    """

    def test_root_gets_more_than_rmem_max(self):
        """Root is granted a buffer larger than net.core.rmem_max (SO_RCVBUFFORCE)."""
        if os.geteuid() != 0:
            raise SkipTest("only root may exceed net.core.rmem_max")
        with open("/proc/sys/net/core/rmem_max") as f:
            size = int(f.read()) * 2
        config = self.parse(*LOOPBACK, "--receive-buffer", str(size))
        self.assertGreaterEqual(config["socket"].getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF), 2 * size)


class RedisOptionsTests(OptionsTestMixin, SynchronousTestCase):
    """--state redis://..., --room and --reuse-port."""

    def test_room_needs_redis(self):
        self.assertEqual(
            self.usage_error(*LOOPBACK, "--room", "chat"),
            "--room names a group in Redis: it needs --state redis://...",
        )

    def test_bad_url_is_refused_without_its_password(self):
        reason = self.usage_error(*LOOPBACK, "--state", "redis://:hunter2@127.0.0.1:port")
        self.assertTrue(reason.startswith("--state: a Redis URL is redis://"), reason)
        self.assertNotIn("hunter2", reason)

    def test_unreachable_redis_is_refused_without_its_password(self):
        from tests.redisserver import free_tcp_port

        url = f"redis://me:hunter2@127.0.0.1:{free_tcp_port()}/1"
        reason = self.usage_error(*LOOPBACK, "--state", url)
        self.assertTrue(reason.startswith("--state: cannot reach Redis at 127.0.0.1:"), reason)
        self.assertNotIn("hunter2", reason)

    @requires_redis
    def test_room_names_are_checked(self):
        url = shared_redis().url
        for name in ("", "a b", "a:b", "x" * 65, "caf\u00e9"):
            reason = self.usage_error(*LOOPBACK, "--state", url, "--room", name)
            self.assertTrue(reason.startswith("--room must be 1 to 64 of"), reason)

    @requires_redis
    def test_a_reachable_redis_makes_a_shared_room(self):
        from udpchat.sharedroom import RedisLink, SharedRoomProtocol

        config = self.parse(*LOOPBACK, "--state", shared_redis().url, "--room", "tap-test")
        service = makeService(config, reactor=Clock())
        protocol = chat_service(service).protocol
        self.assertIsInstance(protocol, SharedRoomProtocol)
        self.assertEqual(protocol.room.prefix, b"tap-test")
        self.assertIsInstance(service.services[0], RedisLink)  # started first, stopped last

    @requires_redis
    def test_password_is_kept_out_of_the_options_and_of_a_refusal(self):
        from tests.redisserver import RedisServer

        server = RedisServer(password="hunter2")
        self.addCleanup(server.close)
        config = self.parse(*LOOPBACK, "--state", server.url)
        self.assertEqual((config["redis"].password, "hunter2" in config["state"]), ("hunter2", False))
        reason = self.usage_error(*LOOPBACK, "--state", server.url.replace("hunter2", "hunter3"))
        self.assertTrue(reason.startswith("--state: Redis at 127.0.0.1:"), reason)
        self.assertNotIn("hunter", reason)

    def test_reuse_port_lets_two_daemons_share_a_port(self):
        first = self.parse("--interface", "127.0.0.1", "--port", "0", "--reuse-port")
        port = first["socket"].getsockname()[1]
        second = self.parse("--interface", "127.0.0.1", "--port", str(port), "--reuse-port")
        self.assertEqual(second["socket"].getsockname()[1], port)

    def test_without_reuse_port_the_port_is_in_use(self):
        first = self.parse("--interface", "127.0.0.1", "--port", "0", "--reuse-port")
        port = first["socket"].getsockname()[1]
        reason = self.usage_error("--interface", "127.0.0.1", "--port", str(port))
        self.assertIn("cannot listen on UDP port", reason)

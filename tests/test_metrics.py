"""
Tests for what an operator graphs: the totals of L{ChatServerProtocol}
(requests by code and outcome, found from what each request left behind
rather than counted one by one), L{udpchat.timing}, C{--metrics} and the
collector of L{udpchat.metrics}; and, end to end, a real HTTP client
scraping the real daemon's C{/metrics}.
"""

import os
import sys
import tempfile
import urllib.error
import urllib.request

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.application.service import IServiceCollection
from twisted.internet.task import Clock
from twisted.internet.testing import FakeDatagramTransport
from twisted.trial.unittest import SynchronousTestCase

from tests.harness import DEADLINE, ProcessTestCase, run_isolated, wait_for
from tests.test_room import NONCES, TOKENS, counting_tokens, session_datagrams
from tests.test_server import cannot_be_a_peer, limited_protocol
from tests.test_tap import LOOPBACK, OptionsTestMixin, chat_service
from udpchat import limits
from udpchat.metrics import MetricsService
from udpchat.room import Room
from udpchat.server import ChatServerProtocol, canonical_address
from udpchat.store import Store
from udpchat.tap import ADDRESSES, makeService
from udpchat.timing import Durations, TickTimer
from udpchat.wire import ILLEGAL, parse_request

METRICS_URL = r"udpchat metrics on (http://\S+/metrics)"
CODES = "1234567890"
SESSION_CODES = "67890"


def expected_outcome(datagram, reply):
    """
    The C{(code, outcome)} of a datagram that reached the room, told from
    the datagram and what the client got: nothing, C{Illegal message}, a
    session's refusal, or anything else (done).
    """
    code = datagram[:1].decode("latin-1")
    code = code if code and code in CODES else "illegal"
    if reply is None:
        return code, "unanswered"
    if reply == ILLEGAL:
        return code, "refused"
    if code in SESSION_CODES and reply.split(b" ", 2)[1:2] in ([b"refused"], [b"unknown"]):
        return code, "refused"
    parse_request(datagram)  # done: it must be a request
    return code, "ok"


def samples(text):
    """
    The samples of a scrape, as C{{(name, frozenset(labels)): value}},
    parsed by prometheus_client's own parser.
    """
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(scraped, name, **labels):
    """The value of sample C{name} with C{labels} in C{scraped} (see L{samples})."""
    return scraped[name, frozenset(labels.items())]


def moved(before, after, name, **labels):
    """How much sample C{name} with C{labels} grew from scrape C{before} to C{after}."""
    key = (name, frozenset(labels.items()))
    return after[key] - before.get(key, 0)


REQUEST_KINDS = [("1", "ok"), ("2", "ok"), ("3", "ok"), ("4", "ok"), ("5", "ok"),
                 ("3", "refused"), ("illegal", "refused")]
"""The C{(code, outcome)} pairs the traffic of the scrape tests gives."""


def find(service, kind):
    """The service of class C{kind} in the tree of C{service}, or None."""
    if isinstance(service, kind):
        return service
    for child in IServiceCollection(service, ()):
        found = find(child, kind)
        if found is not None:
            return found
    return None


def limited(room, clock, store=None):
    """
    A protocol serving C{room} on a fake transport, with traffic limits
    that only drop datagrams from addresses that cannot be real.
    """
    limiter = limits.Limiter(
        limits.Classifier([]),
        requests=limits.TokenBuckets(1000, 1000),
        replies=limits.TokenBuckets(10**6, 10**6),
        max_reply_bytes=room.max_reply_bytes,
    )
    proto = ChatServerProtocol(room, clock, limiter=limiter, store=store)
    proto.makeConnection(FakeDatagramTransport())
    return proto


class RequestCountTests(SynchronousTestCase):
    """
    L{ChatServerProtocol.requests} and L{ChatServerProtocol.dropped}: every
    datagram received is counted once, by what became of it.
    """

    def test_each_outcome_is_counted_once(self):
        """Joins, texts, renames, leaves, polls, refusals, a server's reply and drops: each counted as what it was, bytes too."""
        clock = Clock()
        proto = limited_protocol(clock, **{"request-rate": 1, "request-burst": 6})
        al, bo = ("192.0.2.1", 4000), ("192.0.2.2", 4000)
        traffic = [
            (b"1 Al", al), (b"1 Bo", bo), (b"2 hi", bo), (b"3 Cy", bo), (b"5", al), (b"5", al),
            (b"1 Al", bo), (b"4", bo), (b"5", bo), (b"", al), (ILLEGAL, al), (b"5", al),
            (b"5", al),  # over the rate: Al's seventh, the burst is 6
            (b"5", ("192.0.2.3", 0)),  # no real source
        ]
        for datagram, source in traffic:
            proto.datagramReceived(datagram, source)
        self.assertEqual(
            (proto.requests(), proto.dropped()),
            (
                {
                    ("1", "ok"): 2, ("2", "ok"): 1, ("3", "ok"): 1, ("4", "ok"): 1,
                    ("5", "ok"): 3, ("1", "refused"): 1, ("5", "refused"): 1,
                    ("illegal", "refused"): 1, ("illegal", "unanswered"): 1,
                },
                {limits.OVER_RATE: 1, limits.BAD_SOURCE: 1},
            ),
        )
        replies = [reply for reply, _ in proto.transport.written]
        self.assertEqual(
            (proto.received, proto.received_bytes, proto.sent_bytes),
            (len(traffic), sum(len(d) for d, _ in traffic), sum(map(len, replies))),
        )

    @settings(max_examples=150, deadline=None)
    @given(
        stored=st.booleans(),
        steps=st.lists(
            st.one_of(
                st.tuples(
                    st.sampled_from(
                        [("192.0.2.1", 5), ("192.0.2.2", 5), ("2001:db8::1", 7), ("192.0.2.3", 0)]
                    ),
                    st.one_of(
                        st.binary(max_size=8),
                        st.sampled_from(
                            [b"1 Al", b"1 Bo", b"2 hi", b"3 Cy", b"3 Al", b"4", b"5", b"5\n", ILLEGAL]
                        ),
                        session_datagrams(),
                    ),
                ),
                st.floats(0, 40),  # time passes: members expire after 30 s
            ),
            max_size=40,
        ),
    )
    def test_every_datagram_is_counted_once_by_its_outcome(self, stored, steps):
        """Whatever arrives, sessions too, whenever, in memory or with a store: the counts are exactly the outcomes the replies show."""
        clock = Clock()
        room = Room(idle_timeout=30, track_state=stored, new_token=counting_tokens())
        with tempfile.TemporaryDirectory() as directory:
            store = Store(os.path.join(directory, "room.db")) if stored else None
            if store is not None:
                store.open()
            try:
                proto = limited(room, clock, store)
                expected, dropped = self.feed(proto, clock, steps)
            finally:
                if store is not None:
                    store.close()
        self.assertEqual((proto.requests(), sum(proto.dropped().values())), (expected, dropped))

    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.sampled_from([("192.0.2.1", 5), ("192.0.2.2", 5), ("192.0.2.3", 6)]),
                st.one_of(session_datagrams(), session_datagrams(),
                          st.sampled_from([b"1 Al", b"2 hey", b"5", b"4", b"3 Di"])),
            ),
            max_size=60,
        )
    )
    def test_session_traffic_is_counted_once_by_its_outcome(self, steps):
        """Registrations, repeats, stale and unknown requests, roaming, refusals: each counted as the client saw it."""
        clock = Clock()
        proto = limited(Room(idle_timeout=0, new_token=counting_tokens()), clock)
        expected, dropped = self.feed(proto, clock, steps)
        self.assertEqual((proto.requests(), dropped), (expected, 0))

    def feed(self, proto, clock, steps):
        """
        Feed C{steps} (datagrams and pauses) to C{proto}, one batch each;
        return the outcomes its replies show, and how many it dropped.
        """
        expected, dropped = {}, 0
        for step in steps:
            if isinstance(step, float):
                clock.advance(step)
                continue
            address, datagram = step
            before = len(proto.transport.written)
            proto.datagramReceived(datagram, address)
            clock.advance(0)  # the end of the batch: a store commits
            written = proto.transport.written[before:]
            if cannot_be_a_peer(canonical_address(address)):
                dropped += 1
                continue
            key = expected_outcome(datagram, written[0][0] if written else None)
            expected[key] = expected.get(key, 0) + 1
        return expected, dropped


class RoomRequestCountTests(SynchronousTestCase):
    """
    L{Room.requests}: what the room counts of the requests it handles.
    """

    def test_session_requests_by_what_became_of_them(self):
        """Each session request is counted once, as the client saw it: done (a repeat too), refused, or unanswered; the 1.0 requests done beside them."""
        room = Room(new_token=counting_tokens())
        al, bo, cy, dy = (("127.0.0.1", port) for port in range(4000, 4004))
        al_token, dy_token = TOKENS[0], TOKENS[1]
        steps = [
            (al, b"6 %s Al" % NONCES[0]), (al, b"6 %s Al" % NONCES[0]),  # a repeat
            (bo, b"1 Bo"),
            (al, b"7 %s 1 hi" % al_token), (al, b"7 %s 1 hi" % al_token),  # a repeat
            (al, b"8 %s 2 0" % al_token), (al, b"8 %s 1 0" % al_token),  # stale: no reply
            (al, b"9 %s 3 Bo" % al_token), (al, b"9 %s 3 Bo" % al_token),  # taken, twice
            (al, b"7 %s 1 hi" % dy_token),  # no such session, yet
            (cy, b"8 %s 4 99" % al_token),  # moved, and ahead of the log
            (bo, b"8 %s 5 0" % al_token),  # Bo's address
            (cy, b"0 %s 6" % al_token),
            (dy, b"6 %s Dy" % NONCES[1]), (dy, b"7 %s 1 yo" % dy_token),
            (dy, b"6 %s Dy" % NONCES[1]),  # a repeat, after the session went on
            (bo, b"2 hey"), (bo, b"3 Cy"), (bo, b"4"),
        ]
        replies = [room.receive(source, datagram, 0) for source, datagram in steps]
        self.assertEqual(
            [expected_outcome(datagram, reply) for (_, datagram), reply in zip(steps, replies)],
            [("6", "ok"), ("6", "ok"), ("1", "ok"), ("7", "ok"), ("7", "ok"), ("8", "ok"),
             ("8", "unanswered"), ("9", "refused"), ("9", "refused"), ("7", "refused"),
             ("8", "refused"), ("8", "refused"), ("0", "ok"), ("6", "ok"), ("7", "ok"),
             ("6", "unanswered"), ("2", "ok"), ("3", "ok"), ("4", "ok")],
        )
        self.assertEqual(
            (room.requests(), room.repeats),
            (
                {
                    ("1", "ok"): 1, ("2", "ok"): 1, ("3", "ok"): 1, ("4", "ok"): 1,
                    ("6", "ok"): 3, ("6", "unanswered"): 1,
                    ("7", "ok"): 3, ("7", "refused"): 1,
                    ("8", "ok"): 1, ("8", "refused"): 2, ("8", "unanswered"): 1,
                    ("9", "refused"): 2, ("0", "ok"): 1,
                },
                3,
            ),
        )

    def test_lines_a_restore_took_back_still_count(self):
        """A text undone by a return to the last commit was done all the same; lines a store restored were not done here."""
        room = Room(track_state=True)
        room.receive(AL, b"1 Al", 0)
        saved = room.take_changes(everyone=True)
        fresh = Room(track_state=True)
        fresh.restore(saved.members, [(a, line) for _, a, line in saved.lines], saved.first, saved.next_id)
        fresh.receive(AL, b"2 one", 0)
        fresh.restore(saved.members, [(a, line) for _, a, line in saved.lines], saved.first, saved.next_id)
        fresh.receive(AL, b"2 two", 0)
        self.assertEqual((fresh.requests(), fresh.lines_added), ({("2", "ok"): 2}, 2))


AL = ("127.0.0.1", 4000)


class DurationsTests(SynchronousTestCase):
    """
    L{Durations}: a histogram as whole counts.
    """

    def test_each_duration_counts_in_the_buckets_at_or_above_it(self):
        """A duration on a bound counts in that bucket; every bucket counts those below it; the sum adds them."""
        durations = Durations((0.5, 1.0))
        for seconds in (0.25, 0.5, 0.75, 2.0):
            durations.observe(seconds)
        self.assertEqual(
            (durations.cumulative(), durations.count, durations.sum),
            ([(0.5, 2), (1.0, 3), (float("inf"), 4)], 4, 3.5),
        )


class FakePoller:
    """A reactor's poller whose poll() takes C{seconds} of C{clock}'s time."""

    def __init__(self, clock):
        self.clock = clock
        self.seconds = 0.0
        self.registered = []

    def poll(self, timeout=None):
        self.clock.advance(self.seconds)
        return []

    def register(self, fd, flags):
        self.registered.append(fd)


class PollingReactor:
    """Just what L{TickTimer} looks at in a reactor: its poller."""

    def __init__(self, poller):
        self._poller = poller


class TickTimerTests(SynchronousTestCase):
    """
    L{TickTimer}: the time from the end of one poll to the next.
    """

    def test_a_tick_is_the_work_between_two_polls(self):
        """The time waiting in poll() is not counted; the time between polls is, once per turn."""
        clock = Clock()
        poller = FakePoller(clock)
        reactor = PollingReactor(poller)
        durations = Durations((0.01, 0.1))
        timer = TickTimer(durations, clock=clock.seconds)
        self.assertTrue(timer.install(reactor))
        poller.seconds = 5.0  # idle: not a tick
        for work in (0.002, 0.05, 0.002):
            reactor._poller.poll(1.0)
            clock.advance(work)
        reactor._poller.poll(1.0)
        reactor._poller.register(7, 1)
        self.assertEqual(
            (durations.cumulative(), poller.registered),
            ([(0.01, 3), (0.1, 4), (float("inf"), 4)], [7]),  # the first: from install
        )
        timer.uninstall()
        self.assertIs(reactor._poller, poller)

    def test_a_reactor_without_a_poller_is_not_timed(self):
        """A reactor that polls some other way (a Clock here) is left alone."""
        clock = Clock()
        timer = TickTimer(Durations((1.0,)))
        self.assertEqual((timer.install(clock), timer.installed), (False, False))


class MetricsOptionTests(OptionsTestMixin, SynchronousTestCase):
    """
    C{--metrics [HOST:]PORT}, as L{ADDRESSES} declares it.
    """

    def parse_metrics(self, value):
        config = self.parse(*LOOPBACK, "--metrics", value)
        self.addCleanup(config["metrics-socket"].close)
        return config

    def test_port_alone_is_on_loopback(self):
        """A port alone listens on 127.0.0.1, never on every interface."""
        config = self.parse_metrics("0")
        self.assertEqual(config["metrics"], ("127.0.0.1", 0))
        self.assertEqual(config["metrics-socket"].getsockname()[0], "127.0.0.1")

    def test_host_and_port(self):
        """An IPv4 host, and an IPv6 one in brackets, are listened on."""
        for value, host in (("127.0.0.1:0", "127.0.0.1"), ("[::1]:0", "::1")):
            config = self.parse_metrics(value)
            self.assertEqual(config["metrics"], (host, 0))
            self.assertEqual(config["metrics-socket"].getsockname()[0], host)

    def test_without_metrics_no_socket(self):
        """Without --metrics there are no metrics and no TCP socket."""
        config = self.parse(*LOOPBACK)
        self.assertEqual((config["metrics"], config["metrics-socket"]), (None, None))

    def test_bad_forms_are_usage_errors(self):
        """A host name, an IPv6 host without brackets, a bad port: one line stating the form."""
        form = (
            "--metrics must be [HOST:]PORT, HOST an IP address (IPv6 in brackets) "
            "and PORT a whole number from 0 to 65535, not "
        )
        for value in ("", "x", "localhost:9100", "::1:9100", "[::1]", "1.2.3.4:", "65536",
                      "127.0.0.1:-1", "[127.0.0.1]:80", "1.2.3.4:9 1"):
            self.assertEqual(self.usage_error(*LOOPBACK, "--metrics", value), form + repr(value))

    def test_port_in_use_is_a_usage_error(self):
        """A TCP port in use is one line, naming it."""
        first = self.parse_metrics("0")
        port = first["metrics-socket"].getsockname()[1]
        reason = self.usage_error(*LOOPBACK, "--metrics", str(port))
        self.assertEqual(
            reason, f"--metrics: cannot listen on TCP port {port} of 127.0.0.1: Address already in use"
        )

    def test_help_shows_the_form(self):
        """--help gives the form and the port's range, as ADDRESSES declares them."""
        text = " ".join(str(__import__("udpchat.tap").tap.Options()).split())
        self.assertIn(" ".join(str(ADDRESSES["metrics"]).split()), text)
        self.assertIn("[HOST:]PORT, PORT 0 to 65535 [default HOST: 127.0.0.1]", text)


class CollectorTests(OptionsTestMixin, SynchronousTestCase):
    """
    The registry makeService builds for --metrics, read as a scraper would,
    while the protocol is fed datagrams on a fake transport.
    """

    def build(self, *args):
        """The protocol and the registry of a server built from C{args}."""
        config = self.parse(*LOOPBACK, "--metrics", "127.0.0.1:0", *args)
        self.addCleanup(config["metrics-socket"].close)
        service = makeService(config, reactor=Clock(), environ={})
        protocol = chat_service(service).protocol
        protocol.makeConnection(FakeDatagramTransport())
        return protocol, find(service, MetricsService).registry

    def scrape(self, registry):
        return samples(generate_latest(registry).decode("utf-8"))

    def test_counters_move_by_exactly_the_traffic(self):
        """Each counter moves by what was sent, and no more; the gauges say what is held."""
        protocol, registry = self.build()
        al, bo = ("127.0.0.1", 4000), ("127.0.0.1", 4001)
        before = self.scrape(registry)
        traffic = [(b"1 Al", al), (b"1 Bo", bo), (b"2 hello", bo), (b"5", al), (b"5", al),
                   (b"3 Al", bo), (b"x", al), (b"4", bo)]
        for datagram, source in traffic:
            protocol.datagramReceived(datagram, source)
        after = self.scrape(registry)
        replies = [reply for reply, _ in protocol.transport.written]
        self.assertEqual(
            [moved(before, after, "udpchat_requests_total", code=code, outcome=outcome)
             for code, outcome in REQUEST_KINDS]
            + [moved(before, after, name) for name in (
                "udpchat_datagrams_received_total",
                "udpchat_received_bytes_total",
                "udpchat_sent_bytes_total",
            )],
            [2, 1, 0, 1, 2, 1, 1] + [len(traffic), sum(len(d) for d, _ in traffic), sum(map(len, replies))],
        )
        self.assertEqual(
            [
                value(after, "udpchat_members"),
                value(after, "udpchat_stored_lines"),  # Bo's leave, for Al
                value(after, "udpchat_datagrams_dropped_total", reason="request_rate"),
                value(after, "udpchat_replies_not_sent_total", reason="send_failed"),
            ],
            [1, 1, 0, 0],
        )

    def test_no_label_holds_an_address_a_name_or_a_token(self):
        """Every label value comes from a fixed set: codes, outcomes, reasons, the version."""
        protocol, registry = self.build()
        for port in range(4000, 4010):
            protocol.datagramReceived(f"1 Member{port}".encode(), ("127.0.0.1", port))
            protocol.datagramReceived(b"2 secret text", ("127.0.0.1", port))
        protocol.datagramReceived(b"5", ("0.0.0.0", 9))
        labels = {
            (name, label): text for name, pairs in self.scrape(registry) for label, text in pairs
        }
        allowed = {
            "code": {"1", "2", "3", "4", "5", "illegal"},
            "outcome": {"ok", "refused", "unanswered", "failed"},
            "reason": {"bad_source", "request_rate", "reply_budget", "limiter_full",
                       "receive_buffer", "send_failed", "commit_failed"},
            "le": None,  # histogram bounds: numbers
        }
        for (name, label), text in labels.items():
            if label == "le":
                float(text)
            elif name.startswith("udpchat_info"):
                self.assertEqual(label, "version")
            elif name.startswith("udpchat_"):
                self.assertIn(text, allowed[label], (name, label))
            else:  # python_info: the interpreter's
                self.assertTrue(name.startswith("python_info"), name)
            self.assertNotIn("127.0.0.1", text)
            self.assertNotIn("Member", text)

    def test_commits_are_timed_and_failures_counted_with_a_store(self):
        """With --state, each commit that wrote is in the histogram; without, there is none."""
        _, memory = self.build()
        self.assertNotIn(("udpchat_commit_seconds_count", frozenset()), self.scrape(memory))
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        protocol, registry = self.build("--state", os.path.join(directory.name, "room.db"))
        protocol.store.open()
        self.addCleanup(protocol.store.close)
        for datagram in (b"1 Al", b"2 one", b"2 two", b"5"):
            protocol.datagramReceived(datagram, ("127.0.0.1", 4000))
            protocol.flush()  # one batch each; the last (a poll of nothing) writes nothing
        scraped = self.scrape(registry)
        self.assertEqual(
            (
                value(scraped, "udpchat_commit_seconds_count"),
                value(scraped, "udpchat_commit_seconds_bucket", le="+Inf"),
                value(scraped, "udpchat_commit_failures_total"),
            ),
            (3, 3, 0),
        )


class DefaultInstallTests(SynchronousTestCase):
    """
    prometheus_client is an extra: nothing but --metrics needs it.
    """

    def test_the_server_imports_no_metrics_library(self):
        """The plugin, the options, the server, notify and the JSON log load without prometheus_client."""
        result = run_isolated(
            [
                sys.executable,
                "-c",
                "import sys; sys.modules['prometheus_client'] = None  # not installed\n"
                "import twisted.plugins.udpchat_plugin, udpchat.notify, udpchat.logs\n"
                "from twisted.internet.task import Clock\n"
                "from udpchat.tap import Options, makeService\n"
                "config = Options()\n"
                "config.parseOptions(['--port', '0', '--interface', '127.0.0.1'])\n"
                "makeService(config, reactor=Clock())\n",
            ]
        )
        self.assertEqual((result.returncode, result.stderr), (0, b""))


class MetricsDaemonTests(ProcessTestCase):
    """
    The real twistd udpchat --metrics, scraped by a real HTTP client.
    """

    def metrics_url(self, server):
        return wait_for(lambda: server.output.search(METRICS_URL)).group(1)

    def scrape(self, url):
        with urllib.request.urlopen(url, timeout=DEADLINE) as response:
            self.assertTrue(response.headers["Content-Type"].startswith("text/plain"))
            return samples(response.read().decode("utf-8"))

    def test_scrape_counts_exactly_the_traffic_sent(self):
        """The scrape parses with prometheus_client's parser, and each counter moved by what was sent."""
        server = self.server("--metrics", "127.0.0.1:0")
        url = self.metrics_url(server)
        self.assertTrue(url.startswith("http://127.0.0.1:"), url)
        before = self.scrape(url)
        ann, bob = (self.member(server) for _ in range(2))
        sent = [(ann, b"1 Ann"), (bob, b"1 Bob"), (bob, b"2 hello"), (ann, b"5"), (ann, b"5"),
                (bob, b"3 Ann"), (bob, b"junk"), (bob, b"4")]
        replies = [member.request(datagram) for member, datagram in sent]
        after = self.scrape(url)
        self.assertEqual(
            [moved(before, after, "udpchat_requests_total", code=code, outcome=outcome)
             for code, outcome in REQUEST_KINDS]
            + [moved(before, after, name) for name in (
                "udpchat_datagrams_received_total",
                "udpchat_received_bytes_total",
                "udpchat_sent_bytes_total",
            )]
            + [value(after, "udpchat_members")],
            [2, 1, 0, 1, 2, 1, 1] + [len(sent), sum(len(d) for _, d in sent), sum(map(len, replies)), 1],
        )
        # The reactor's turns are timed; the process is described.
        self.assertGreater(moved(before, after, "udpchat_reactor_tick_seconds_count"), 0)
        self.assertGreater(value(after, "process_resident_memory_bytes"), 0)
        self.assertGreater(value(after, "process_open_fds"), 0)

    def test_only_metrics_is_served(self):
        """Any other path is not found; scrapes are not logged."""
        server = self.server("--metrics", "0")
        url = self.metrics_url(server)
        for path in ("/", "/other", "/metricsx"):
            with self.assertRaises(urllib.error.HTTPError) as caught:
                urllib.request.urlopen(url.replace("/metrics", path), timeout=DEADLINE)
            self.assertEqual(caught.exception.code, 404)
        self.scrape(url)
        self.assertNotIn("GET /metrics", server.output.text())

    def test_without_prometheus_client_it_says_what_to_install(self):
        """--metrics without prometheus_client is one line saying how to install it, exit status 1."""
        result = run_isolated(
            [
                sys.executable,
                "-c",
                "import sys; sys.modules['prometheus_client'] = None\n"
                "from twisted.scripts.twistd import run; run()",
                "-n", "--pidfile=", "udpchat", "--port", "0", "--interface", "127.0.0.1",
                "--metrics", "0",
            ]
        )
        output = (result.stdout + result.stderr).decode()
        self.assertEqual(
            (result.returncode, output),
            (1, "twistd udpchat: --metrics needs prometheus_client: pip install 'udpchat[metrics]'\n"),
        )

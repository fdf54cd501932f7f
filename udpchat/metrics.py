"""
The server's Prometheus metrics, served over HTTP for C{--metrics}.

The server counts in plain integers whether or not anybody scrapes (the
totals of L{udpchat.server.ChatServerProtocol}, the L{Durations} of commits
and of the reactor's ticks); a L{ChatCollector} reads them when a scrape
comes, in the reactor's thread, so that a scrape sees the counters between
two batches, never in the middle of one, and nothing on the path of a
datagram calls into prometheus_client.

Only this module imports prometheus_client, and only C{--metrics} imports
this module: the default install needs neither.  No label holds an address,
a name or a token: labels are request codes, outcomes and reasons, from
fixed sets.
"""

import os
import socket

from prometheus_client import PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry
from twisted.application.service import Service
from twisted.internet.defer import maybeDeferred
from twisted.logger import Logger
from twisted.web.pages import notFound
from twisted.web.resource import Resource
from twisted.web.server import Site

from udpchat import __version__, limits
from udpchat.room import OK, REFUSED, Expired
from udpchat.server import (
    FAULT,
    NO_CODE,
    UNCOMMITTED,
    UNSENT,
    canonical_address,
    format_address,
)
from udpchat.timing import TICK_BUCKETS, Durations, TickTimer
from udpchat.wire import REQUEST_CODES

DROP_REASONS = {
    limits.BAD_SOURCE: "bad_source",
    limits.OVER_RATE: "request_rate",
    limits.OVER_BUDGET: "reply_budget",
    limits.TABLE_FULL: "limiter_full",
}
"""The C{reason} label of each of the limiter's reasons to drop a datagram."""

RECEIVE_BUFFER = "receive_buffer"
"""The C{reason} label of datagrams the kernel dropped: the buffer was full."""

NOT_SENT = {UNSENT: "send_failed", UNCOMMITTED: "commit_failed"}
"""The C{reason} label of each reason a reply was not sent."""

CODES = [code.decode("ascii") for code, _, _ in REQUEST_CODES]

IDLE_CONNECTION_TIMEOUT = 10
"""Seconds a scraper's connection may stay idle: there is no reason to wait longer."""


class ChatCollector(Collector):
    """
    The metrics of one server, read from its counters at each scrape.

    @param chat: the L{udpchat.server.ChatService}: its protocol's counters,
        its room, and its port's socket (for what the kernel counts).
    @param ticks: the L{TickTimer} of the reactor, or L{None}.
    @param reactor: the reactor, whose pending timed calls are counted.
    """

    def __init__(self, chat, ticks=None, reactor=None):
        self._chat = chat
        self._ticks = ticks
        self._reactor = reactor

    def collect(self):
        protocol = self._chat.protocol
        room = protocol.room
        yield InfoMetricFamily("udpchat", "The udpchat version.", value={"version": __version__})

        requests = CounterMetricFamily(
            "udpchat_requests",
            "Datagrams that reached the room, by request code (their first byte, 0 "
            "to 9, or illegal: none) and outcome (ok: done as asked; refused: Illegal "
            "message, or a session's refusal; unanswered: no reply; failed: a bug).",
            labels=("code", "outcome"),
        )
        counts = {(code, OK): 0 for code in CODES}
        counts[NO_CODE, REFUSED] = 0
        counts.update(protocol.requests())
        for (code, outcome), count in sorted(counts.items()):
            requests.add_metric([code, outcome], count)
        yield requests

        dropped = CounterMetricFamily(
            "udpchat_datagrams_dropped",
            "Datagrams dropped before the room saw them, by reason: by the limits "
            "(bad_source, request_rate, reply_budget, limiter_full), or by the "
            "kernel while the receive buffer was full (receive_buffer).",
            labels=("reason",),
        )
        by_reason = dict.fromkeys(DROP_REASONS.values(), 0)
        for reason, count in protocol.dropped().items():
            label = DROP_REASONS.get(reason, "other")
            by_reason[label] = by_reason.get(label, 0) + count
        kernel = socket_counters(self._socket())
        if kernel is not None:
            by_reason[RECEIVE_BUFFER] = kernel[1]
        for reason, count in by_reason.items():
            dropped.add_metric([reason], count)
        yield dropped

        not_sent = CounterMetricFamily(
            "udpchat_replies_not_sent",
            "Replies not sent, by reason: the kernel refused them (send_failed), or "
            "the commit they waited for failed (commit_failed).",
            labels=("reason",),
        )
        for key, reason in NOT_SENT.items():
            not_sent.add_metric([reason], protocol.counts[key])
        yield not_sent

        yield _counter(
            "udpchat_datagrams_received", "Datagrams read from the socket.", protocol.received
        )
        yield _counter(
            "udpchat_received_bytes",
            "Payload bytes of the datagrams read.",
            protocol.received_bytes,
        )
        yield _counter("udpchat_sent_bytes", "Payload bytes of the replies sent.", protocol.sent_bytes)
        yield _counter(
            "udpchat_session_repeats",
            "Session requests that came again and were answered as the first time "
            "(their replies were lost, or late).",
            room.repeats,
        )
        yield _counter(
            "udpchat_idle_removals",
            "Members removed after the idle timeout.",
            room.events_reported[Expired],
        )
        yield _counter(
            "udpchat_faults", "Bugs hit (each logged at most once a minute).", protocol.counts[FAULT]
        )
        yield GaugeMetricFamily("udpchat_members", "Members in the room.", value=room.member_count)
        yield GaugeMetricFamily(
            "udpchat_max_members", "Most members the room takes (--max-members).",
            value=room.max_members,
        )
        yield GaugeMetricFamily(
            "udpchat_stored_lines",
            "Lines held for members that have yet to read them (each once).",
            value=room.stored_lines,
        )
        if kernel is not None:
            yield GaugeMetricFamily(
                "udpchat_receive_queue_bytes",
                "Bytes waiting in the socket's receive buffer.",
                value=kernel[0],
            )
        if protocol.store is not None:
            yield _histogram(
                "udpchat_commit_seconds",
                "Time of each commit to the state file that wrote something.",
                protocol.commit_durations,
            )
            yield _counter(
                "udpchat_commit_failures",
                "Commits to the state file that failed (their batches undone).",
                protocol.commit_failures,
            )
        if self._ticks is not None and self._ticks.installed:
            yield _histogram(
                "udpchat_reactor_tick_seconds",
                "Time the reactor spent in each turn of its loop, from one poll for "
                "I/O to the next: how long a datagram may wait to be read.",
                self._ticks.durations,
            )
        if self._reactor is not None:
            yield GaugeMetricFamily(
                "udpchat_reactor_delayed_calls",
                "Timed calls the reactor has pending.",
                value=len(self._reactor.getDelayedCalls()),
            )

    def _socket(self):
        port = self._chat.port
        return getattr(port, "socket", None)


def _counter(name, documentation, value):
    metric = CounterMetricFamily(name, documentation)
    metric.add_metric([], value)
    return metric


def _histogram(name, documentation, durations):
    metric = HistogramMetricFamily(name, documentation)
    buckets = [(_bound(bound), count) for bound, count in durations.cumulative()]
    metric.add_metric([], buckets, durations.sum)
    return metric


def _bound(bound):
    return "+Inf" if bound == float("inf") else repr(float(bound))


def socket_counters(sock):
    """
    C{(bytes queued, datagrams dropped)} that the kernel counts for the UDP
    socket C{sock}, from C{/proc/self/net/udp} or C{udp6} (Linux); L{None}
    where they cannot be read.  The kernel drops a datagram that finds the
    receive buffer full: the server never sees it.
    """
    if sock is None:
        return None
    try:
        inode = str(os.fstat(sock.fileno()).st_ino)
        table = "udp6" if sock.family == socket.AF_INET6 else "udp"
        with open(f"/proc/self/net/{table}") as lines:
            next(lines)  # the heading
            for line in lines:
                # sl local remote st tx:rx tr:when retransmits uid timeout
                # inode ref pointer drops
                fields = line.split()
                if fields[9] == inode:
                    return int(fields[4].partition(":")[2], 16), int(fields[12])
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return None


class MetricsPage(Resource):
    """
    C{/metrics}: the registry's metrics in the text format the scraper asks
    for (Prometheus' or OpenMetrics'), rendered at once in the reactor's
    thread.
    """

    isLeaf = True

    def __init__(self, registry):
        Resource.__init__(self)
        self._registry = registry

    def render_GET(self, request):
        accept = request.getHeader(b"accept")
        encoder, content_type = choose_encoder(accept.decode("latin-1") if accept else None)
        body = encoder(self._registry)
        request.setHeader(b"content-type", content_type.encode("ascii"))
        return body


class _Root(Resource):
    """Nothing but C{/metrics}."""

    def __init__(self, page):
        Resource.__init__(self)
        self.putChild(b"metrics", page)

    def render(self, request):
        return notFound().render(request)


class MetricsSite(Site):
    """A site that logs no access: a scrape every few seconds would fill the log."""

    noisy = False

    def log(self, request):
        pass


class MetricsService(Service):
    """
    Serve C{/metrics} over HTTP on a TCP socket bound beforehand, as
    L{udpchat.server.ChatService} serves chat on its UDP socket: twistd
    builds this service before it forks and drops privileges, and the
    reactor adopts the socket when the service starts.  While it runs, the
    reactor's ticks are timed.

    @param sock: a bound, listening, non-blocking TCP socket, which this
        service owns.
    @param registry: the prometheus_client registry to serve.
    @param ticks: a L{TickTimer} to install on C{reactor}, or L{None}.
    """

    log = Logger()

    def __init__(self, sock, registry, reactor, ticks=None):
        self._socket = sock
        self.registry = registry
        self._reactor = reactor
        self._ticks = ticks
        self.port = None

    def startService(self):
        Service.startService(self)
        site = MetricsSite(_Root(MetricsPage(self.registry)), timeout=IDLE_CONNECTION_TIMEOUT)
        sock = self._socket
        self.port = self._reactor.adoptStreamPort(sock.fileno(), sock.family, site)
        sock.close()  # the port holds its own duplicate
        if self._ticks is not None:
            self._ticks.install(self._reactor)
        address = self.port.getHost()
        host, port = canonical_address((address.host, address.port))
        self.log.info(
            "udpchat metrics on http://{address}/metrics",
            address=format_address((host, port)),
            host=host,
            port=port,
        )

    def stopService(self):
        Service.stopService(self)
        if self._ticks is not None:
            self._ticks.uninstall()
        if self.port is None:
            return None
        return maybeDeferred(self.port.stopListening)


def metrics_service(sock, chat, reactor):
    """
    The service that serves the metrics of C{chat} (a
    L{udpchat.server.ChatService}) on C{sock}: its own, the reactor's, and
    the process's (CPU, memory, descriptors: prometheus_client's
    C{ProcessCollector}), in a registry of its own.
    """
    registry = CollectorRegistry()
    ticks = TickTimer(Durations(TICK_BUCKETS))
    registry.register(ChatCollector(chat, ticks, reactor))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return MetricsService(sock, registry, reactor, ticks)

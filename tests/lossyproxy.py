"""
A lossy UDP proxy for end-to-end tests: what a real network does to
datagrams, on loopback.

Clients send to the proxy's address instead of the server's.  The proxy
forwards each client's datagrams to the server from an upstream socket of
that client's own (so the server sees one source address per client, as it
would behind a NAT), and the server's replies back to the client.  In each
direction it drops a datagram with probability C{loss}, and may duplicate or
delay one (a delayed datagram is overtaken by later ones: reordering).  It
can I{rebind} a client, as a NAT that forgot its mapping does: the client's
upstream socket is closed and a new one, on a new port, carries its next
datagrams; replies to the old port are lost.

It knows nothing of udpchat's protocol.  It runs in a thread of the test
process, on plain non-blocking sockets and a selector, so that it serves
tests that block on sockets and subprocesses; every wait in it has a
timeout, its queues and its clients are bounded, and its randomness comes
from one seeded L{random.Random} that only its thread draws from.
"""

import heapq
import random
import selectors
import socket
import threading
import time
from collections import Counter

READ_BYTES = 65536
"""More than any datagram: none is cut."""

MAX_CLIENTS = 64
"""Datagrams from more client addresses than this are dropped, not proxied."""

MAX_HELD = 10000
"""At most this many datagrams wait to be sent (delayed); more are dropped."""

UPSTREAM = "upstream"
"""The direction from a client to the server."""

DOWNSTREAM = "downstream"
"""The direction from the server to a client."""


class LossyProxy:
    """
    A proxy on a free port of C{host} in front of C{server} (an address),
    started at once and stopped by L{stop}.

    @param loss: the probability that a datagram is dropped, in each
        direction.
    @param duplicate: the probability that a datagram that is not dropped
        is sent twice.
    @param delay: the probability that a datagram (or its copy) is held
        for up to C{max_delay} seconds, while later ones go on.
    @param seed: the seed of the proxy's random choices.
    @param rebind_every: if not None, rebind a client each time it has
        sent this many more datagrams.

    @ivar address: where clients send to.
    @ivar counts: a L{Counter} of C{(direction, fate)}: C{"forwarded"},
        C{"dropped"}, C{"duplicated"}, C{"delayed"}, C{"overflow"} (no room
        to hold it), C{"unsent"} (the socket refused it).
    """

    def __init__(
        self,
        server,
        loss=0.0,
        duplicate=0.0,
        delay=0.0,
        max_delay=0.05,
        seed=0,
        rebind_every=None,
        host="127.0.0.1",
    ):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.server = server
        self.loss, self.duplicate, self.delay, self.max_delay = loss, duplicate, delay, max_delay
        self.rebind_every = rebind_every
        self.counts = Counter()
        self._family, self._host = family, host
        self._random = random.Random(seed)
        self._lock = threading.Lock()  # guards what other threads read or ask for
        self._clients = {}  # client address -> _Client, in the order first seen
        self._rebinds = set()  # client addresses to rebind before their next datagram
        self._held = []  # heap of (due, order, socket, datagram, destination)
        self._order = 0
        self._selector = selectors.DefaultSelector()
        self._listening = socket.socket(family, socket.SOCK_DGRAM)
        self._listening.bind((host, 0))
        self._listening.setblocking(False)
        self.address = self._listening.getsockname()[:2]
        self._selector.register(self._listening, selectors.EVENT_READ, None)
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._selector.register(self._wake_reader, selectors.EVENT_READ, self._wake_reader)
        self._running = True
        self._thread = threading.Thread(target=self._run, name="lossy proxy", daemon=True)
        self._thread.start()

    # -- what tests call, from their own thread ---------------------------------

    def clients(self):
        """The client addresses seen so far, in the order first seen."""
        with self._lock:
            return list(self._clients)

    def upstream(self, client):
        """The address the server sees C{client} (a client address) come from."""
        with self._lock:
            return self._clients[client].upstream_address

    def sent_by(self, client):
        """The datagrams C{client} has sent so far (dropped ones included)."""
        with self._lock:
            return self._clients[client].sent

    def rebind(self, client):
        """
        Give C{client} a new upstream port before its next datagram, as a NAT
        that forgot its mapping would: what the server sends to the old one
        is lost.
        """
        with self._lock:
            self._rebinds.add(client)

    def rebinds(self, client):
        """How many times C{client} has been given a new upstream port."""
        with self._lock:
            return self._clients[client].rebinds

    def stop(self, timeout=10.0):
        """Stop the proxy's thread and close its sockets; safe to call twice."""
        if not self._running:
            return
        self._running = False
        try:
            self._wake_writer.send(b"x")
        except OSError:
            pass
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"the lossy proxy did not stop within {timeout} s")
        for client in self._clients.values():
            client.socket.close()
        for sock in (self._listening, self._wake_reader, self._wake_writer):
            sock.close()
        self._selector.close()

    # -- the proxy's thread ---------------------------------------------------

    def _run(self):
        while self._running:
            timeout = 0.5  # bounded, whatever happens
            if self._held:
                timeout = min(timeout, max(0.0, self._held[0][0] - time.monotonic()))
            for key, _ in self._selector.select(timeout):
                if key.data is self._wake_reader:
                    _drain(self._wake_reader)
                elif key.data is None:
                    self._from_clients()
                else:
                    self._from_server(key.fileobj, key.data)
            self._send_due()

    def _from_clients(self):
        for datagram, client in _datagrams(self._listening):
            client = client[:2]
            with self._lock:
                state = self._clients.get(client)
                if state is None:
                    if len(self._clients) >= MAX_CLIENTS:
                        self.counts[UPSTREAM, "overflow"] += 1
                        continue
                    state = self._clients[client] = _Client(self._upstream_socket(client))
                state.sent += 1
                every = self.rebind_every
                if client in self._rebinds or (every and state.sent % every == 0):
                    self._rebinds.discard(client)
                    self._rebind(client, state)
            self._forward(UPSTREAM, state.socket, datagram, None)

    def _from_server(self, sock, client):
        if sock.fileno() == -1:
            return  # rebound while this batch of events was being handled
        with self._lock:
            state = self._clients.get(client)
        for datagram, _ in _datagrams(sock):
            # A reply to a port that was given up is lost, as behind a NAT.
            if state is not None and state.socket is sock:
                self._forward(DOWNSTREAM, self._listening, datagram, client)

    def _upstream_socket(self, client):
        sock = socket.socket(self._family, socket.SOCK_DGRAM)
        sock.bind((self._host, 0))
        sock.connect(self.server)  # replies from anyone else are dropped
        sock.setblocking(False)
        self._selector.register(sock, selectors.EVENT_READ, client)
        return sock

    def _rebind(self, client, state):
        old = state.socket
        state.socket = self._upstream_socket(client)
        state.upstream_address = state.socket.getsockname()[:2]
        state.rebinds += 1
        self._selector.unregister(old)
        old.close()  # datagrams still held for it are lost ("unsent")

    def _forward(self, direction, sock, datagram, destination):
        draw = self._random.random
        if draw() < self.loss:
            self.counts[direction, "dropped"] += 1
            return
        copies = 1
        if self.duplicate and draw() < self.duplicate:
            copies = 2
            self.counts[direction, "duplicated"] += 1
        for _ in range(copies):
            if self.delay and draw() < self.delay:
                if len(self._held) >= MAX_HELD:
                    self.counts[direction, "overflow"] += 1
                    continue
                self.counts[direction, "delayed"] += 1
                due = time.monotonic() + draw() * self.max_delay
                self._order += 1
                heapq.heappush(self._held, (due, self._order, direction, sock, datagram, destination))
            else:
                self._send(direction, sock, datagram, destination)

    def _send_due(self):
        now = time.monotonic()
        while self._held and self._held[0][0] <= now:
            _, _, direction, sock, datagram, destination = heapq.heappop(self._held)
            self._send(direction, sock, datagram, destination)

    def _send(self, direction, sock, datagram, destination):
        try:
            if destination is None:
                sock.send(datagram)
            else:
                sock.sendto(datagram, destination)
        except OSError:  # a closed (rebound) socket, a full buffer, a refusal
            self.counts[direction, "unsent"] += 1
            return
        self.counts[direction, "forwarded"] += 1


class _Client:
    """A client of the proxy: its upstream socket, and what it has sent."""

    __slots__ = ("socket", "upstream_address", "sent", "rebinds")

    def __init__(self, sock):
        self.socket = sock
        self.upstream_address = sock.getsockname()[:2]
        self.sent = 0
        self.rebinds = 0


def _datagrams(sock, limit=1000):
    """The datagrams a non-blocking socket holds, with their senders (at most C{limit})."""
    for _ in range(limit):
        try:
            yield sock.recvfrom(READ_BYTES)
        except BlockingIOError:
            return
        except OSError:
            # ECONNREFUSED from an ICMP port unreachable on a connected
            # socket (a server that stopped): nothing to forward.
            continue


def _drain(sock):
    try:
        while sock.recv(4096):
            pass
    except BlockingIOError:
        pass

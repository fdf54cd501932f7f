"""
Durations kept as plain numbers: a histogram of whole counts, and the
reactor's tick time measured once per turn of its loop.

Nothing here imports a metrics library: the server counts with these
whether or not anybody scrapes, and L{udpchat.metrics} reads them when a
scrape comes.  The clock is a parameter (C{time.perf_counter} by default),
so tests pass their own.
"""

from bisect import bisect_left
from time import perf_counter

COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Upper bounds, in seconds, of the buckets of the store's commit times."""

TICK_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)
"""
Upper bounds, in seconds, of the buckets of the reactor's tick times: a
turn that handles a read of the socket takes tens of microseconds; one of
a second is a stall that every member notices.
"""


class Durations:
    """
    A histogram of durations as whole counts that only grow: how many fell
    at or under each bound, and their sum.  L{observe} costs a bisection and
    two additions, so it may run once per commit or per turn of the reactor,
    never once per datagram.

    @param bounds: the buckets' upper bounds in seconds, increasing.
    """

    def __init__(self, bounds):
        self.bounds = tuple(bounds)
        self._counts = [0] * (len(self.bounds) + 1)  # the last: above every bound
        self.sum = 0.0

    def observe(self, seconds):
        """Count one duration of C{seconds}."""
        self._counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    @property
    def count(self):
        """How many durations were observed."""
        return sum(self._counts)

    def cumulative(self):
        """
        C{(bound, count)} for each bound, the count being how many durations
        were at or under it, and C{(inf, count)} last: the form Prometheus
        histograms take.
        """
        total = 0
        buckets = []
        for bound, count in zip((*self.bounds, float("inf")), self._counts):
            total += count
            buckets.append((bound, total))
        return buckets


class TickTimer:
    """
    Time each turn of the reactor's loop: from the moment its poll for I/O
    returned to the moment it polls again, which is how long anything that
    waits for the next turn (a datagram, a timer) is held up.  This is how
    Synapse measures its reactor's tick time: the poller is wrapped, so that
    the cost is one observation per turn, however many datagrams it reads.

    It works with reactors that poll through a C{_poller} attribute with a
    C{poll} method (epoll, the default on Linux, and poll); L{install}
    says whether it could.

    @param durations: the L{Durations} to count ticks in.
    @param clock: a monotonic clock in seconds.
    """

    def __init__(self, durations, clock=perf_counter):
        self.durations = durations
        self._clock = clock
        self._reactor = None
        self._poller = None

    @property
    def installed(self):
        """Whether it times a reactor."""
        return self._reactor is not None

    def install(self, reactor):
        """
        Start timing the turns of C{reactor}'s loop.

        @return: whether C{reactor} can be timed so.
        """
        poller = getattr(reactor, "_poller", None)
        if poller is None or not callable(getattr(poller, "poll", None)):
            return False
        self._reactor, self._poller = reactor, poller
        reactor._poller = _TimedPoller(poller, self.durations.observe, self._clock)
        return True

    def uninstall(self):
        """Stop timing: give the reactor its own poller back."""
        if self._reactor is not None:
            self._reactor._poller = self._poller
            self._reactor = self._poller = None


class _TimedPoller:
    """A poller that observes the time between the end of one poll and the next."""

    def __init__(self, poller, observe, clock):
        self._poller = poller
        self._observe = observe
        self._clock = clock
        self._polled = clock()

    def poll(self, *args, **kwargs):
        clock = self._clock
        self._observe(clock() - self._polled)
        try:
            return self._poller.poll(*args, **kwargs)
        finally:
            self._polled = clock()

    def __getattr__(self, name):
        # register, modify, unregister, close...: the poller's own.
        return getattr(self._poller, name)

"""
Tests for L{udpchat.limits}: which datagrams reach the room at all.
"""

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from udpchat import limits
from udpchat.limits import (
    BAD_SOURCE,
    OVER_BUDGET,
    OVER_RATE,
    TABLE_FULL,
    Classifier,
    Limiter,
    TokenBuckets,
    parse_networks,
)

LOOPBACK = parse_networks(limits.DEFAULT_EXEMPT)


class Verdicts:
    """
    A L{Limiter} seen from a test: C{admit} says L{None} or the reason for
    a drop, and C{charge} takes the source it admitted.
    """

    def __init__(self, limiter):
        self.limiter = limiter
        self._admitted = {}

    def admit(self, source, now):
        admission = self.limiter.admit(source, now)
        if not admission:
            return admission.reason
        self._admitted[source] = admission
        return None

    def charge(self, source, payload_bytes, now):
        self.limiter.charge(self._admitted[source], payload_bytes, now)

    def group_of(self, source):
        return self.limiter.group_of(source)


def limiter(rate=10, burst=20, reply_rate=10_000, reply_burst=5_000, exempt=LOOPBACK, max_reply_bytes=1200):
    return Verdicts(
        Limiter(
            Classifier(exempt),
            requests=TokenBuckets(rate, burst),
            replies=TokenBuckets(reply_rate, reply_burst),
            max_reply_bytes=max_reply_bytes,
        )
    )


class ParseNetworksTests(SynchronousTestCase):
    def test_list(self):
        """A comma-separated list gives networks; a host is its /32 or /128."""
        self.assertEqual(
            [str(n) for n in parse_networks("10.0.0.0/8, ::1,192.0.2.7")],
            ["10.0.0.0/8", "::1/128", "192.0.2.7/32"],
        )

    def test_none(self):
        """'none' and the empty text are no network."""
        self.assertEqual((parse_networks("none"), parse_networks("")), ([], []))

    def test_garbage_is_refused(self):
        """Anything not a network raises ValueError."""
        for text in ("localhost", "10.0.0.0/33", "1.2.3.4,", "::1/200"):
            self.assertRaises(ValueError, parse_networks, text)


class ClassifierTests(SynchronousTestCase):
    def test_bad_sources(self):
        """Unspecified, broadcast, multicast and non-addresses are bad."""
        classify = Classifier([]).classify
        for host in ("0.0.0.0", "0.1.2.3", "255.255.255.255", "224.0.0.1", "239.1.2.3", "::", "ff02::1", "nonsense", ""):
            self.assertIs(classify(host), limits._BAD, host)

    def test_loopback_is_exempt_by_default(self):
        """127.0.0.0/8 and ::1 are exempt with the default networks."""
        classify = Classifier(LOOPBACK).classify
        for host in ("127.0.0.1", "127.200.0.9", "::1"):
            self.assertIs(classify(host), limits._EXEMPT, host)
        self.assertIsInstance(classify("128.0.0.1"), limits.Address)

    def test_keys_follow_the_prefixes(self):
        """IPv4: request key /32, reply and group /24; IPv6: /64, /56, /64."""
        classify = Classifier([]).classify
        a, b = classify("192.0.2.1"), classify("192.0.2.200")
        c, d = classify("2001:db8:0:1::1"), classify("2001:db8:0:1:ffff::2")
        e = classify("2001:db8:0:2::1")  # another /64, same /56
        self.assertEqual(
            (
                a.request_key == b.request_key,
                a.reply_key == b.reply_key,
                a.group == b.group,
                c.request_key == d.request_key,
                c.group == e.group,
                c.reply_key == e.reply_key,
                a.header_bytes,
                c.header_bytes,
            ),
            (False, True, True, True, False, True, 28, 48),
        )

    def test_scope_is_ignored(self):
        """A link-local address with a scope is classified by its address."""
        classify = Classifier([]).classify
        self.assertEqual(classify("fe80::1%eth0").request_key, classify("fe80::1").request_key)

    def test_cache_is_bounded(self):
        """However many hosts pass, the cache holds at most MAX_TRACKED."""
        classifier = Classifier([])
        for i in range(limits.MAX_TRACKED + 10):
            classifier.classify("10.%d.%d.%d" % (i >> 16, (i >> 8) & 255, i & 255))
        self.assertLessEqual(len(classifier.known), limits.MAX_TRACKED)


class TokenBucketsTests(SynchronousTestCase):
    def test_burst_then_rate(self):
        """A new key may take the burst at once, then the rate per second."""
        buckets = TokenBuckets(rate=2, burst=3)
        first = [buckets.take("k", 1, 0) for _ in range(4)]
        later = [buckets.take("k", 1, 1) for _ in range(3)]
        self.assertEqual((first, later), ([None, None, None, OVER_RATE], [None, None, OVER_RATE]))

    def test_refill_stops_at_burst(self):
        """A long silence refills the bucket to the burst, no more."""
        buckets = TokenBuckets(rate=100, burst=2)
        buckets.take("k", 2, 0)
        self.assertEqual([buckets.take("k", 1, 1000) for _ in range(3)], [None, None, OVER_RATE])

    def test_give_back_refills_up_to_burst(self):
        """Tokens given back return to the bucket, never beyond the burst."""
        buckets = TokenBuckets(rate=1, burst=10)
        buckets.take("k", 10, 0)
        buckets.give_back("k", 4)
        taken = [buckets.take("k", 1, 0) for _ in range(5)]
        buckets.give_back("k", 100)
        self.assertEqual((taken, [buckets.take("k", 10, 0), buckets.take("k", 1, 0)]), ([None] * 4 + [OVER_RATE], [None, OVER_RATE]))

    def test_clock_stepping_back_drains_nothing(self):
        """A wall clock set back does not drain a bucket."""
        buckets = TokenBuckets(rate=1, burst=2)
        buckets.take("k", 1, 100)
        self.assertEqual([buckets.take("k", 1, 70), buckets.take("k", 1, 71)], [None, None])

    def test_drained_oldest_bucket_does_not_block_new_keys(self):
        """A drained bucket at the head of a full table does not keep new keys out while others have refilled."""
        buckets = TokenBuckets(rate=1, burst=1, max_keys=4)
        buckets.take("drained", 1, 0)
        for key in ("a", "b", "c"):
            buckets.take(key, 1, 0)
            buckets.give_back(key, 1)  # full again at once
        self.assertEqual(buckets.take("new", 1, 0.1), None)

    def test_full_table_forgets_refilled_buckets(self):
        """A new key replaces the oldest bucket once that one has refilled."""
        buckets = TokenBuckets(rate=1, burst=2, max_keys=2)
        buckets.take("a", 2, 0)
        buckets.take("b", 2, 0)
        refused = buckets.take("c", 1, 1)  # "a" has 1 of 2 tokens back
        accepted = buckets.take("c", 1, 2)  # "a" is full again
        self.assertEqual((refused, accepted, len(buckets)), (TABLE_FULL, None, 2))

    def test_busy_keys_are_never_flushed(self):
        """A flood of new keys cannot flush the bucket of a key in use."""
        buckets = TokenBuckets(rate=1, burst=5, max_keys=3)
        for _ in range(5):
            buckets.take("victim", 1, 0)
        for i in range(100):
            buckets.take("forged%d" % (i,), 1, 0)
        self.assertEqual(buckets.take("victim", 1, 0), OVER_RATE)


class LimiterTests(SynchronousTestCase):
    def test_exempt_sources_are_never_limited(self):
        """Loopback passes every limit, however much it sends."""
        limit = limiter(rate=1, burst=1, reply_rate=1, reply_burst=1248)
        verdicts = [limit.admit(("127.0.0.1", 9), 0) for _ in range(1000)]
        for _ in range(1000):
            limit.charge(("127.0.0.1", 9), 1200, 0)
        self.assertEqual(set(verdicts), {None})

    def test_port_zero_and_bad_hosts_are_dropped(self):
        """Port 0, even from loopback, and bad hosts are dropped."""
        limit = limiter()
        self.assertEqual(
            [limit.admit(s, 0) for s in [("127.0.0.1", 0), ("192.0.2.1", 0), ("0.0.0.0", 9), ("255.255.255.255", 9), ("ff02::1", 9)]],
            [BAD_SOURCE] * 5,
        )

    def test_request_rate_per_address(self):
        """One address is limited; another address in its /24 is not."""
        limit = limiter(rate=1, burst=3)
        one = [limit.admit(("192.0.2.1", p), 0) for p in range(1, 5)]
        other = limit.admit(("192.0.2.2", 9), 0)
        self.assertEqual((one, other), ([None, None, None, OVER_RATE], None))

    def test_ipv6_request_rate_per_64(self):
        """Addresses in one IPv6 /64 share a bucket."""
        limit = limiter(rate=1, burst=2)
        verdicts = [limit.admit((f"2001:db8:0:1::{i}", 9), 0) for i in range(1, 4)]
        self.assertEqual((verdicts, limit.admit(("2001:db8:0:2::1", 9), 0)), ([None, None, OVER_RATE], None))

    def test_reply_budget_per_destination_prefix(self):
        """Replies to a /24 are charged together; once the budget cannot pay the largest reply, requests naming it are dropped."""
        limit = limiter(rate=1000, burst=1000, reply_rate=1, reply_burst=3 * 1228)
        verdicts = []
        for i in range(4):
            source = ("192.0.2.%d" % (i + 1,), 9)
            verdicts.append(limit.admit(source, 0))
            if verdicts[-1] is None:
                limit.charge(source, 1200, 0)
        other = limit.admit(("192.0.3.1", 9), 0)
        self.assertEqual((verdicts, other), ([None, None, None, OVER_BUDGET], None))

    def test_budget_counts_headers(self):
        """Each reply costs its payload plus 28 bytes (IPv4) of headers."""
        limit = limiter(reply_rate=1, reply_burst=1228 + 10 * 28)
        source = ("192.0.2.1", 9)
        for _ in range(10):
            limit.admit(source, 0)
            limit.charge(source, 0, 0)
        self.assertEqual(limit.admit(source, 0), None)
        limit.charge(source, 0, 0)
        self.assertEqual(limit.admit(source, 0), OVER_BUDGET)

    def test_budget_holds_before_replies_are_charged(self):
        """Admitted requests whose replies are not sent yet (waiting for a commit) still count against the budget."""
        limit = limiter(rate=1000, burst=1000, reply_rate=1, reply_burst=3 * 1228)
        verdicts = [limit.admit(("192.0.2.%d" % (i + 1,), 9), 0) for i in range(5)]
        self.assertEqual(verdicts, [None, None, None, OVER_BUDGET, OVER_BUDGET])

    def test_budget_drop_spends_no_request_token(self):
        """A request dropped for its destination's budget costs its source no token."""
        limit = limiter(rate=1, burst=1, reply_rate=1, reply_burst=1228)
        source = ("192.0.2.1", 9)
        limit.admit(("192.0.2.9", 9), 0)
        limit.charge(("192.0.2.9", 9), 1200, 0)
        self.assertEqual(limit.admit(source, 0), OVER_BUDGET)
        self.assertEqual(limit.admit(source, 1229), None)

    def test_narrowed_exemption(self):
        """With no exempt network, loopback is limited like any address."""
        limit = limiter(rate=1, burst=1, exempt=[])
        self.assertEqual([limit.admit(("127.0.0.1", 9), 0) for _ in range(2)], [None, OVER_RATE])

    def test_group_of(self):
        """Groups are /24 and /64; exempt sources have none."""
        limit = limiter()
        self.assertEqual(
            (
                limit.group_of(("192.0.2.1", 1)) == limit.group_of(("192.0.2.99", 2)),
                limit.group_of(("192.0.2.1", 1)) == limit.group_of(("192.0.3.1", 1)),
                limit.group_of(("127.0.0.1", 1)),
            ),
            (True, False, None),
        )

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.one_of(
                    st.ip_addresses().map(str),
                    st.text(max_size=20),
                ),
                st.integers(0, 65535),
                st.floats(0, 10, allow_nan=False),
                st.integers(0, 65507),
            ),
            max_size=50,
        )
    )
    def test_anything_gets_a_verdict(self, datagrams):
        """Any host string, port and time gets a verdict, never an exception."""
        limit = limiter()
        now = 0.0
        for host, port, step, size in datagrams:
            now += step
            verdict = limit.admit((host, port), now)
            self.assertIn(verdict, (None, BAD_SOURCE, OVER_RATE, OVER_BUDGET, TABLE_FULL))
            if verdict is None:
                limit.charge((host, port), size, now)

"""
Traffic limits, decided before the room sees a datagram.

A UDP source address can be forged, so the server must not trust it for
anything costly.  This module says, for each datagram, whether to handle it
at all: a token bucket of requests per source (an IPv4 address, an IPv6 /64)
keeps one sender from taking the server, and a budget of reply bytes per
destination prefix (IPv4 /24, IPv6 /56) bounds what any victim can be sent,
however many forged requests name it (the idea of DNS response rate
limiting).  A dropped datagram gets no reply and changes nothing.

No I/O here and no clock: time is a parameter.  The tables are bounded, since
forged sources are unlimited in number.
"""

import ipaddress
import socket
from collections import OrderedDict

IPV4_HEADER_BYTES = 28  # IPv4 (20) and UDP (8) headers
IPV6_HEADER_BYTES = 48  # IPv6 (40) and UDP (8) headers

DEFAULT_EXEMPT = "127.0.0.0/8,::1/128"
MAX_TRACKED = 16384
"""Entries per table; a new address beyond this waits for an old one to idle."""

# Reasons for a drop, as they appear in the log's summary.
BAD_SOURCE = "from a bad source address"
OVER_RATE = "over the request rate"
OVER_BUDGET = "over the reply budget"
TABLE_FULL = "from new addresses while the limiter was full"


class Refused:
    """
    L{Limiter.admit}'s answer for a datagram to drop: false, with a reason.
    """

    __slots__ = ("reason",)

    def __init__(self, reason):
        self.reason = reason

    def __bool__(self):
        return False

    def __repr__(self):
        return f"Refused({self.reason!r})"


_REFUSED = {reason: Refused(reason) for reason in (BAD_SOURCE, OVER_RATE, OVER_BUDGET, TABLE_FULL)}


class _Exempt:
    """The admission of a source that no per-address limit applies to."""

    __slots__ = ()
    header_bytes = 0
    limited = False


_EXEMPT = _Exempt()
_BAD = object()  # an address no reply may go to


class Address:
    """
    What the limits need to know of a source host: the keys of its request
    bucket, of its reply budget and of its group in the room, and how many
    header bytes a reply to it costs on the wire.
    """

    __slots__ = ("request_key", "reply_key", "group", "header_bytes")
    limited = True  # replies to it are charged to its budget

    def __init__(self, request_key, reply_key, group, header_bytes):
        self.request_key = request_key
        self.reply_key = reply_key
        self.group = group
        self.header_bytes = header_bytes


def parse_networks(text):
    """
    Parse a comma-separated list of networks (C{"127.0.0.0/8,::1"}); an
    empty text or C{none} is no network.

    @raise ValueError: for anything that is not an IP network.
    """
    if text.strip().lower() in ("", "none"):
        return []
    return [ipaddress.ip_network(item.strip(), strict=False) for item in text.split(",")]


class Classifier:
    """
    Sort source hosts into bad ones, exempt ones and limited ones.

    @param exempt: the networks whose sources no per-address limit applies
        to (by default loopback, which cannot be forged from outside).
    """

    def __init__(self, exempt):
        self._exempt = [
            (network.version, int(network.network_address), int(network.netmask))
            for network in exempt
        ]
        self.known = {}  # host -> what classify() said: a cache

    def classify(self, host):
        """
        Return an L{Address} for C{host} (an IP literal, IPv4 as dotted
        quad), or C{_EXEMPT}, or C{_BAD} for an address that cannot be a
        real peer (unspecified, broadcast, multicast, not an address).
        """
        cached = self.known.get(host)
        if cached is None:
            if len(self.known) >= MAX_TRACKED:
                self.known.clear()  # a cache, not state: start afresh
            cached = self.known[host] = self._classify(host)
        return cached

    def _classify(self, host):
        try:
            if ":" in host:
                version, packed = 6, socket.inet_pton(socket.AF_INET6, host.partition("%")[0])
            else:
                version, packed = 4, socket.inet_pton(socket.AF_INET, host)
        except (OSError, ValueError):
            return _BAD
        number = int.from_bytes(packed, "big")
        if version == 4:
            # 0.0.0.0/8 (this network), 224.0.0.0/4 (multicast), broadcast.
            if packed[0] == 0 or packed[0] >> 4 == 14 or number == 0xFFFFFFFF:
                return _BAD
        elif number == 0 or packed[0] == 0xFF:  # unspecified, multicast
            return _BAD
        for exempt_version, network, mask in self._exempt:
            if version == exempt_version and number & mask == network:
                return _EXEMPT
        if version == 4:
            return Address(packed, packed[:3], packed[:3], IPV4_HEADER_BYTES)
        return Address(packed[:8], packed[:7], packed[:8], IPV6_HEADER_BYTES)


class TokenBuckets:
    """
    One token bucket per key, in a table of at most L{MAX_TRACKED} keys.

    A bucket holds up to C{burst} tokens and gains C{rate} per second.  A
    bucket that has refilled is the same as no bucket, so the table makes
    room by forgetting its least recently used bucket once it is full again;
    while every bucket is in use, a new key is refused rather than let an
    attacker flush the buckets of the addresses it is abusing.

    @param rate: tokens gained per second.
    @param burst: the most tokens a bucket holds.
    """

    def __init__(self, rate, burst, max_keys=MAX_TRACKED):
        self.rate = rate
        self.burst = burst
        self._max_keys = max_keys
        self._buckets = OrderedDict()  # key -> [tokens, time], oldest first

    def __len__(self):
        return len(self._buckets)

    def take(self, key, need, now):
        """
        Take C{need} tokens from C{key}'s bucket at time C{now}.

        @return: L{None} if they were taken, else the reason they were not
            (L{OVER_RATE}, or L{TABLE_FULL} for a key with no bucket).
        """
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            if len(buckets) >= self._max_keys and not self._forget_oldest(now):
                return TABLE_FULL
            bucket = buckets[key] = [self.burst, now]
        else:
            buckets.move_to_end(key)
            # max(): the wall clock may step back; a bucket never drains so.
            bucket[0] = min(self.burst, bucket[0] + max(0.0, now - bucket[1]) * self.rate)
            bucket[1] = now
        if bucket[0] < need:
            return OVER_RATE
        bucket[0] -= need
        return None

    def give_back(self, key, tokens):
        """Return C{tokens} taken from C{key}'s bucket but not spent."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket[0] = min(self.burst, bucket[0] + tokens)

    def _forget_oldest(self, now, tries=8):
        # The least recently used bucket is the likeliest to have refilled;
        # one that has not (an attacker's, drained) goes to the back, so
        # that it cannot keep new keys out while others could make room.
        buckets = self._buckets
        for _ in range(min(tries, len(buckets))):
            key, (tokens, then) = next(iter(buckets.items()))
            if tokens + max(0.0, now - then) * self.rate >= self.burst:
                del buckets[key]
                return True
            buckets.move_to_end(key)
        return False


class Limiter:
    """
    The server's traffic limits, in the order a datagram meets them.

    @param classifier: a L{Classifier}, which knows the exempt networks.
    @param requests: L{TokenBuckets} of requests, one token per request.
    @param replies: L{TokenBuckets} of reply bytes, headers included.
    @param max_reply_bytes: the largest reply payload: a request is handled
        only if its destination's budget could pay for the largest reply.
    """

    def __init__(self, classifier, requests, replies, max_reply_bytes):
        self._classify = classifier.classify
        self._known = classifier.known.get
        self.requests = requests
        self.replies = replies
        self.max_reply_bytes = max_reply_bytes

    def admit(self, source, now):
        """
        Decide whether to handle a datagram from C{source}, a C{(host,
        port)} pair, at time C{now}.

        @return: a true admission, to pass to L{charge} with the reply; or
            a false L{Refused} with the reason to drop the datagram.
        """
        host, port = source
        address = self._known(host) or self._classify(host)
        if address is _EXEMPT:
            return address if port else _REFUSED[BAD_SOURCE]
        if address is _BAD or not port:
            return _REFUSED[BAD_SOURCE]
        # The largest reply is taken from the destination's budget now, and
        # what the real reply did not cost is given back when it is sent:
        # replies may wait (for a commit) while more requests are admitted.
        worst = self.max_reply_bytes + address.header_bytes
        refused = self.replies.take(address.reply_key, worst, now)
        if refused is not None:
            return _REFUSED[OVER_BUDGET if refused == OVER_RATE else refused]
        refused = self.requests.take(address.request_key, 1, now)
        if refused is not None:
            self.replies.give_back(address.reply_key, worst)
            return _REFUSED[refused]
        return address

    def charge(self, admission, payload_bytes, now):
        """
        Settle the reply, of C{payload_bytes}, sent at C{now} for a datagram
        that L{admit} admitted with C{admission}: its destination's budget
        gets back what the largest reply would have cost more.  A reply
        never sent is charged as the largest.
        """
        if admission.limited:
            self.replies.give_back(
                admission.reply_key, self.max_reply_bytes - payload_bytes
            )

    def group_of(self, source):
        """
        The key of C{source}'s group of addresses for the room's member cap
        (IPv4 /24, IPv6 /64), or L{None} for an exempt source.
        """
        address = self._classify(source[0])
        return None if address is _EXEMPT or address is _BAD else address.group

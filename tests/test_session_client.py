"""
Tests of the client side of sessions (L{udpchat.reliable}): the
retransmission timeout (RFC 6298's numbers), a request sent again until
answered, backed off, and given up; L{SessionClient} playing README.rst's
rules, the test answering as the server would, datagram by datagram, on a
L{Clock} and a fake transport; and the chat mode on top of it
(L{console.ChatSession}): what it shows, the session lost and joined again,
giving up, and the fallback to 1.0 against a server without sessions.  The
real command runs only for its stderr and exit status; the whole chat mode
against the real server through a lossy network is in
tests/test_session_client_network.py (simulated) and in
tests/test_sessions_e2e.py (real processes).
"""

from twisted.internet.task import Clock
from twisted.internet.testing import FakeDatagramTransport
from twisted.trial.unittest import SynchronousTestCase

from tests.test_client import SERVER, STRANGER, CommandTestCase, FakeStdio, UnroutableTransport
from tests.test_console import FakeScreen
from udpchat import console, reliable, wire
from udpchat.reliable import RoundTrips, SessionClient
from udpchat.session import NO_REPLY, Refused

TOKEN = b"ab" * 16
OTHER_TOKEN = b"cd" * 16
GAVE_UP = "no reply from the server for 30 seconds"


def nonces():
    """Fixed nonces, one per registration: 00...01, 00...02..."""
    count = 0

    def nonce():
        nonlocal count
        count += 1
        return b"%032x" % count

    return nonce


def nonce(n):
    return b"%032x" % n


class RoundTripsTests(SynchronousTestCase):
    """
    L{RoundTrips}: RFC 6298's estimator, with the chat's floor, ceiling
    and start.
    """

    def test_one_second_before_any_measurement(self):
        """The timeout starts at 1 s, and backing off doubles it up to 8 s."""
        round_trips = RoundTrips()
        timeouts = [round_trips.timeout]
        for _ in range(5):
            round_trips.back_off()
            timeouts.append(round_trips.timeout)
        self.assertEqual(timeouts, [1.0, 2.0, 4.0, 8.0, 8.0, 8.0])

    def test_measurements_as_rfc_6298_computes_them(self):
        """
        The first round trip R sets SRTT = R and RTTVAR = R/2; later ones
        move RTTVAR by 1/4 of |SRTT - R| and then SRTT by 1/8 toward R; the
        timeout is SRTT + 4 RTTVAR.
        """
        round_trips = RoundTrips()
        round_trips.measured(0.5)
        self.assertEqual((round_trips.srtt, round_trips.rttvar, round_trips.timeout), (0.5, 0.25, 1.5))
        round_trips.measured(0.3)
        self.assertAlmostEqual(round_trips.rttvar, 0.75 * 0.25 + 0.25 * 0.2)
        self.assertAlmostEqual(round_trips.srtt, 0.875 * 0.5 + 0.125 * 0.3)
        self.assertAlmostEqual(round_trips.timeout, 0.475 + 4 * 0.2375)

    def test_floor_and_ceiling(self):
        """Round trips of a millisecond give 0.2 s; of 10 s, 8 s."""
        fast, slow = RoundTrips(), RoundTrips()
        for _ in range(50):
            fast.measured(0.001)
            slow.measured(10.0)
        self.assertEqual((fast.timeout, slow.timeout), (0.2, 8.0))

    def test_a_measurement_ends_the_back_off(self):
        """Backed off, the timeout stays so until a round trip is measured."""
        round_trips = RoundTrips()
        round_trips.measured(0.1)
        self.assertAlmostEqual(round_trips.timeout, 0.3)
        round_trips.back_off()
        round_trips.back_off()
        self.assertAlmostEqual(round_trips.timeout, 1.2)
        round_trips.measured(0.1)
        self.assertAlmostEqual(round_trips.timeout, 0.1 + 4 * 0.0375)


class RetransmissionTests(SynchronousTestCase):
    """
    L{reliable.Retransmission}: one request sent until answered.
    """

    def setUp(self):
        self.clock = Clock()
        self.round_trips = RoundTrips()
        self.sent = []
        self.expired = []

    def start(self, give_up=30.0):
        return reliable.Retransmission(
            self.clock,
            self.round_trips,
            lambda: self.sent.append(self.clock.seconds()),
            give_up,
            lambda: self.expired.append(self.clock.seconds()),
        )

    def test_sent_again_backed_off_then_given_up(self):
        """Sent at 0, 1, 3, 7, 15 and 23 s (waits of 1, 2, 4, 8, 8): given up at 30 s."""
        self.start()
        self.clock.pump([0.5] * 200)
        self.assertEqual(self.sent, [0, 1, 3, 7, 15, 23])
        self.assertEqual(self.expired, [30])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_an_answer_stops_it_and_measures_the_round_trip(self):
        """Answered before any repeat, the round trip is measured; nothing more is sent."""
        sending = self.start()
        self.clock.advance(0.25)
        sending.answered()
        self.clock.advance(100)
        self.assertEqual((self.sent, self.expired), ([0], []))
        self.assertEqual(self.round_trips.srtt, 0.25)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_no_measurement_from_a_repeated_request(self):
        """Karn's rule: the reply to a repeat measures nothing, and the back-off stays."""
        sending = self.start()
        self.clock.pump([1, 0.1])
        sending.answered()
        self.assertEqual((self.sent, self.round_trips.srtt), ([0, 1], None))
        self.assertEqual(self.round_trips.timeout, 2.0)

    def test_the_timeout_measured_is_the_wait(self):
        """After a round trip of 0 s the next request waits 0.2 s (the floor), then 0.4 s."""
        self.clock.advance(0.05)
        self.start().answered()  # at once: 0 s
        self.sent.clear()
        self.start()
        self.clock.pump([0.05] * 12)
        self.assertEqual([round(t, 2) for t in self.sent], [0.05, 0.25, 0.65])


class SessionClientTestCase(SynchronousTestCase):
    """
    A L{SessionClient} on a fake transport and a L{Clock}, what it shows,
    warns, and is told kept in lists; the test plays the server.
    """

    poll_interval = 0
    timeout = 30.0

    def setUp(self):
        self.clock = Clock()
        self.transport = FakeDatagramTransport()
        self.shown = []
        self.warned = []
        self.told = []
        self.client = SessionClient(
            SERVER,
            self.clock,
            show=self.shown.append,
            warn=self.warned.append,
            forgotten=lambda: self.told.append("forgotten"),
            lost=self.lost,
            gave_up=lambda message: self.told.append(message),
            poll_interval=self.poll_interval,
            timeout=self.timeout,
            new_nonce=nonces(),
        )
        self.client.makeConnection(self.transport)

    def lost(self, joined):
        self.told.append("lost")
        self.rejoined = joined

    def sent(self):
        """The datagrams sent so far, each to the server."""
        self.assertEqual({address for _, address in self.transport.written} - {SERVER}, set())
        return [datagram for datagram, _ in self.transport.written]

    def answer(self, reply, source=SERVER):
        self.client.datagramReceived(reply, source)

    def registered(self, names=b"", position=7):
        """Register as Cy, the server answering with C{TOKEN}; return the Deferred's result."""
        joined = self.client.join("Cy")
        self.answer(b"0 %s %d" % (TOKEN, position) + (b"\n" + names if names else b""))
        return self.successResultOf(joined)


class SessionClientTests(SessionClientTestCase):
    """
    L{SessionClient}: the requests of README.rst's "Sessions", one at a
    time, each sent until its reply arrives.
    """

    def test_registration_then_numbered_requests(self):
        """6 Nonce Name, then 7, 9, 8 (from the position given) and 0, numbered from 1."""
        self.assertEqual(self.registered(b"Bo, Al"), b"Bo, Al")
        said = self.client.say("hi")
        renamed = self.client.rename("Cyd")
        polled = self.client.poll()
        self.assertEqual(self.sent(), [b"6 %s Cy" % nonce(1), b"7 %s 1 hi" % TOKEN])
        self.answer(b"1")
        self.answer(b"2")
        self.answer(b"3 9\nBo: yo\nAl: hey")
        finished = self.client.finish()
        self.answer(b"4")
        self.assertEqual(
            self.sent()[2:],
            [b"9 %s 2 Cyd" % TOKEN, b"8 %s 3 7" % TOKEN, b"0 %s 4" % TOKEN],
        )
        self.assertEqual(
            [self.successResultOf(d) for d in (said, renamed, polled)], [b"", b"", b"Bo: yo\nAl: hey"]
        )
        self.successResultOf(finished)
        self.assertEqual((self.client.name, self.client.registered), ("Cyd", False))
        self.assertEqual((self.warned, self.told, self.client.unanswered), ([], [], 0))

    def test_the_next_poll_names_the_position_the_last_gave(self):
        """Each poll sends the position of the last poll's reply."""
        self.registered(position=3)
        for position in (5, 5, 12):
            self.client.poll()
            self.answer(b"%d %d" % (self.client._seq, position))
        self.client.poll()
        self.assertEqual(
            [datagram.rsplit(b" ", 1)[1] for datagram in self.sent()[1:]], [b"3", b"5", b"5", b"12"]
        )

    def test_a_request_is_sent_again_the_same_until_answered(self):
        """
        A lost reply: the same bytes again after the timeout (1 s before any
        round trip was measured), 2 s more, 4 s more; then the reply.
        """
        self.client.join("Cy")
        for wait in (1, 2, 4):
            self.clock.advance(wait - 0.01)
            count = len(self.sent())
            self.clock.advance(0.01)
            self.assertEqual(len(self.sent()), count + 1)
        self.answer(b"0 %s 7" % TOKEN)
        self.assertEqual(self.sent(), [b"6 %s Cy" % nonce(1)] * 4)
        said = self.client.say("hi")
        self.clock.advance(8 - 0.01)  # backed off until a round trip is measured
        self.answer(b"1")
        self.assertEqual(self.successResultOf(said), b"")
        self.clock.advance(100)
        self.assertEqual(self.sent()[4:], [b"7 %s 1 hi" % TOKEN])

    def test_a_registration_is_sent_again_with_the_same_nonce(self):
        """The registration's repeat is the same datagram: the same nonce."""
        self.client.join("Cy")
        self.clock.advance(1)
        self.assertEqual(self.sent(), [b"6 %s Cy" % nonce(1)] * 2)

    def test_one_request_outstanding_at_a_time(self):
        """A request waits for the reply to the one before, however long it takes."""
        self.registered()
        self.client.say("a")
        self.client.say("b")
        self.clock.advance(20)
        self.assertEqual(set(self.sent()[1:]), {b"7 %s 1 a" % TOKEN})
        self.answer(b"1")
        self.assertEqual(self.sent()[-1], b"7 %s 2 b" % TOKEN)

    def test_late_duplicates_and_strangers_are_ignored(self):
        """
        A reply with another number, a registration's reply once registered,
        a datagram from another address, or no reply at all: none is taken
        for the reply to the request outstanding.
        """
        self.registered()
        self.client.say("a")
        self.answer(b"1")
        polled = self.client.poll()
        for stray in (b"1", b"0 %s 7" % TOKEN, b"2", b"9 12\nBo: late", b"x", b"2\n"):
            self.answer(stray)
        self.answer(b"2 9\nBo: real", source=STRANGER)
        self.assertNoResult(polled)
        self.answer(b"2 9\nBo: real")
        self.answer(b"2 9\nBo: real")  # the reply to a repeat
        self.assertEqual(self.successResultOf(polled), b"Bo: real")
        self.assertEqual(self.sent()[-1], b"8 %s 2 7" % TOKEN)

    def test_a_dropped_lines_notice_is_shown_once(self):
        """
        A poll's notice comes again in the reply to its repeat (the server
        repeats it until the next request): only one reply per number is
        taken, so it is shown once.
        """
        self.registered()
        polled = self.client.poll()
        self.clock.advance(1)  # repeated: both replies arrive
        self.answer(b"1 9\n[3 lines dropped]\nBo: a")
        self.answer(b"1 10\n[3 lines dropped]\nBo: a\nBo: b")
        self.assertEqual(self.successResultOf(polled), b"[3 lines dropped]\nBo: a")
        again = self.client.poll()
        self.assertEqual(self.sent()[-1], b"8 %s 2 9" % TOKEN)
        self.answer(b"2 10\nBo: b")
        self.assertEqual(self.successResultOf(again), b"Bo: b")

    def test_refusals_carry_their_reason(self):
        """Seq refused Reason: the request's Deferred fires with Refused(Reason)."""
        self.registered()
        renamed = self.client.rename("Bo")
        self.answer(b"1 refused name taken")
        self.assertEqual(self.successResultOf(renamed), Refused(wire.NAME_TAKEN))
        self.assertEqual(self.client.name, "Cy")

    def test_a_refused_registration(self):
        """0 refused Reason: the join's Deferred fires with Refused(Reason); nothing is registered."""
        joined = self.client.join("Bo")
        self.answer(b"0 refused name taken")
        self.assertEqual(self.successResultOf(joined), Refused(wire.NAME_TAKEN))
        self.assertFalse(self.client.registered)
        self.assertIs(self.client.sessions, True)

    def test_unknown_session_registers_again_and_sends_the_request_anew(self):
        """
        Seq unknown: the client says so (lost), registers again with a new
        nonce and the same name, and sends the request again in the new
        session, numbered from 1.
        """
        self.registered()
        self.client.rename("Cyd")
        self.answer(b"1")
        said = self.client.say("hi")
        self.answer(b"2 unknown")
        self.assertEqual(self.told, ["lost"])
        self.assertEqual(self.sent()[-1], b"6 %s Cyd" % nonce(2))
        self.answer(b"0 %s 40\nBo" % OTHER_TOKEN)
        self.assertEqual(self.successResultOf(self.rejoined), b"Bo")
        self.assertEqual(self.sent()[-1], b"7 %s 1 hi" % OTHER_TOKEN)
        self.assertNoResult(said)
        self.answer(b"1")
        self.assertEqual(self.successResultOf(said), b"")
        self.client.poll()
        self.assertEqual(self.sent()[-1], b"8 %s 2 40" % OTHER_TOKEN)

    def test_a_late_reply_to_the_lost_session_s_registration_is_ignored(self):
        """Registering again, the old registration's reply (its token) is no reply."""
        self.registered()
        self.client.poll()
        self.answer(b"1 unknown")
        self.answer(b"0 %s 7" % TOKEN)
        self.assertFalse(self.client.registered)
        self.answer(b"0 %s 9" % OTHER_TOKEN)
        self.assertTrue(self.client.registered)

    def test_unknown_after_a_leave_is_the_leave_done(self):
        """The reply to a repeated 0 may be Seq unknown: the leave is done, nothing more is sent."""
        self.registered()
        finished = self.client.finish()
        self.clock.advance(1)
        self.answer(b"1 unknown")
        self.successResultOf(finished)
        self.assertEqual(self.sent()[1:], [b"0 %s 1" % TOKEN] * 2)
        self.assertEqual(self.told, [])

    def test_giving_up(self):
        """
        30 s without a reply: the client says so once, every request waiting
        fires with None, finishing ends, and nothing more is sent.
        """
        self.registered()
        said = self.client.say("a")
        waiting = self.client.say("b")
        self.clock.advance(29.9)
        self.assertEqual(self.told, [])
        self.clock.advance(0.1)
        self.assertEqual(self.told, [GAVE_UP])
        self.assertEqual([self.successResultOf(d) for d in (said, waiting)], [None, None])
        count = len(self.sent())
        self.assertIsNone(self.successResultOf(self.client.finish()))
        self.assertIsNone(self.successResultOf(self.client.poll()))
        self.clock.advance(100)
        self.assertEqual(len(self.sent()), count)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_giving_up_while_finishing(self):
        """A leave that gets no reply ends the finishing when the client gives up."""
        self.registered()
        finished = self.client.finish()
        self.clock.advance(30)
        self.assertIsNone(self.successResultOf(finished))
        self.assertEqual(self.told, [GAVE_UP])

    def test_a_send_refused_by_the_system_is_said_once(self):
        """No route: said once; the request goes on being sent, and given up in time."""
        client = SessionClient(
            SERVER, self.clock, self.shown.append, self.warned.append, None, None,
            self.told.append, poll_interval=0, new_nonce=nonces(),
        )
        client.makeConnection(UnroutableTransport())
        joined = client.join("Cy")
        self.clock.advance(30)
        self.assertEqual(self.warned, ["cannot send to 127.0.0.1 port 12345: Network is unreachable"])
        self.assertEqual((self.successResultOf(joined), self.told), (None, [GAVE_UP]))

    def test_a_cut_reply_is_not_taken(self):
        """A datagram the system cut is said, and not taken: the request goes on."""
        self.registered()
        polled = self.client.poll()
        self.answer(b"1 9\n" + b"x" * 65536)
        self.assertNoResult(polled)
        self.assertEqual(len(self.warned), 1)
        self.answer(b"1 9\nBo: a")
        self.assertEqual(self.successResultOf(polled), b"Bo: a")

    def test_raw_requests_are_sent_once_as_they_are(self):
        """A raw request goes as typed, once; its reply is the next datagram, or None after 2 s."""
        self.registered()
        answered = self.client.raw(b"5")
        self.answer(b"Illegal message")
        lost = self.client.raw(b"2 x")
        self.clock.advance(2)
        self.assertEqual(self.sent()[1:], [b"5", b"2 x"])
        self.assertEqual(self.successResultOf(answered), b"Illegal message")
        self.assertIsNone(self.successResultOf(lost))
        self.assertEqual(self.client.unanswered, 1)

    def test_the_round_trip_sets_the_wait(self):
        """A registration answered in 50 ms: the next request is sent again after 0.2 s."""
        self.client.join("Cy")
        self.clock.advance(0.05)
        self.answer(b"0 %s 0" % TOKEN)
        self.client.say("hi")
        self.clock.advance(0.19)
        self.assertEqual(len(self.sent()), 2)
        self.clock.advance(0.01)
        self.assertEqual(len(self.sent()), 3)

    def test_illegal_message_to_a_numbered_request_means_forgotten(self):
        """
        A server that takes no session request any more (restarted without
        sessions): the request is refused, the client says forgotten, and
        the next registration may fall back.
        """
        self.registered()
        said = self.client.say("hi")
        self.answer(wire.ILLEGAL)
        self.assertEqual(self.successResultOf(said), Refused())
        self.assertEqual((self.told, self.client.registered), (["forgotten"], False))
        self.client.join("Cy")
        self.answer(wire.ILLEGAL)
        self.assertEqual(self.warned, [reliable.FALLBACK])
        self.assertEqual(self.sent()[-1], b"1 Cy")


class AutomaticPollTests(SessionClientTestCase):
    """
    The automatic polls: every second while registered, at once after a
    reply that brought lines.
    """

    poll_interval = 1.0

    def test_polls_every_second_and_drains_at_once(self):
        """A second after registering, then at once while replies bring lines."""
        self.registered(position=3)
        self.clock.advance(0.99)
        self.assertEqual(len(self.sent()), 1)
        self.clock.advance(0.01)
        self.assertEqual(self.sent()[-1], b"8 %s 1 3" % TOKEN)
        self.answer(b"1 5\nBo: a\nBo: b")
        self.clock.advance(0)
        self.assertEqual(self.sent()[-1], b"8 %s 2 5" % TOKEN)
        self.answer(b"2 5")
        self.clock.advance(0.99)
        self.assertEqual(len(self.sent()), 3)
        self.clock.advance(0.01)
        self.assertEqual(self.sent()[-1], b"8 %s 3 5" % TOKEN)
        self.assertEqual(self.shown, [b"Bo: a\nBo: b"])

    def test_a_poll_waits_behind_requests_and_is_not_queued_twice(self):
        """While a message waits for its reply, one poll waits behind it."""
        self.registered()
        self.client.say("slow")
        self.clock.advance(5)
        self.answer(b"1")
        self.assertEqual(self.sent()[-1], b"8 %s 2 7" % TOKEN)
        self.answer(b"2 7")
        self.assertEqual(len([d for d in self.sent() if d.startswith(b"8 ")]), 1)

    def test_a_refused_automatic_poll_is_said_once(self):
        """An automatic poll refused (another member has our address): said once, polling goes on."""
        self.registered()
        for seq in (1, 2):
            self.clock.advance(1)
            self.answer(b"%d refused address in use" % seq)
        self.clock.advance(1)
        self.assertEqual(self.warned, ["the server refused an automatic poll: address in use"])
        self.assertEqual(self.sent()[-1], b"8 %s 3 7" % TOKEN)

    def test_an_unknown_automatic_poll_is_not_sent_again(self):
        """The automatic poll that met a lost session is dropped; polling resumes once registered."""
        self.registered()
        self.clock.advance(1)
        self.answer(b"1 unknown")
        self.clock.advance(5)
        self.assertEqual(self.sent()[-1][:2], b"6 ")
        self.answer(b"0 %s 2" % OTHER_TOKEN)
        self.clock.advance(1)
        self.assertEqual(self.sent()[-1], b"8 %s 1 2" % OTHER_TOKEN)

    def test_a_lost_session_while_finishing_is_not_joined_for_nothing(self):
        """An automatic poll answered unknown while leaving: nothing to deliver, no registration."""
        self.registered()
        self.clock.advance(1)
        finished = self.client.finish()
        self.answer(b"1 unknown")
        self.assertIsNone(self.successResultOf(finished))
        self.assertEqual(len(self.sent()), 2)
        self.assertEqual(self.told, [])

    def test_finishing_stops_polling(self):
        """Once finishing, no poll is sent: the leave goes, and nothing after it."""
        self.registered()
        self.client.finish()
        self.answer(b"1")
        self.clock.advance(100)
        self.assertEqual(self.sent()[1:], [b"0 %s 1" % TOKEN])


class FallbackTests(SessionClientTestCase):
    """
    A server without sessions (udpchat 1.0) answers the registration
    Illegal message: the client says so once and talks 1.0 from then on,
    on the same socket.
    """

    poll_interval = 1.0

    def test_illegal_message_to_the_registration_falls_back_to_1_0(self):
        """The join becomes 1 Name; messages 2 Text; polls 5; the leave 4."""
        joined = self.client.join("Cy")
        self.answer(wire.ILLEGAL)
        self.assertEqual(self.warned, [reliable.FALLBACK])
        self.assertEqual(self.sent(), [b"6 %s Cy" % nonce(1), b"1 Cy"])
        self.answer(b"Bo")
        self.assertEqual(self.successResultOf(joined), b"Bo")
        said = self.client.say("hi")
        self.answer(b"")
        self.clock.advance(1)
        self.answer(b"Bo: yo")
        refused = self.client.rename("Bo")
        self.answer(wire.ILLEGAL)
        finished = self.client.finish()
        self.answer(b"")
        self.assertEqual(self.sent()[2:], [b"2 hi", b"5", b"3 Bo", b"4"])
        self.assertEqual(self.successResultOf(said), b"")
        self.assertEqual(self.successResultOf(refused), Refused())
        self.assertEqual(self.shown, [b"Bo: yo"])
        self.successResultOf(finished)
        self.assertEqual((self.warned, self.client.sessions), ([reliable.FALLBACK], False))

    def test_requests_made_while_registering_follow_the_fallback(self):
        """A raw request queued behind the registration goes after 1 Name."""
        self.client.join("Cy")
        raw = self.client.raw(b"5")
        self.answer(wire.ILLEGAL)
        self.answer(b"")
        self.answer(b"x")
        self.assertEqual(self.sent()[1:], [b"1 Cy", b"5"])
        self.assertEqual(self.successResultOf(raw), b"x")

    def test_a_refused_name_after_sessions_worked_is_no_fallback(self):
        """Once the server answered a registration, Illegal message to another is a refusal."""
        self.registered()
        self.client.poll()
        self.answer(b"1 unknown")
        self.answer(wire.ILLEGAL)
        self.assertEqual(self.successResultOf(self.rejoined), Refused())
        self.assertEqual((self.warned, self.client.sessions), ([], True))


def session_client(test, poll_interval=0, timeout=30.0):
    """A L{SessionClient} for C{test.session}, on C{test.clock} and C{test.transport}."""
    test.clock = Clock()
    test.transport = FakeDatagramTransport()
    session = test.session
    test.client = SessionClient(
        SERVER,
        test.clock,
        show=session.show,
        warn=session.warn,
        forgotten=session.forgotten,
        lost=session.lost,
        gave_up=session.gave_up,
        poll_interval=poll_interval,
        timeout=timeout,
        new_nonce=nonces(),
    )
    test.client.makeConnection(test.transport)
    return test.client


class ChatModeTestCase(SynchronousTestCase):
    """
    A L{console.ChatSession} through a L{SessionClient}, on a fake screen
    (or a L{console.LineScreen} on a fake stdio); the test plays the server.
    """

    def start(self, terminal=False, name="Alice", line_screen=False):
        self.complaints = []
        self.session = console.ChatSession(
            name, terminal=terminal, environ={}, complain=self.complaints.append
        )
        session_client(self)
        if line_screen:
            self.stdio = FakeStdio(console.LineScreen(self.session, complain=self.complaints.append))
            self.screen = self.stdio.protocol
        else:
            self.screen = FakeScreen()
        self.session.attach(self.client, self.screen)
        return self.session

    def sent(self):
        return [datagram for datagram, _ in self.transport.written]

    def answer(self, reply):
        self.client.datagramReceived(reply, SERVER)

    def joined(self, names=b"Bo"):
        self.answer(b"0 %s 7" % TOKEN + (b"\n" + names if names else b""))


class ChatModeTests(ChatModeTestCase):
    """
    The chat mode by sessions: what it sends and shows.
    """

    def test_a_chat(self):
        """Joined, messages, a rename, a poll and the leave, by session requests."""
        session = self.start()
        session.line_received(b"hi")
        self.joined()
        self.answer(b"1")
        session.line_received(b"/nick Al")
        self.answer(b"2")
        session.line_received(b"/poll")
        self.answer(b"3 9\nBo: yo\n[2 lines dropped]")
        session.line_received(b"/poll")
        self.answer(b"4 9")
        session.input_ended()
        self.answer(b"5")
        self.assertEqual(self.successResultOf(session.closed), 0)
        self.assertEqual(
            self.sent(),
            [
                b"6 %s Alice" % nonce(1),
                b"7 %s 1 hi" % TOKEN,
                b"9 %s 2 Al" % TOKEN,
                b"8 %s 3 7" % TOKEN,
                b"8 %s 4 9" % TOKEN,
                b"0 %s 5" % TOKEN,
            ],
        )
        self.assertEqual(
            self.screen.said,
            [
                ("In the group: Bo", console.EVENT),
                ("Alice: hi", console.PLAIN),
                ("You are now known as Al", console.EVENT),
                ("Bo: yo", console.PLAIN),
                ("[2 lines dropped]", console.EVENT),
                ("No new messages", console.EVENT),
            ],
        )
        self.assertEqual(self.complaints, [])

    def test_refusals_are_explained_by_their_reason(self):
        """A taken name, a full group: the reason the server gave, in words."""
        session = self.start()
        self.joined(b"")
        session.line_received(b"/nick Bo")
        self.answer(b"1 refused name taken")
        session.line_received(b"hi")
        self.answer(b"2 refused address in use")
        self.assertEqual(
            self.screen.said[1:],
            [
                ("the server refused the name 'Bo': it is taken", console.PROBLEM),
                (
                    "(not delivered: the server refused it: another member sends from your "
                    "address) Alice: hi",
                    console.PROBLEM,
                ),
            ],
        )

    def test_a_refused_name_on_a_terminal_asks_for_another(self):
        """0 refused name taken: on a terminal, the next line typed is a name."""
        session = self.start(terminal=True)
        self.answer(b"0 refused name taken")
        self.assertEqual(self.screen.prompt, "Name: ")
        session.line_received(b"Cy")
        self.assertEqual(self.sent()[-1], b"6 %s Cy" % nonce(2))
        self.joined(b"")
        self.assertEqual(self.screen.prompt, "Cy> ")
        self.assertEqual(
            self.screen.said,
            [
                ("the server refused the name 'Alice': it is taken", console.PROBLEM),
                ("Type another name, or /quit", console.EVENT),
                ("You are alone in the group", console.EVENT),
            ],
        )

    def test_a_full_group_is_no_name_problem(self):
        """A registration refused for a full group asks for no other name; without a terminal, status 1."""
        for terminal in (True, False):
            session = self.start(terminal=terminal)
            self.answer(b"0 refused room full")
            self.assertEqual(
                self.screen.said[0],
                ("could not join as 'Alice': the group is full", console.PROBLEM),
            )
            if terminal:
                self.assertEqual(self.screen.said[-1], ("/join tries again, /quit leaves", console.EVENT))
            else:
                self.assertEqual(self.successResultOf(session.closed), NO_REPLY)

    def test_a_lost_session_is_joined_again_once_said(self):
        """
        Seq unknown: said once, joined again under the same name, and the
        message that met the lost session delivered in the new one.
        """
        session = self.start(line_screen=True)
        self.joined(b"")
        self.stdio.protocol.dataReceived(b"one\ntwo\n")
        self.answer(b"1")
        self.answer(b"2 unknown")
        self.assertEqual(self.sent()[-1], b"6 %s Alice" % nonce(2))
        self.answer(b"0 %s 30\nBo" % OTHER_TOKEN)
        self.assertEqual(self.sent()[-1], b"7 %s 1 two" % OTHER_TOKEN)
        self.answer(b"1")
        self.stdio.protocol.readConnectionLost()
        self.answer(b"2")
        self.assertEqual(self.successResultOf(session.closed), 0)
        self.assertEqual(
            self.stdio.lines(),
            ["You are alone in the group", "Alice: one", "In the group: Bo", "Alice: two"],
        )
        self.assertEqual(
            self.complaints,
            ["the server lost your session: lines may be missing; joining again"],
        )

    def test_a_lost_session_whose_name_was_taken_meanwhile(self):
        """Joining again, the name is taken: on a terminal, asked for another; the message waits for it."""
        session = self.start(terminal=True)
        self.joined(b"")
        session.line_received(b"hi")
        self.answer(b"1 unknown")
        self.answer(b"0 refused name taken")
        self.assertEqual(self.screen.prompt, "Name: ")
        session.line_received(b"Al")
        self.answer(b"0 %s 3" % OTHER_TOKEN)
        self.assertEqual(self.sent()[-1], b"7 %s 1 hi" % OTHER_TOKEN)
        self.answer(b"1")
        self.assertEqual(self.screen.said[-1], ("Al: hi", console.PLAIN))

    def test_giving_up_ends_the_session_with_status_1(self):
        """
        No reply for 30 s: what was not delivered is said, then why, last,
        on stderr; nothing more is sent; status 1.
        """
        session = self.start(line_screen=True)
        self.joined(b"")
        self.stdio.protocol.dataReceived(b"hi\n")
        self.clock.advance(30)
        self.assertEqual(self.successResultOf(session.closed), NO_REPLY)
        self.assertEqual(
            self.complaints,
            ["(not delivered: no reply from the server) Alice: hi", GAVE_UP],
        )
        self.assertTrue(self.stdio.closed)
        count = len(self.sent())
        self.clock.advance(100)
        self.assertEqual(len(self.sent()), count)

    def test_giving_up_on_the_join(self):
        """No reply to the registration for --timeout seconds: status 1, said why."""
        self.complaints = []
        self.session = console.ChatSession("Alice", terminal=True, environ={}, complain=self.complaints.append)
        session_client(self, timeout=0.5)
        self.screen = FakeScreen()
        self.session.attach(self.client, self.screen)
        self.clock.advance(0.5)
        self.assertEqual(self.successResultOf(self.session.closed), NO_REPLY)
        self.assertEqual(self.complaints, ["no reply from the server for 0.5 seconds"])
        self.assertEqual(
            self.screen.said, [("could not join as 'Alice': the server did not answer", console.PROBLEM)]
        )

    def test_interrupt_while_joining_waits_for_the_join_then_leaves(self):
        """Ctrl-C during the registration: once it is answered, the session leaves."""
        session = self.start(terminal=True)
        session.interrupt()
        self.joined(b"")
        self.assertEqual(self.sent()[-1], b"0 %s 1" % TOKEN)
        self.answer(b"1")
        self.assertEqual(self.successResultOf(session.closed), 0)

    def test_raw_requests_by_sessions(self):
        """/raw sends its line as typed; 1.0 requests are refused from a session's address."""
        session = self.start()
        self.joined(b"")
        session.line_received(b"/raw 5")
        self.answer(wire.ILLEGAL)
        self.assertEqual(self.sent()[-1], b"5")
        self.assertEqual(self.screen.said[-1], ("Illegal message", console.PLAIN))
        self.assertTrue(self.client.registered)

    def test_a_server_without_sessions(self):
        """Against a 1.0 server, said once, then the 1.0 requests."""
        session = self.start(line_screen=True)
        session.line_received(b"hi")
        self.answer(wire.ILLEGAL)
        self.answer(b"")
        self.answer(b"")
        self.stdio.protocol.readConnectionLost()
        self.answer(b"")
        self.assertEqual(self.successResultOf(session.closed), 0)
        self.assertEqual(self.sent()[1:], [b"1 Alice", b"2 hi", b"4"])
        self.assertEqual(self.complaints, [reliable.FALLBACK])
        self.assertEqual(self.stdio.lines(), ["You are alone in the group", "Alice: hi"])


class ChatCommandTests(CommandTestCase):
    """
    The real command in chat mode through pipes, against a L{ScriptedServer}:
    what needs the process (its stderr, its exit status, its socket).
    """

    def test_a_server_without_sessions_gets_the_1_0_requests(self):
        """Illegal message to the registration: said once on stderr, then 1 Name, 2 Text, 4."""
        server = self.scripted_server()
        client = self.local_client(server.port, "--poll-interval", "0", "--name", "Al")
        self.assertRegex(server.receive(), rb"\A6 [0-9a-f]{32} Al\Z")
        server.answer(wire.ILLEGAL)
        self.assertEqual(server.receive(), b"1 Al")
        server.answer(b"Bo")
        client.type("hello\n")
        self.assertEqual(server.receive(), b"2 hello")
        server.answer(b"")
        client.end_input()
        self.assertEqual(server.receive(), b"4")
        server.answer(b"")
        self.assertEqual(client.wait(), 0, client.stderr.text())
        self.assertEqual(client.stdout.lines, ["In the group: Bo", "Al: hello"])
        self.assertEqual(client.stderr.lines, [f"udpchat.client: {reliable.FALLBACK}"])

    def test_no_reply_for_the_deadline_ends_the_chat_with_status_1(self):
        """A server that never answers: the registration sent again, then given up, said last."""
        server = self.scripted_server()
        client = self.local_client(server.port, "--timeout", "1.5", "--name", "Al")
        registration = server.receive()
        self.assertEqual(server.receive(), registration)  # the same, a second later
        self.assertEqual(client.wait(), NO_REPLY)
        self.assertEqual(
            client.stderr.lines,
            [
                "udpchat.client: could not join as 'Al': the server did not answer",
                "udpchat.client: no reply from the server for 1.5 seconds",
            ],
        )
        self.assertEqual(client.stdout.lines, [])

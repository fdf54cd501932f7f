"""
Tests for L{udpchat.logs}: the JSON log that twistd's C{--logger} selects,
unit by unit and from the real C{twistd -n udpchat}.
"""

import io
import json
import signal

from twisted.logger import Logger, eventsFromJSONLogFile, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from tests.harness import ProcessTestCase, lines_until, wait_for
from udpchat.logs import json_observer

JSON_LOGGER = "--logger=udpchat.logs.json_observer"


class JSONObserverTests(SynchronousTestCase):
    """
    L{json_observer} writing to a file of our own.
    """

    def setUp(self):
        self.out = io.StringIO()
        self.log = Logger(observer=json_observer(self.out), namespace="udpchat.test")

    def lines(self):
        return self.out.getvalue().splitlines()

    def test_one_object_per_line_its_fields_as_fields(self):
        """Each event is one line of JSON, no record separator; its fields are fields, its text is log_text."""
        self.log.info("{name!r} joined from {source}", name="Al\u202e\n", source="[::1]:5", host="::1", port=5)
        self.log.info("in the last {seconds:.0f} seconds: {summary}", seconds=60.0, summary="x", illegal=3)
        objects = [json.loads(line) for line in self.lines()]
        self.assertEqual(
            [{key: o.get(key) for key in ("name", "host", "port", "illegal", "log_namespace", "log_text")}
             for o in objects],
            [
                {"name": "Al\u202e\n", "host": "::1", "port": 5, "illegal": None,
                 "log_namespace": "udpchat.test", "log_text": "'Al\\u202e\\n' joined from [::1]:5"},
                {"name": None, "host": None, "port": None, "illegal": 3,
                 "log_namespace": "udpchat.test", "log_text": "in the last 60 seconds: x"},
            ],
        )
        self.assertNotIn("\x1e", self.out.getvalue())

    def test_read_back_as_events(self):
        """eventsFromJSONLogFile reads the lines back, as events that format as they did."""
        self.log.warn("{count} things", count=2)
        self.log.info("done")
        self.assertEqual(
            [formatEvent(event) for event in eventsFromJSONLogFile(io.StringIO(self.out.getvalue()))],
            ["2 things", "done"],
        )

    def test_a_failure_with_its_traceback(self):
        """A failure's traceback is in its log_text; the line is JSON all the same."""
        try:
            1 / 0
        except ZeroDivisionError:
            self.log.failure("a bug")
        [line] = self.lines()
        text = json.loads(line)["log_text"]
        self.assertTrue(text.startswith("a bug\nTraceback"), text)
        self.assertIn("ZeroDivisionError", text)


class JSONLogDaemonTests(ProcessTestCase):
    """
    The real twistd -n --logger=udpchat.logs.json_observer udpchat.
    """

    def test_every_line_is_json_with_the_events_fields(self):
        """Start, join, leave, the summary and the stop: each line one JSON object, with host and port as fields."""
        server = self.server(twistd_options=[JSON_LOGGER])
        ann, bob = (self.member(server) for _ in range(2))
        self.assertEqual(ann.request(b"1 Ann"), b"")
        self.assertEqual(bob.request(b"1 Bob"), b"Ann")
        self.assertEqual(bob.request(b"4"), b"")
        self.assertEqual(bob.request(b"junk"), b"Illegal message")
        lines_until(ann, "Bob has left the group")
        wait_for(lambda: server.output.search("Bob' at"))
        self.assertIn(server.stop(), (0, -signal.SIGTERM))
        events = [json.loads(line) for line in server.output.lines]

        def first(start):
            return next(e for e in events if e["log_text"].startswith(start))

        start, join, leave = first("udpchat listening"), first("'Ann' joined"), first("'Bob' at")
        summary, stopped = first("in the last"), first("udpchat stopped")
        bob_port = bob.socket.getsockname()[1]
        self.assertEqual(
            [
                (start["host"], start["port"]),
                (join["name"], join["host"], join["port"], join["log_text"]),
                (leave["name"], leave["host"], leave["port"], leave["log_text"]),
                (summary["illegal"], summary["log_text"].endswith("1 illegal request refused")),
                stopped["log_namespace"],
            ],
            [
                ("127.0.0.1", server.port),
                ("Ann", "127.0.0.1", ann.socket.getsockname()[1],
                 f"'Ann' joined from 127.0.0.1:{ann.socket.getsockname()[1]}"),
                ("Bob", "127.0.0.1", bob_port, f"'Bob' at 127.0.0.1:{bob_port} left"),
                (1, True),
                "udpchat.server.ChatService",
            ],
        )

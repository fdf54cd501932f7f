"""
A JSON log for a log pipeline, chosen with twistd's C{--logger} option:

    twistd -n --logger=udpchat.logs.json_observer udpchat ...

twistd calls the factory named there, with no arguments, for the observer
that receives every event instead of its text log; it ignores C{--logfile}
then.  The text log stays the default.
"""

import sys

from twisted.logger import ILogObserver, eventAsText, jsonFileLogObserver
from zope.interface import implementer


def json_observer(out=None):
    """
    An observer that writes each event to C{out} as one JSON object on one
    line: its fields as fields (what C{twisted.logger.eventsFromJSONLogFile}
    reads back), and C{log_text}, the event's text as the text log writes
    it (with the traceback of a failure), but its time and system.

    twistd gives no C{out}: standard output, taken as it is when twistd
    asks, before it sends what is printed to the log.  So the log is
    written only with C{-n} (a daemon's standard output goes nowhere);
    redirect it for a file.
    """
    out = sys.stdout if out is None else out
    return _WithText(jsonFileLogObserver(out, recordSeparator=""))


@implementer(ILogObserver)
class _WithText:
    """Pass each event on to C{observer} with its text as C{log_text}."""

    def __init__(self, observer):
        self._observer = observer

    def __call__(self, event):
        # A copy: the event is every observer's.
        text = eventAsText(event, includeTimestamp=False, includeSystem=False)
        self._observer({**event, "log_text": text})

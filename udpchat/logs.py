"""
A JSON log for a log pipeline, chosen with twistd's C{--logger} option:

    twistd -n --logger=udpchat.logs.json_observer udpchat ...

twistd calls the factory named there, with no arguments, for the observer
that receives every event instead of its text log; it ignores C{--logfile}
then.  The text log stays the default.
"""

import sys

from twisted.logger import ILogObserver, formatEvent, jsonFileLogObserver
from zope.interface import implementer


def json_observer():
    """
    An observer that writes each event to standard output as one JSON
    object on one line: its fields as fields (what
    C{twisted.logger.eventsFromJSONLogFile} reads back), and C{log_text},
    the event's text as the text log writes it.

    Standard output is taken as it is when twistd asks, before it sends
    what is printed to the log: so only with C{-n} (a daemon's goes
    nowhere); redirect it for a file.
    """
    return _WithText(jsonFileLogObserver(sys.stdout, recordSeparator=""))


@implementer(ILogObserver)
class _WithText:
    """Pass each event on to C{observer} with its text as C{log_text}."""

    def __init__(self, observer):
        self._observer = observer

    def __call__(self, event):
        # A copy: the event is every observer's.
        self._observer({**event, "log_text": formatEvent(event)})

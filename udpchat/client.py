"""
The udpchat client's entry point: the command line, resolving the host, and
running a session until it is over.

    python -m udpchat.client HOST PORT [--poll-interval S] [--timeout S] [--name NAME]

Without C{--name} the session is the raw console (L{udpchat.raw}: protocol
lines in, replies out), talking through L{udpchat.session}'s 1.0 client;
with it, the chat mode (L{udpchat.console}), talking by sessions through
L{udpchat.reliable}, both of which this module imports only then, so that
the raw client never loads Twisted's conch.  This module is the top of the
client wing: it runs as C{__main__}, and no module imports it, so that no
module of udpchat is loaded twice in one process.
"""

import argparse
import os
import signal
import socket
import sys

from twisted.internet import defer
from twisted.internet.task import react
from twisted.internet.threads import deferToThread

from udpchat import wire
from udpchat.raw import RawSession
from udpchat.session import DEFAULT_TIMEOUT, NO_REPLY, READ_BYTES, ChatClient, complain

PROGRAM = "python -m udpchat.client"


def parse_arguments(argv):
    """
    Parse the command line; exit 2 with the usage text when it is wrong.
    """
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Talk to a udpchat server: protocol lines on stdin "
        "(1 Name, 2 Text, 3 New, 4, 5), server replies on stdout; or, with "
        "--name, chat: every line typed is a message, /help lists the commands.",
    )
    parser.add_argument("host", help="server name, IPv4 or IPv6 address ([::1] too)")
    parser.add_argument("port", type=_port, help="server UDP port")
    parser.add_argument(
        "--poll-interval",
        type=_seconds(allow_zero=True),
        default=1.0,
        metavar="SECONDS",
        help="poll for messages this often once registered; 0: never "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=_seconds(allow_zero=False),
        default=None,
        metavar="SECONDS",
        help=f"wait this long for each reply (default: {DEFAULT_TIMEOUT:g}; with --name "
        "and a server with sessions, 30, sending the request again meanwhile)",
    )
    parser.add_argument(
        "--name",
        type=_name,
        metavar="NAME",
        help="join as NAME and chat: lines are messages, /help lists the commands",
    )
    return parser.parse_args(argv)


def _port(text):
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 65535):
        raise argparse.ArgumentTypeError(f"not a port number from 1 to 65535: {text!r}")
    return int(text)


MAX_SECONDS = 86400
"""The longest --timeout or --poll-interval: a day."""


def _seconds(allow_zero):
    # argparse names the option: "argument --timeout: must be ..."
    lowest = "from 0 (never)" if allow_zero else "greater than 0 and up"
    allowed = f"must be a number of seconds {lowest} to {MAX_SECONDS}"

    def seconds(text):
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not (value > 0 or (allow_zero and value == 0)) or value > MAX_SECONDS:
            raise argparse.ArgumentTypeError(f"{allowed}, not {text!r}")
        return value

    return seconds


def _name(text):
    # The wire is the judge of names, for the client as for the server.
    try:
        wire.judged(wire.Join(text))
    except wire.IllegalMessage as e:
        raise argparse.ArgumentTypeError(f"not a valid name: {text!r} ({e.reason})") from None
    return text


def resolve(host, port):
    """
    Return C{(family, (address, port))} for C{host}, which may be a name or
    an IPv4 or IPv6 literal, the latter bare or in brackets (C{[::1]}), as
    in URLs (unlike C{reactor.resolve}, which is IPv4-only).

    @raise OSError: when the name does not resolve.
    @raise UnicodeError: when C{host} cannot be a host name (a label of
        more than 63 characters, or an empty one).
    """
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    return family, sockaddr[:2]


async def _resolve_or_exit(host, port):
    try:
        return await deferToThread(resolve, host, port)
    except OSError as e:
        reason = e.strerror or e
    except UnicodeError:
        reason = "not a valid host name (a part of it is empty or longer than 63 characters)"
    complain(f"cannot resolve {host!r}: {reason}")
    raise SystemExit(NO_REPLY)


def _make_session(options, server, reactor):
    """The session that C{options} ask for, and its client of C{server}."""
    timeout = options.timeout
    if options.name is None:
        session = RawSession()
        client = ChatClient(
            server,
            reactor,
            show=session.show,
            warn=session.warn,
            forgotten=session.forgotten,
            poll_interval=options.poll_interval,
            timeout=timeout or DEFAULT_TIMEOUT,
        )
        return session, client
    # The chat mode, sessions and conch, only when asked for.
    from udpchat import console, reliable

    session = console.ChatSession(options.name)
    client = reliable.SessionClient(
        server,
        reactor,
        show=session.show,
        warn=session.warn,
        forgotten=session.forgotten,
        lost=session.lost,
        gave_up=session.gave_up,
        poll_interval=options.poll_interval,
        timeout=timeout or reliable.GIVE_UP,
        legacy_timeout=timeout or DEFAULT_TIMEOUT,
    )
    return session, client


def _interrupt_on_signals(reactor, session):
    """
    Let Ctrl-C (SIGINT) and SIGTERM reach the session instead of stopping the
    reactor: the first leaves the group, a second stops waiting for the
    server.  Twisted's handlers would stop the reactor at the first, wait
    for the session to leave however long its queue, and answer a second
    with a ReactorNotRunning traceback.  An ignored signal (SIGINT in a
    background job) stays ignored.
    """
    for number in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(number) != signal.SIG_IGN:
            signal.signal(
                number, lambda number, frame: reactor.callFromThread(session.interrupt)
            )


async def _main(reactor, argv):
    options = parse_arguments(argv)
    family, server = await _resolve_or_exit(options.host, options.port)
    session, client = _make_session(options, server, reactor)
    reactor.listenUDP(
        0,
        client,
        interface="::" if family == socket.AF_INET6 else "",
        maxPacketSize=READ_BYTES,
    )
    session.start(client, reactor)
    # The reactor runs by now (the resolver's answer came through it), so
    # Twisted has installed its handlers: these replace its SIGINT's and SIGTERM's.
    _interrupt_on_signals(reactor, session)
    # Stopped another way: leave all the same, before the reactor stops.
    reactor.addSystemEventTrigger("before", "shutdown", session.leave)
    status = await session.closed
    if status:
        raise SystemExit(status)


def main(reactor, *argv):
    """Run the client; for L{react}."""
    return defer.ensureDeferred(_main(reactor, argv))


def _keep_standard_fds_open():
    """
    Point a closed stdin, stdout or stderr at /dev/null, before the reactor
    opens anything: otherwise the first socket would become "stdin".  A
    closed stdin then reads as an immediate end of input.
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def run():
    """The C{python -m udpchat.client} entry point."""
    _keep_standard_fds_open()
    react(main, sys.argv[1:])


if __name__ == "__main__":
    run()

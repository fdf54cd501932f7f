"""
The server and the users it runs as: binding before twistd drops privileges,
and the errors an unprivileged user meets.

These tests need root to switch users (CI and the development machines run
as root); setpriv comes with util-linux.
"""

import os
import shutil
import socket

from tests.harness import TWISTD, Member, Server, run_isolated
from twisted.trial.unittest import SynchronousTestCase

NOBODY = "65534"
SETPRIV = shutil.which("setpriv")


def as_nobody(argv):
    """C{argv} run as user and group 65534, with no supplementary groups."""
    return [SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv]


def privileged_free_port():
    """A port below 1024 that is free on 127.0.0.1 right now."""
    for port in range(1023, 900, -1):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port below 1024")


class PrivilegeTests(SynchronousTestCase):
    """
    twistd's -u/-g and unprivileged users.
    """

    def setUp(self):
        self.assertEqual(os.geteuid(), 0, "these tests switch users: run them as root")
        self.assertIsNotNone(SETPRIV, "setpriv (util-linux) is needed")

    def test_privileged_port_is_served_after_dropping_privileges(self):
        """With -u/-g, the server binds a port below 1024 as root, then runs as the user."""
        port = privileged_free_port()
        server = Server(
            "--port", str(port),
            twistd_options=["-u", NOBODY, "-g", NOBODY],
        )
        self.addCleanup(server.stop)
        self.assertEqual(server.port, port)
        with open(f"/proc/{server.process.pid}/status") as status:
            uids = next(line for line in status if line.startswith("Uid:")).split()[1:]
        self.assertEqual(set(uids), {NOBODY})
        member = Member(server.address())
        self.addCleanup(member.close)
        self.assertEqual(member.request(b"1 Al"), b"")

    def test_permission_denied_is_a_one_line_error(self):
        """An unprivileged user asking for port 1 gets a clear error and exit 1."""
        result = run_isolated(
            as_nobody([TWISTD, "-n", "--pidfile=", "udpchat", "--port", "1", "--interface", "127.0.0.1"])
        )
        output = (result.stdout + result.stderr).decode()
        self.assertEqual(result.returncode, 1, output)
        self.assertIn("cannot listen on UDP port 1 of 127.0.0.1: Permission denied", output)
        self.assertNotIn("Traceback", output)

    def test_refreshed_plugin_cache_means_no_warning_for_an_unprivileged_user(self):
        """After the README's refresh (twistd --help), a service user is not warned about dropin.cache."""
        refresh = run_isolated([TWISTD, "--help"])
        self.assertEqual(refresh.returncode, 0, refresh.stderr)
        server = Server(argv=as_nobody(
            [TWISTD, "-n", "--pidfile=", "--rundir=/", "udpchat", "--port", "0", "--interface", "127.0.0.1"]
        ))
        self.addCleanup(server.stop)
        self.assertNotIn("cache", server.output.text().lower())

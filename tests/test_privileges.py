"""
The server and the users it runs as: binding before twistd drops privileges,
and the errors an unprivileged user meets.

These tests need root to switch users, and setpriv (util-linux); those that
start twistd as user 65534 need an installation that user can run (not one
in a private directory). CI and the development machines have all that;
elsewhere they skip, saying what is missing.
"""

import socket

from tests.harness import NOBODY, TWISTD, ProcessTestCase, as_nobody, require_root, run_isolated


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


class PrivilegeTests(ProcessTestCase):
    """
    twistd's -u/-g and unprivileged users.
    """

    def setUp(self):
        require_root("these tests switch users")

    def test_privileged_port_is_served_after_dropping_privileges(self):
        """With -u/-g, the server binds a port below 1024 as root, then runs as the user."""
        port = privileged_free_port()
        server = self.server("--port", str(port), twistd_options=["-u", NOBODY, "-g", NOBODY])
        self.assertEqual(server.port, port)
        with open(f"/proc/{server.process.pid}/status") as status:
            uids = next(line for line in status if line.startswith("Uid:")).split()[1:]
        self.assertEqual(set(uids), {NOBODY})
        self.assertEqual(self.member(server).request(b"1 Al"), b"")

    def test_permission_denied_is_a_one_line_error(self):
        """An unprivileged user asking for port 1 gets a clear error and exit 1."""
        self.assertEqual(
            self.usage_error("--port", "1", argv_prefix=as_nobody()),
            "cannot listen on UDP port 1 of 127.0.0.1: Permission denied",
        )

    def test_refreshed_plugin_cache_means_no_warning_for_an_unprivileged_user(self):
        """After the README's refresh (twistd --help), a service user is not warned about dropin.cache."""
        refresh = run_isolated([TWISTD, "--help"])
        self.assertEqual(refresh.returncode, 0, refresh.stderr)
        server = self.server(argv=as_nobody(
            [TWISTD, "-n", "--pidfile=", "--rundir=/", "udpchat", "--port", "0", "--interface", "127.0.0.1"]
        ))
        self.assertNotIn("cache", server.output.text().lower())

"""
The real-Redis test helper: servers start, answer, keep their data across a
restart, require their password, and leave no process behind.
"""

import os
import socket

from twisted.trial.unittest import SynchronousTestCase

from tests.redisserver import (
    REDIS_SERVER_VARIABLE,
    RedisServer,
    SyncRedis,
    encode_command,
    find_redis_server,
    hiredis,
    requires_redis,
    shared_redis,
)


class EncodeCommandTests(SynchronousTestCase):
    """
    Commands are sent as RESP arrays of bulk strings.
    """

    def test_arguments_become_bulk_strings(self):
        """str is sent as UTF-8, bytes as they are, numbers as their digits."""
        self.assertEqual(
            encode_command(("SET", b"k\r\n", 12, "\N{SNOWMAN}")),
            b"*4\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$2\r\n12\r\n$3\r\n\xe2\x98\x83\r\n",
        )

    def test_other_arguments_are_refused(self):
        """An argument Redis has no spelling for raises TypeError."""
        self.assertRaises(TypeError, encode_command, ("SET", "k", None))


class FindRedisServerTests(SynchronousTestCase):
    """
    UDPCHAT_REDIS_SERVER chooses the binary.
    """

    def setUp(self):
        before = os.environ.get(REDIS_SERVER_VARIABLE)
        if before is None:
            self.addCleanup(os.environ.pop, REDIS_SERVER_VARIABLE, None)
        else:
            self.addCleanup(os.environ.__setitem__, REDIS_SERVER_VARIABLE, before)

    def test_variable_wins_even_when_wrong(self):
        """A path in UDPCHAT_REDIS_SERVER is returned as given: a wrong one fails, not skips."""
        os.environ[REDIS_SERVER_VARIABLE] = "/nonexistent/redis-server"
        self.assertEqual(find_redis_server(), "/nonexistent/redis-server")

    def test_empty_variable_is_unset(self):
        """An empty UDPCHAT_REDIS_SERVER is as if unset."""
        os.environ.pop(REDIS_SERVER_VARIABLE, None)
        unset = find_redis_server()
        os.environ[REDIS_SERVER_VARIABLE] = ""
        self.assertEqual(find_redis_server(), unset)


@requires_redis
class RedisServerTests(SynchronousTestCase):
    """
    A RedisServer is a real redis-server on loopback that the test controls.
    """

    def server(self, **kwargs):
        server = RedisServer(**kwargs)
        self.addCleanup(server.close)
        return server

    def client(self, server, **kwargs):
        client = server.client(**kwargs)
        self.addCleanup(client.close)
        return client

    def test_server_answers_ping_on_loopback(self):
        """The server answers PING at the address its URL names."""
        server = self.server()
        self.assertEqual(server.url, f"redis://127.0.0.1:{server.port}")
        self.assertEqual(self.client(server).call("PING"), b"PONG")

    def test_replies_are_parsed(self):
        """Replies come back as bytes, int, list and None."""
        client = self.client(shared_redis())
        key = f"test_redisserver:{self.id()}"
        self.addCleanup(client.call, "DEL", key)
        self.assertEqual(client.call("SET", key, "value"), b"OK")
        self.assertEqual(client.call("GET", key), b"value")
        self.assertEqual(client.call("APPEND", key, "s"), 6)
        self.assertEqual(client.call("MGET", key, key + ":absent"), [b"values", None])

    def test_error_reply_is_raised(self):
        """An error reply raises hiredis.ReplyError, and the connection goes on."""
        client = self.client(shared_redis())
        with self.assertRaises(hiredis.ReplyError) as caught:
            client.call("EVAL", "return redis.error_reply('NOPE refused')", 0)
        self.assertEqual(str(caught.exception), "NOPE refused")
        self.assertEqual(client.call("PING"), b"PONG")

    def test_shared_server_is_one_server(self):
        """shared_redis() starts one server for the test process."""
        self.assertIs(shared_redis(), shared_redis())

    def test_restart_keeps_port_and_data(self):
        """A stopped server starts again on the same port with its keys."""
        server = self.server()
        port, url = server.port, server.url
        self.client(server).call("SET", "kept", "yes")
        self.assertEqual(server.stop(), 0)
        server.start()
        self.assertEqual((server.port, server.url), (port, url))
        self.assertEqual(self.client(server).call("GET", "kept"), b"yes")

    def test_kill_keeps_acknowledged_writes(self):
        """After SIGKILL, a restarted server still has every acknowledged write."""
        server = self.server()
        client = self.client(server)
        for n in range(100):
            client.call("XADD", "log", "*", "n", n)
        server.kill()
        server.start()
        self.assertEqual(self.client(server).call("XLEN", "log"), 100)

    def test_password_is_required(self):
        """With a password, a client without it is refused; the URL and client() carry it."""
        server = self.server(password="secret")
        self.assertEqual(server.url, f"redis://:secret@127.0.0.1:{server.port}")
        self.assertEqual(self.client(server).call("PING"), b"PONG")
        with SyncRedis(server.host, server.port) as anonymous:
            self.assertRaises(hiredis.ReplyError, anonymous.call, "PING")

    def test_stop_leaves_no_process(self):
        """After stop() the server's process is gone, and stopping again does nothing."""
        server = self.server()
        pid = server.pid
        self.assertEqual(server.stop(), 0)
        self.assertIsNone(server.pid)
        self.assertRaises(ProcessLookupError, os.kill, pid, 0)
        self.assertIsNone(server.stop())

    def test_suspended_server_does_not_answer(self):
        """A suspended server keeps connections open but answers only once resumed."""
        server = self.server()
        client = self.client(server)
        server.suspend()
        client.socket.settimeout(0.2)
        self.assertRaises(socket.timeout, client.call, "PING")
        server.resume()
        self.assertEqual(self.client(server).call("PING"), b"PONG")

    def test_failed_start_raises_with_the_log(self):
        """A server that cannot start raises an error holding its log's tail."""
        server = self.server()
        server.stop()
        with socket.socket() as squatter:
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(("127.0.0.1", server.port))
            squatter.listen()
            error = self.assertRaises(RuntimeError, server.start)
        self.assertIn("in use", str(error))
        self.assertIsNone(server.pid)


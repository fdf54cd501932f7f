"""
Open the server's sockets, before twistd forks or drops privileges: its UDP
socket, and the TCP socket it serves metrics on.

Binding while the command line is checked turns "port in use" or
"permission denied" into a usage error instead of a traceback, lets a port
below 1024 work with twistd's -u, and lets us make the dual-stack socket
that Twisted's listenUDP cannot (it sets no IPV6_V6ONLY, so "::" would be
dual-stack only where the host's sysctl says), or one that shares its port
with other daemons (SO_REUSEPORT, which listenUDP does not offer).
"""

import errno
import socket
import sys

# Errors that mean "this host has no usable IPv6", not "this port is bad".
_NO_IPV6 = frozenset((errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT))


class ReceiveBufferTooSmall(OSError):
    """
    The kernel granted a smaller receive buffer than was asked for.

    @ivar granted: the size it granted, in bytes.
    """

    def __init__(self, granted):
        OSError.__init__(self, f"receive buffer of {granted} bytes")
        self.granted = granted


def bind_udp(interface, port, receive_buffer=None, reuse_port=False):
    """
    Return a non-blocking UDP socket bound to C{interface} and C{port}.

    @param interface: an IP address literal, or L{None} for every interface:
        IPv4 and IPv6 on one socket where the host has IPv6, else IPv4 only.
    @param port: a port number, 0 for any free port.
    @param receive_buffer: the size of the kernel's receive buffer in
        bytes, or L{None} for the system's default.
    @param reuse_port: share the port with other sockets bound so (by other
        processes too): Linux spreads the clients over them by a hash of
        each datagram's addresses and ports, so one client socket keeps
        reaching one of them while the group stays the same.  The kernel
        lets a socket join only those made by the same effective user
        (with twistd's -u, the user who starts twistd: the socket is bound
        before privileges are dropped), so another user cannot take a
        share of the traffic.
    @raise ReceiveBufferTooSmall: when the kernel grants less than that.
    @raise OSError: when the socket cannot be made or bound, or
        C{reuse_port} is asked for where there is no SO_REUSEPORT.
    """
    if interface is None:
        try:
            return _bind(socket.AF_INET6, "::", port, receive_buffer, reuse_port)
        except ReceiveBufferTooSmall:
            raise
        except OSError as e:
            if e.errno not in _NO_IPV6:
                raise
        return _bind(socket.AF_INET, "0.0.0.0", port, receive_buffer, reuse_port)
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    return _bind(family, interface, port, receive_buffer, reuse_port)


# SO_RCVBUFFORCE (Linux, for root): Python names it only from 3.12 on.
_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33 if sys.platform.startswith("linux") else None)
# Linux reports twice the size asked for (the rest is its bookkeeping).
_REPORTED = 2 if sys.platform.startswith("linux") else 1


def _set_receive_buffer(sock, size):
    # Root may exceed net.core.rmem_max with SO_RCVBUFFORCE; others get at
    # most rmem_max, silently: check what was granted.
    try:
        if _RCVBUFFORCE is None:
            raise PermissionError
        sock.setsockopt(socket.SOL_SOCKET, _RCVBUFFORCE, size)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // _REPORTED
    if granted < size:
        raise ReceiveBufferTooSmall(granted)


# Python names SO_REUSEPORT where the platform's headers do (Linux since
# 3.9, the BSDs, macOS); only Linux spreads unicast datagrams over the
# sockets that share a port (the others deliver each to one of them).
_REUSE_PORT = getattr(socket, "SO_REUSEPORT", None)
NO_REUSE_PORT = "SO_REUSEPORT (sharing a port between processes) is not available here"


def _set_reuse_port(sock):
    # Before bind(): the kernel decides whether a port may be shared when
    # it is bound, and every socket sharing it must have asked.
    try:
        if _REUSE_PORT is None:
            raise OSError(errno.ENOPROTOOPT, NO_REUSE_PORT)
        sock.setsockopt(socket.SOL_SOCKET, _REUSE_PORT, 1)
    except OSError as e:
        # A kernel older than the headers Python was built with says only
        # "Protocol not available": say what is missing.
        if e.errno in (errno.ENOPROTOOPT, errno.EINVAL):
            raise OSError(e.errno, NO_REUSE_PORT) from None
        raise


def _bind(family, host, port, receive_buffer=None, reuse_port=False):
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if receive_buffer is not None:
            _set_receive_buffer(sock, receive_buffer)
        if family == socket.AF_INET6:
            # Serve IPv4 peers too where the address allows it ("::").
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        if reuse_port:
            _set_reuse_port(sock)
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def bind_tcp(host, port):
    """
    Return a non-blocking TCP socket bound to C{host} and C{port} and
    listening, which C{reactor.adoptStreamPort} takes.

    @param host: an IP address literal; C{::} serves IPv4 too.
    @param port: a port number, 0 for any free port.
    @raise OSError: when the socket cannot be made, bound or listen.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # As Twisted's listenTCP does: a restart need not wait for the
        # connections of the last run to time out.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.listen(50)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock

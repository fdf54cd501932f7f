"""
The ceiling for the benchmark: a bare Twisted UDP echo server.

One reply per request, as udpchat, on the same default reactor, and nothing
else: whatever udpchat spends beyond this is the cost of its own code.  Run
by C{run.py} as its own process; it prints the port it got on stdout and runs
until SIGTERM or SIGINT.

    python benchmarks/echo_server.py [--interface 127.0.0.1]
"""

import sys

from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol

# udpchat reads datagrams of up to 1029 bytes; read as many here, so both
# servers ask the kernel for the same thing.
MAX_PACKET_SIZE = 1029


class Echo(DatagramProtocol):
    """Send every datagram back to where it came from (Twisted's echoserv_udp)."""

    noisy = False

    def datagramReceived(self, datagram, address):
        self.transport.write(datagram, address)


def main(argv):
    interface = argv[argv.index("--interface") + 1] if "--interface" in argv else "127.0.0.1"
    port = reactor.listenUDP(0, Echo(), interface=interface, maxPacketSize=MAX_PACKET_SIZE)
    print(f"echo listening on UDP {interface} port {port.getHost().port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])

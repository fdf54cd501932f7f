"""
udpchat: a group-chat server speaking a small text protocol over UDP, and its
client.  See README.rst for the protocol and how to run both.
"""

__version__ = "1.0.0"

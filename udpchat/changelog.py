"""
The changes log: what a store appends to a file beside its SQLite file at
each commit, one record per commit, until a fold writes what the records
hold into the tables and empties the log.  A commit is then one C{write}:
updating rows in SQLite writes every page it touches to the write-ahead
log whole, and a batch of ten polls touches ten members' rows (the
benchmark measured 0.47 x the in-memory rate that way, 0.57 with this log).

The file: a header (L{MAGIC} and the log's generation, which the SQLite
file's C{room} row names too, so that a log already folded is known as
such), then records: the length and CRC-32 of a payload, and the payload,
one L{udpchat.room.Changes} encoded by L{encode}.  A crash can cut the last
record short; L{read} leaves such a tail out, and refuses damage anywhere
else.

The payload is little-endian binary built with L{struct}: cheap to write
(two microseconds for ten members and five lines, where JSON takes eight)
and, unlike C{marshal} or C{pickle}, safe to read from a file someone else
wrote.  L{decode} checks the structure only: the store checks each value
as it checks its columns.
"""

import os
import struct
import zlib

MAGIC = b"udpchat changes\n"

_FILE_HEADER = struct.Struct("<16sQ")
"""L{MAGIC} and the generation."""

HEADER_BYTES = _FILE_HEADER.size

_RECORD = struct.Struct("<II")
"""A record's payload length and CRC-32."""

RECORD_BYTES = _RECORD.size


_HEADER = struct.Struct("<qqIII")
"""The log's first line, the next member id, and how many members, removed
ids and lines follow."""

_MEMBER = struct.Struct("<qqqdHBBB")
"""A member: id, position, dropped, last seen, port, the bytes of its host
and of its name (which follow), and whether a session follows."""

_SESSION = struct.Struct("<32s32sqqqiHB")
"""A session: token, nonce, seq, told, budget (-1: none), the bytes of its
reply (-1: none) and, after the port it replied to, of that host (the host,
then the reply, follow)."""

_REMOVED = struct.Struct("<q")

_LINE = struct.Struct("<qqH")
"""A line: its sequence number, its author (-1: none) and its bytes (which
follow)."""


class BadBatch(ValueError):
    """Bytes that L{encode} did not write."""


class BadLog(ValueError):
    """A file that L{header} and L{record} did not write, or damaged."""


def header(generation):
    """The bytes a log of C{generation} starts with."""
    return _FILE_HEADER.pack(MAGIC, generation)


def record(payload):
    """C{payload} (bytes from L{encode}) framed as one record of the log."""
    return _RECORD.pack(len(payload), zlib.crc32(payload)) + payload


def read(fd):
    """
    The log open at C{fd}, read from its start: C{(generation, payloads,
    end)}, with C{generation} L{None} for an empty file, and C{end} the
    length of what is whole (a crash may have cut the last record short).

    @raise BadLog: for a file that is not a log, or a damaged record that
        is not the last (the records after it cannot be trusted either).
    """
    chunks = []
    offset = 0
    while True:
        chunk = os.pread(fd, 1 << 20, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    data = b"".join(chunks)
    if not data:
        return None, [], 0
    if len(data) < HEADER_BYTES or data[: len(MAGIC)] != MAGIC:
        raise BadLog("not a udpchat changes log")
    (_, generation) = _FILE_HEADER.unpack_from(data)
    payloads = []
    offset = HEADER_BYTES
    size = len(data)
    while offset < size:
        start = offset + _RECORD.size
        if start > size:
            break  # a record cut short in its frame
        length, crc = _RECORD.unpack_from(data, offset)
        end = start + length
        if end > size:
            break  # cut short
        payload = data[start:end]
        if length and zlib.crc32(payload) == crc:
            payloads.append(payload)
            offset = end
            continue
        # A record written in part (the file grew before its data reached
        # the disk: zeros, or a bad sum) is what a crash leaves, at the end
        # only.
        if data[end:].strip(b"\0"):
            raise BadLog(f"the record at byte {offset} is damaged")
        break
    return generation, payloads, offset


def encode(changes):
    """
    The bytes of C{changes} (a L{udpchat.room.Changes}) that a store keeps:
    its members' states, the ids removed, the lines added, where the log
    starts and the next member id (not the events).
    """
    parts = [
        _HEADER.pack(
            changes.first,
            changes.next_id,
            len(changes.members),
            len(changes.removed),
            len(changes.lines),
        )
    ]
    append = parts.append
    member, line_header = _MEMBER.pack, _LINE.pack
    for state in changes.members:
        host, port = state.source[:2]
        host = host.encode("ascii")  # an IP literal
        name = state.name.encode()
        session = state.session
        append(
            member(
                state.id, state.position, state.dropped, state.last_seen, port,
                len(host), len(name), session is not None,
            )
        )
        append(host)
        append(name)
        if session is not None:
            reply = session.reply
            replied_host, replied_port = session.replied_to[:2]
            replied_host = replied_host.encode("ascii")
            append(
                _SESSION.pack(
                    session.token, session.nonce, session.seq, session.told,
                    -1 if session.budget is None else session.budget,
                    -1 if reply is None else len(reply),
                    replied_port, len(replied_host),
                )
            )
            append(replied_host)
            if reply is not None:
                append(reply)
    append(b"".join(_REMOVED.pack(id) for id in changes.removed))
    for sequence, author, line in changes.lines:
        append(line_header(sequence, -1 if author is None else author, len(line)))
        append(line)
    return b"".join(parts)


def decode(data):
    """
    What L{encode} wrote: C{(first, next_id, members, removed, lines)}, each
    member as the columns of the table C{members} (C{id, host, port, name,
    position, dropped, last_seen, token, nonce, seq, reply, told, budget,
    replied_host, replied_port}, the last eight L{None} without a session),
    each line as C{(sequence, author or None, line)}.

    @raise BadBatch: for bytes that L{encode} cannot have written (their
        values are the caller's to check).
    """
    if type(data) is not bytes:
        raise BadBatch(f"not bytes but {type(data).__name__}")
    try:
        return _decode(data)
    except (struct.error, UnicodeDecodeError, IndexError) as e:
        raise BadBatch(str(e)) from None


def _decode(data):
    first, next_id, member_count, removed_count, line_count = _HEADER.unpack_from(data)
    offset = _HEADER.size

    def take(length):
        nonlocal offset
        if length < 0 or offset + length > len(data):
            raise BadBatch("cut short")
        chunk = data[offset : offset + length]
        offset += length
        return chunk

    members = []
    for _ in range(member_count):
        id, position, dropped, last_seen, port, host_bytes, name_bytes, has_session = (
            _MEMBER.unpack(take(_MEMBER.size))
        )
        host = take(host_bytes).decode("ascii")
        name = take(name_bytes).decode()
        session = (None,) * 8
        if has_session == 1:
            token, nonce, seq, told, budget, reply_bytes, replied_port, replied_bytes = (
                _SESSION.unpack(take(_SESSION.size))
            )
            replied_host = take(replied_bytes).decode("ascii")
            reply = None if reply_bytes == -1 else take(reply_bytes)
            session = (
                token.decode("ascii"), nonce.decode("ascii"), seq, reply, told,
                None if budget == -1 else budget, replied_host, replied_port,
            )
        elif has_session != 0:
            raise BadBatch(f"a session flag of {has_session}")
        members.append((id, host, port, name, position, dropped, last_seen, *session))
    removed = [_REMOVED.unpack(take(_REMOVED.size))[0] for _ in range(removed_count)]
    lines = []
    for _ in range(line_count):
        sequence, author, line_bytes = _LINE.unpack(take(_LINE.size))
        lines.append((sequence, None if author == -1 else author, take(line_bytes)))
    if offset != len(data):
        raise BadBatch(f"{len(data) - offset} bytes too many")
    return first, next_id, members, removed, lines

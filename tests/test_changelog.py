"""
Tests for L{udpchat.changelog}: one commit's changes as bytes, and back.
"""

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from udpchat.changelog import BadBatch, decode, encode
from udpchat.room import Changes, MemberState, SessionState

counts = st.integers(0, 2**62)
hosts = st.sampled_from(["127.0.0.1", "10.0.0.2", "::1", "2001:db8::17"])
ports = st.integers(0, 65535)
sessions = st.builds(
    SessionState,
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=32, max_size=32),
    counts,
    st.none() | st.binary(min_size=1, max_size=1500),
    counts,
    st.none() | counts,
    st.tuples(hosts, ports),
)
members = st.builds(
    MemberState,
    counts,
    st.tuples(hosts, ports),
    st.text(min_size=1, max_size=32),
    counts,
    counts,
    st.floats(0, 1e12),
    st.none() | sessions,
)
lines = st.tuples(counts, st.none() | counts, st.binary(min_size=1, max_size=300))
changes = st.builds(
    Changes, st.just([]), st.lists(members, max_size=5), st.lists(counts, max_size=5),
    st.lists(lines, max_size=5), counts, counts,
)


def columns(state):
    """A L{MemberState} as the columns of the table members."""
    session = state.session
    if session is None:
        values = (None,) * 8
    else:
        values = (
            session.token.decode("ascii"), session.nonce.decode("ascii"), session.seq,
            session.reply, session.told, session.budget, *session.replied_to,
        )
    return (state.id, *state.source, state.name, state.position, state.dropped, state.last_seen, *values)


class JournalTests(SynchronousTestCase):
    @given(changes)
    def test_decode_gives_what_encode_took(self, changed):
        """Every field of the members, the ids removed and the lines come back as they went, members as their columns."""
        # Tokens and nonces are ASCII hex in a room; any ASCII decodes alike.
        changed = Changes(
            [],
            [
                m if m.session is None
                else m._replace(session=m.session._replace(
                    token=bytes(b % 128 for b in m.session.token),
                    nonce=bytes(b % 128 for b in m.session.nonce),
                ))
                for m in changed.members
            ],
            changed.removed, changed.lines, changed.first, changed.next_id,
        )
        self.assertEqual(
            decode(encode(changed)),
            (
                changed.first,
                changed.next_id,
                [columns(m) for m in changed.members],
                changed.removed,
                changed.lines,
            ),
        )

    @given(changes, st.data())
    def test_cut_or_padded_bytes_are_refused(self, changed, data):
        """Bytes cut short, or with bytes after the last record, are not a batch."""
        encoded = encode(changed)
        cut = data.draw(st.integers(0, len(encoded) - 1))
        for bad in (encoded[:cut], encoded + b"\0"):
            with self.assertRaises(BadBatch):
                decode(bad)

    @given(st.binary(max_size=200))
    def test_any_bytes_decode_or_are_refused(self, data):
        """Whatever the bytes, decode returns or raises BadBatch: nothing else."""
        try:
            decode(data)
        except BadBatch:
            pass

    def test_not_bytes(self):
        """A value of another type (SQLite gives text for text) is refused."""
        with self.assertRaises(BadBatch):
            decode("x" * 40)

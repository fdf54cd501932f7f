"""
Tests for L{udpchat.wire}: datagrams to requests, and the bytes sent back.
"""

import ast
import re
import unicodedata
from dataclasses import fields

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from udpchat import wire
from udpchat.wire import (
    FETCH,
    LEAVE,
    Fetch,
    IllegalMessage,
    Join,
    Leave,
    Rename,
    Say,
    member_list,
    parse_request,
)

from tests.model import spec_member_list

PROPERTY = settings(max_examples=200, deadline=None)

ENDINGS = (b"", b"\n", b"\r\n")


def parses(datagram):
    """
    The request C{datagram} parses to, or C{IllegalMessage} (the class) when
    the parser refuses it.
    """
    try:
        return parse_request(datagram)
    except IllegalMessage:
        return IllegalMessage


def accepted(datagrams):
    """
    The datagrams among C{datagrams} that parse, each with what it parses to:
    C{{}} when every one of them is refused.
    """
    results = {datagram: parses(datagram) for datagram in datagrams}
    return {d: r for d, r in results.items() if r is not IllegalMessage}


# The protocol as README states it, written independently of the parser, so
# that the two can be compared on any datagram.

_RESERVED = re.compile(r"and \d+ more")


def spec_name_ok(name):
    return (
        1 <= len(name) <= 32
        and "," not in name
        and not name[0].isspace()
        and not name[-1].isspace()
        and name != "Illegal message"
        and not _RESERVED.fullmatch(name)
        and not any(
            unicodedata.category(c) in ("Cc", "Cf") or c in "\u2028\u2029"
            for c in name
        )
    )


def spec_text_ok(text):
    return (
        text != ""
        and not text.isspace()
        and len(text.encode("utf-8")) <= 1024
        and not any(
            (c != "\t" and unicodedata.category(c) == "Cc") or c in "\u2028\u2029"
            for c in text
        )
    )


def spec_parse(datagram):
    """
    What the protocol says C{datagram} means, or C{IllegalMessage}.  (No
    length check: the text limit alone bounds a legal datagram.)
    """
    if datagram.endswith(b"\r\n"):
        datagram = datagram[:-2]
    elif datagram.endswith(b"\n"):
        datagram = datagram[:-1]
    try:
        request = datagram.decode("utf-8", "strict")
    except UnicodeDecodeError:
        return IllegalMessage
    if request == "4":
        return Leave()
    if request == "5":
        return Fetch()
    code, space, argument = request[:1], request[1:2], request[2:]
    if space != " " or argument == "":
        return IllegalMessage
    if code == "1" and spec_name_ok(argument):
        return Join(argument)
    if code == "3" and spec_name_ok(argument):
        return Rename(argument)
    if code == "2" and spec_text_ok(argument):
        return Say(argument)
    return IllegalMessage


# Characters that the rules single out, mixed with anything at all.
_SPECIAL = list(
    "aZ9 ,.:-_\t\n\r\x00\x1b\x7f\x85\xa0\u00ad\u1680\u2000\u200b\u200e"
    "\u2028\u2029\u202e\u3000\ufeff\U000e0001\xe9\u20ac\U0001f600\u0665\uff15"
)
_chars = st.one_of(st.sampled_from(_SPECIAL), st.characters(codec="utf-8"))


def _near_limit(target, char):
    # Text of about `target` bytes of UTF-8, ending with `char`.
    return "a" * max(0, target - len(char.encode())) + char


_arguments = st.one_of(
    st.text(_chars, max_size=40).map(str.encode),
    st.sampled_from(
        [
            "Illegal message",
            "and 5 more",
            "and 998 more",
            "and more",
            "Illegal messages",
            "a" * 32,
            "a" * 33,
            "\U0001f600" * 32,
            "\U0001f600" * 33,
        ]
    ).map(str.encode),
    st.builds(
        _near_limit, st.integers(1018, 1030), st.sampled_from(["a", "\xe9", "\u20ac", "\U0001f600", "\n"])
    ).map(str.encode),
    st.binary(max_size=12),
)

_datagrams = st.one_of(
    st.builds(
        lambda code, space, argument, ending: code + space + argument + ending,
        st.sampled_from(
            [b"1", b"2", b"3", b"4", b"5", b"0", b"6", b"9", b"", b"a", b"12",
             b" 5", b"+5", "\u0665".encode(), "\uff15".encode()]
        ),
        st.sampled_from([b" ", b"", b"  ", b"\t", "\xa0".encode()]),
        _arguments,
        st.sampled_from([b"", b"\n", b"\r\n", b"\r", b"\n\n", b"\r\n\n", b"\n\r", b"\r\n\r\n"]),
    ),
    st.sampled_from([b"4", b"5"]).flatmap(
        lambda code: st.sampled_from(
            [code + end for end in (b"", b"\n", b"\r\n", b" ", b"\r", b"\n\n", b"\x00")]
        )
    ),
    st.binary(max_size=1100),
)


class WireTests(SynchronousTestCase):
    """
    Tests for L{parse_request}: which datagrams are requests, and which.
    """

    def test_join_parses_to_join_with_name(self):
        """C{1 Name} is a L{Join} of that name."""
        self.assertEqual(parse_request(b"1 Bo"), Join("Bo"))

    def test_say_parses_to_say_with_text(self):
        """C{2 Text} is a L{Say} of that text."""
        self.assertEqual(parse_request(b"2 hello, world"), Say("hello, world"))

    def test_rename_parses_to_rename_with_name(self):
        """C{3 New} is a L{Rename} to that name."""
        self.assertEqual(parse_request(b"3 Cy"), Rename("Cy"))

    def test_leave_parses_to_leave(self):
        """C{4} is a L{Leave}."""
        self.assertEqual(parse_request(b"4"), LEAVE)
        self.assertEqual(parse_request(b"4"), Leave())

    def test_fetch_parses_to_fetch(self):
        """C{5} is a L{Fetch}."""
        self.assertEqual(parse_request(b"5"), FETCH)
        self.assertEqual(parse_request(b"5"), Fetch())

    def test_one_trailing_line_ending_is_removed(self):
        """A single trailing LF or CRLF is not part of the request."""
        self.assertEqual(
            [parse_request(b"1 Bo" + end) for end in ENDINGS]
            + [parse_request(b"2 hi" + end) for end in ENDINGS]
            + [parse_request(b"3 Cy" + end) for end in ENDINGS]
            + [parse_request(b"4" + end) for end in ENDINGS]
            + [parse_request(b"5" + end) for end in ENDINGS],
            [Join("Bo")] * 3 + [Say("hi")] * 3 + [Rename("Cy")] * 3 + [Leave()] * 3 + [Fetch()] * 3,
        )

    def test_only_one_line_ending_is_removed(self):
        """A second line ending, a lone CR or an LF-CR stays and makes the request illegal."""
        self.assertEqual(
            accepted(
                [
                    b"4\n\n", b"5\n\n", b"5\r\n\r\n", b"5\n\r\n", b"5\r", b"4\r",
                    b"5\n\r", b"1 Bo\n\n", b"1 Bo\r", b"1 Bo\r\r\n", b"3 Cy\r\n\r\n",
                    b"2 hi\n\n", b"2 hi\r", b"2 hi\r\r\n", b"2 hi\n\r", b"2 hi\r\n\r\n",
                ]
            ),
            {},
        )

    def test_text_is_delivered_exactly_as_sent(self):
        """Leading and trailing spaces, tabs and commas are part of the text."""
        self.assertEqual(
            [
                parse_request(b"2   two leading"),
                parse_request(b"2 trailing  \n"),
                parse_request(b"2 \tindented\ttext"),
                parse_request(b"2 a, b, and 3 more"),
                parse_request(b"2 Illegal message"),
                parse_request("2 zero\u200bwidth \u202eand\ufeff".encode()),
            ],
            [
                Say("  two leading"),
                Say("trailing  "),
                Say("\tindented\ttext"),
                Say("a, b, and 3 more"),
                Say("Illegal message"),
                Say("zero\u200bwidth \u202eand\ufeff"),
            ],
        )

    def test_arguments_are_not_normalised(self):
        """Names and texts keep their code points: no Unicode normalisation."""
        decomposed = "Zoe\u0301"
        self.assertEqual(
            [
                parse_request(b"1 " + decomposed.encode()),
                parse_request("3 \ufb01sh".encode()),
                parse_request("2 \u212b \uff21".encode()),
            ],
            [Join(decomposed), Rename("\ufb01sh"), Say("\u212b \uff21")],
        )

    def test_empty_datagram_is_illegal(self):
        """An empty datagram, or a bare line ending, is illegal."""
        self.assertEqual(accepted([b"", b"\n", b"\r\n", b" ", b"\r"]), {})

    def test_code_must_be_one_ascii_digit_one_to_five(self):
        """Unknown codes, padded or signed codes and non-ASCII digits are illegal."""
        self.assertEqual(
            accepted(
                [
                    b"0", b"6", b"9", b"0 Bo", b"6 hi", b"9 hi", b"a", b"x y",
                    b" 5", b"+5", b"05", b"55", b"5.", b" 1 Bo", b"+1 Bo",
                    b"01 Bo", b"12 Bo", b"22 hi", b"1\tBo", b"2\thi", b"1Bo",
                    b"2hi", b"3Cy", "\u0665".encode(), "\u0661 Bo".encode(),
                    "\uff15".encode(), "\uff11 Bo".encode(), b"\x005",
                    "\ufeff5".encode(), "1\xa0Bo".encode(),
                ]
            ),
            {},
        )

    def test_codes_one_to_three_need_an_argument(self):
        """C{1}, C{2} and C{3} without an argument, or with an empty one, are illegal."""
        self.assertEqual(
            accepted(
                [
                    code + rest
                    for code in (b"1", b"2", b"3")
                    for rest in (b"", b" ", b" \n", b" \r\n", b"\n", b"\r\n")
                ]
            ),
            {},
        )

    def test_codes_four_and_five_take_no_argument(self):
        """C{4} and C{5} followed by a space, an argument or anything else are illegal."""
        self.assertEqual(
            accepted(
                [
                    code + rest
                    for code in (b"4", b"5")
                    for rest in (b" ", b" \n", b" \r\n", b"  ", b" x", b" Bo\n", b"x", b"\t", b"\x00")
                ]
            ),
            {},
        )

    def test_invalid_utf8_is_illegal(self):
        """Arguments that are not strict UTF-8 make the request illegal."""
        bad = [
            b"\xff",
            b"\xc3",  # truncated sequence
            b"\xc3(",
            b"\x80",  # lone continuation byte
            b"\xc0\xaf",  # overlong "/"
            b"\xe0\x80\xaf",  # overlong
            b"\xed\xa0\x80",  # an encoded surrogate
            b"\xf4\x90\x80\x80",  # beyond U+10FFFF
        ]
        self.assertEqual(
            accepted(
                [code + b" " + b"ok" + seq for code in (b"1", b"2", b"3") for seq in bad]
                + [code + b" " + seq for code in (b"1", b"2", b"3") for seq in bad]
                + [b"\xff5", b"5\xff", b"\xff"]
            ),
            {},
        )

    def test_name_of_one_to_32_code_points_is_legal(self):
        """Names are 1 to 32 code points long, however many bytes that takes."""
        names = ["B", "a" * 32, "\U0001f600" * 32, "\u20ac" * 32, "Bo Li", "Bo.Li-2_x"]
        self.assertEqual(
            [parse_request(code + b" " + name.encode()) for code in (b"1", b"3") for name in names],
            [Join(name) for name in names] + [Rename(name) for name in names],
        )

    def test_name_longer_than_32_code_points_is_illegal(self):
        """A name of 33 code points is illegal, in C{1} and in C{3}."""
        self.assertEqual(
            accepted(
                [
                    code + b" " + name.encode()
                    for code in (b"1", b"3")
                    for name in ("a" * 33, "\U0001f600" * 33, "a" * 100)
                ]
            ),
            {},
        )

    def test_name_with_comma_is_illegal(self):
        """No name may contain a comma."""
        self.assertEqual(
            accepted(
                [code + b" " + name for code in (b"1", b"3") for name in (b",", b"Bo,", b",Bo", b"Bo, Cy")]
            ),
            {},
        )

    def test_name_padded_with_whitespace_is_illegal(self):
        """A name may not start or end with whitespace, of any kind."""
        spaces = [" ", "\t", "\xa0", "\u1680", "\u2000", "\u3000", "\x1c"]
        names = [s + "Bo" for s in spaces] + ["Bo" + s for s in spaces] + [" ", "  ", "\u3000"]
        self.assertEqual(
            accepted([code + b" " + name.encode() for code in (b"1", b"3") for name in names]),
            {},
        )

    def test_name_with_control_or_format_character_is_illegal(self):
        """No name may contain a Cc or Cf character, U+2028 or U+2029."""
        forbidden = [
            "\x00", "\t", "\n", "\r", "\x1b", "\x7f", "\x85", "\x9f",  # Cc
            "\u00ad", "\u200b", "\u200e", "\u202e", "\u2066", "\ufeff", "\U000e0001",  # Cf
            "\u2028", "\u2029",
        ]
        names = [f"B{c}o" for c in forbidden] + [f"{c}Bo" for c in forbidden]
        # A trailing LF would be taken for the line ending.
        names += [f"Bo{c}" for c in forbidden if c != "\n"] + ["Bo\n\n", "Bo\n\r\n"]
        self.assertEqual(
            accepted([code + b" " + name.encode() for code in (b"1", b"3") for name in names]),
            {},
        )

    def test_reserved_names_are_illegal(self):
        """C{Illegal message} and C{and N more}, for any N, are not names."""
        names = [b"Illegal message", b"and 0 more", b"and 1 more", b"and 998 more", b"and 00012 more"]
        self.assertEqual(accepted([code + b" " + name for code in (b"1", b"3") for name in names]), {})

    def test_names_resembling_reserved_names_are_legal(self):
        """Only the exact reserved forms are refused."""
        names = [
            "illegal message", "Illegal messages", "Illegal", "and more",
            "And 5 more", "and 5 more!", "band 5 more", "and five more",
        ]
        self.assertEqual(
            [parse_request(b"1 " + name.encode()) for name in names],
            [Join(name) for name in names],
        )

    def test_name_may_hold_characters_forbidden_only_in_texts_elsewhere(self):
        """Private-use and unassigned code points are not among the forbidden categories."""
        names = ["\ue000", "Bo\U0010fffd", "\u0378x"]
        self.assertEqual(
            [parse_request(b"3 " + name.encode()) for name in names],
            [Rename(name) for name in names],
        )

    def test_blank_text_is_illegal(self):
        """A text of whitespace only is illegal."""
        blanks = [" ", "   ", "\t", " \t ", "\xa0", "\u3000", "\u2000 "]
        self.assertEqual(accepted([b"2 " + text.encode() for text in blanks]), {})

    def test_text_with_control_character_other_than_tab_is_illegal(self):
        """A text may hold TAB but no other Cc character, nor U+2028 or U+2029."""
        forbidden = [
            "\x00", "\x07", "\x08", "\n", "\x0b", "\x0c", "\r", "\x1b", "\x7f", "\x85", "\x9f",
            "\u2028", "\u2029",
        ]
        self.assertEqual(
            accepted(
                [b"2 " + text.encode() for c in forbidden for text in (f"a{c}b", f"{c}ab", f"ab{c}")
                 if text != "ab\n"]  # a trailing LF is the line ending
                + [b"2 ab\n\n", b"2 ab\n\r\n"]
            ),
            {},
        )
        self.assertEqual(parse_request(b"2 a\tb\t"), Say("a\tb\t"))

    def test_text_of_1024_bytes_is_legal(self):
        """A text may be 1024 bytes of UTF-8, whatever its characters."""
        texts = ["a" * 1024, "\U0001f600" * 256, "a" * 1022 + "\xe9", "\u20ac" * 341 + "a"]
        self.assertEqual(
            [parse_request(b"2 " + text.encode()) for text in texts],
            [Say(text) for text in texts],
        )

    def test_text_of_1025_bytes_is_illegal(self):
        """A text one byte over 1024 bytes of UTF-8 is illegal, even if only 257 characters."""
        texts = ["a" * 1025, "a" * 1021 + "\U0001f600", "\U0001f600" * 256 + "a", "a" * 5000]
        self.assertEqual(accepted([b"2 " + text.encode() for text in texts]), {})

    def test_largest_legal_datagram_holds_1024_bytes_of_text_and_crlf(self):
        """C{2 } plus 1024 bytes of text plus an optional LF or CRLF is legal."""
        text = "x" * 1024
        datagrams = [b"2 " + text.encode() + end for end in ENDINGS]
        self.assertEqual(
            ([len(d) for d in datagrams], [parse_request(d) for d in datagrams]),
            ([1026, 1027, 1028], [Say(text)] * 3),
        )

    def test_longer_datagrams_are_illegal(self):
        """Any datagram longer than the largest legal one is illegal, never parsed truncated."""
        legal = b"2 " + b"x" * 1024 + b"\r\n"
        datagrams = [
            legal + b"\n",
            b"2 " + b"x" * 1025 + b"\r\n",
            b"2 " + b"x" * 1026 + b"\r\n",
            b"2 " + b"x" * 1027 + b"\r\n",
            b"2 " + b"x" * 1027 + b"\n",
            legal + b"2 more",
            b"5" + b"\n" * 1030,
            b"5\r\n" + b"\x00" * 2000,
            b"1 Bo\n" + b" " * 2000,
            b"2 hi" + b"\n" * 1100,
            b"2 " + b"y" * 9000,
        ]
        self.assertEqual(
            ([len(d) for d in datagrams[:5]], accepted(datagrams)),
            ([1029, 1029, 1030, 1031, 1030], {}),
        )

    @PROPERTY
    @given(_datagrams)
    def test_arbitrary_bytes_raise_nothing_but_illegal_message(self, datagram):
        """Any datagram parses to a request or raises L{IllegalMessage}, nothing else."""
        try:
            request = parse_request(datagram)
        except IllegalMessage:
            return
        self.assertIn(type(request), (Join, Say, Rename, Leave, Fetch))

    @PROPERTY
    @given(st.binary(max_size=2100))
    def test_random_bytes_raise_nothing_but_illegal_message(self, datagram):
        """Uniformly random bytes parse or raise L{IllegalMessage}, nothing else."""
        try:
            parse_request(datagram)
        except IllegalMessage:
            pass

    @PROPERTY
    @given(_datagrams)
    def test_parser_agrees_with_protocol_reference(self, datagram):
        """Every datagram parses to exactly what the protocol says it means."""
        self.assertEqual(parses(datagram), spec_parse(datagram))

    @PROPERTY
    @given(
        st.text(_chars, min_size=1, max_size=40).filter(spec_name_ok),
        st.sampled_from([b"1", b"3"]),
        st.sampled_from(ENDINGS),
    )
    def test_valid_names_round_trip(self, name, code, ending):
        """Every name the rules allow parses back to itself, in C{1} and C{3}."""
        request = parse_request(code + b" " + name.encode() + ending)
        self.assertEqual(request, Join(name) if code == b"1" else Rename(name))

    @PROPERTY
    @given(st.text(_chars, min_size=1, max_size=300).filter(spec_text_ok), st.sampled_from(ENDINGS))
    def test_valid_texts_round_trip(self, text, ending):
        """Every text the rules allow parses back to itself."""
        self.assertEqual(parse_request(b"2 " + text.encode() + ending), Say(text))


class LineTests(SynchronousTestCase):
    """
    Tests for the lines that requests queue for the other members.
    """

    def test_said_line(self):
        """C{2 Text} queues C{Name: Text}, the text exactly as sent."""
        self.assertEqual(wire.said("Bo", "  hi, all\t"), b"Bo:   hi, all\t")

    def test_joined_line(self):
        """C{1 Name} queues C{Name has joined}."""
        self.assertEqual(wire.joined("Bo"), b"Bo has joined")

    def test_renamed_line(self):
        """C{3 New} queues C{Old changed his name to New}."""
        self.assertEqual(wire.renamed("Bo", "Cy"), b"Bo changed his name to Cy")

    def test_left_line(self):
        """C{4} queues C{Name has left the group}."""
        self.assertEqual(wire.left("Bo"), b"Bo has left the group")

    def test_lines_are_utf8(self):
        """Lines are the UTF-8 encoding of their text."""
        self.assertEqual(
            [wire.said("Zo\u00eb", "\U0001f600"), wire.joined("\u20ac")],
            ["Zo\u00eb: \U0001f600".encode(), "\u20ac has joined".encode()],
        )


class MemberListTests(SynchronousTestCase):
    """
    Tests for L{member_list}, the reply to C{1 Name}.
    """

    def test_no_other_members_is_empty(self):
        """With nobody else in the room the reply is empty."""
        self.assertEqual(member_list([], 0, 1200), b"")

    def test_names_joined_by_comma_space_in_given_order(self):
        """The names come newest first, as given, joined by C{, }."""
        self.assertEqual(member_list(["Cy", "Bo", "Al"], 3, 1200), b"Cy, Bo, Al")

    def test_names_may_come_from_an_iterator(self):
        """C{names} may be any iterable, such as a generator."""
        self.assertEqual(member_list(iter(["Cy", "Bo"]), 2, 1200), b"Cy, Bo")

    def test_reply_exactly_at_cap_is_not_truncated(self):
        """A list that fills the cap exactly is sent whole."""
        self.assertEqual(member_list(["Cy", "Bo", "Al"], 3, 10), b"Cy, Bo, Al")

    def test_names_that_do_not_fit_are_counted(self):
        """As many names as fit, newest first, then C{and N more}."""
        names = ["Cy", "Bo"] + [f"m{i}" for i in range(998)]
        self.assertEqual(member_list(names, 1000, 20), b"Cy, Bo, and 998 more")

    def test_count_grows_as_names_are_dropped_for_it(self):
        """Names are dropped until C{and N more} fits, N counting every dropped one."""
        names = ["Cy", "Bo", "Al", "Di", "Ed", "Flo"]  # 23 bytes whole
        self.assertEqual(
            [member_list(names, 6, cap) for cap in (10, 13, 14, 17, 18, 21, 22, 23)],
            [
                b"and 6 more",
                b"and 6 more",
                b"Cy, and 5 more",
                b"Cy, and 5 more",
                b"Cy, Bo, and 4 more",
                b"Cy, Bo, and 4 more",
                b"Cy, Bo, Al, and 3 more",
                b"Cy, Bo, Al, Di, Ed, Flo",
            ],
        )

    def test_long_first_name_leaves_only_the_count(self):
        """When not even the newest name fits with the count, the reply is the count."""
        self.assertEqual(member_list(["x" * 32, "Bo"], 2, 20), b"and 2 more")

    def test_cap_is_in_bytes_not_characters(self):
        """Names are measured in bytes of UTF-8 against the cap."""
        names = ["\U0001f600" * 4, "\u20ac" * 4, "ab"]
        # 16 + 2 + 12 + 2 + 2 = 34 bytes whole.
        self.assertEqual(
            [member_list(names, 3, cap) for cap in (34, 33)],
            [b", ".join(n.encode() for n in names), ("\U0001f600" * 4).encode() + b", and 2 more"],
        )

    @PROPERTY
    @given(
        st.lists(
            st.text(st.characters(codec="utf-8", exclude_characters=","), min_size=1, max_size=32),
            max_size=80,
        ),
        st.data(),
    )
    def test_member_list_fits_cap_and_counts_the_rest(self, names, data):
        """The list never exceeds the cap; when cut, it ends with C{and N more}, N the names left out."""
        total = len(names)
        cap = data.draw(st.integers(len(b"and %d more" % total), 1400), label="cap")
        reply = member_list(iter(names), total, cap)
        self.assertLessEqual(len(reply), cap)
        items = reply.split(b", ") if reply else []
        whole = [name.encode() for name in names]
        if items != whole:
            shown = len(items) - 1
            self.assertEqual(
                (items[:shown], items[-1]),
                (whole[:shown], b"and %d more" % (total - shown)),
            )
        self.assertEqual(reply, spec_member_list(names, cap))


class EncodeRequestTests(SynchronousTestCase):
    """
    L{wire.encode_request} writes the datagram that L{wire.parse_request}
    reads back as the same request, both from one table of codes.
    """

    def test_round_trip(self):
        """Every request encodes to a datagram that parses back to it."""
        for request in (
            wire.Join("Alice"),
            wire.Say("  indented\ttext"),
            wire.Rename("Bo"),
            wire.LEAVE,
            wire.FETCH,
        ):
            datagram = wire.encode_request(request)
            self.assertEqual(wire.parse_request(datagram), request)

    def test_codes(self):
        """Requests 1 to 5 are Join, Say, Rename, Leave and Fetch, as README states."""
        self.assertEqual(wire.encode_request(wire.Join("Al")), b"1 Al")
        self.assertEqual(wire.encode_request(wire.Say("hé")), "2 hé".encode())
        self.assertEqual(wire.encode_request(wire.Rename("B")), b"3 B")
        self.assertEqual(wire.encode_request(wire.LEAVE), b"4")
        self.assertEqual(wire.encode_request(wire.FETCH), b"5")

    def test_every_row_of_the_table_encodes_and_parses(self):
        """Each code of REQUEST_CODES encodes its request, and parses back to it."""
        token = b"0123456789abcdef" * 2
        for code, kind, argument in wire.REQUEST_CODES:
            if kind is wire.Register:
                request, datagram = kind(token, "Bo"), code + b" " + token + b" Bo"
            elif kind is wire.SessionFetch:
                request, datagram = kind(token, 7, 12), code + b" " + token + b" 7 12"
            elif kind in wire.SESSION_REQUESTS:
                request = kind(token, 7, "Bo") if argument else kind(token, 7)
                datagram = code + b" " + token + (b" 7 Bo" if argument else b" 7")
            else:
                request = kind("Bo") if argument else kind()
                datagram = code + b" Bo" if argument else code
            self.assertEqual(
                (wire.encode_request(request), wire.parse_request(datagram)),
                (datagram, request),
            )

    def test_table_names_the_field_that_holds_the_argument(self):
        """A request's argument, in the table, is its one field besides a session's nonce or token and number; none for a request without."""
        header = ("nonce", "token", "seq")
        self.assertEqual(
            [[f.name for f in fields(kind) if f.name not in header] for _, kind, _ in wire.REQUEST_CODES],
            [[argument] if argument else [] for _, _, argument in wire.REQUEST_CODES],
        )

    def test_codes_are_spelled_once(self):
        """In wire.py each request code is one bytes literal, in the table."""
        with open(wire.__file__, encoding="utf-8") as source:
            tree = ast.parse(source.read())
        literals = [
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and node.value in (b"1", b"2", b"3", b"4", b"5")
        ]
        self.assertEqual(sorted(literals), [b"1", b"2", b"3", b"4", b"5"])

    def test_judged_returns_the_datagram_of_a_legal_request(self):
        """L{wire.judged} encodes what the parser accepts."""
        self.assertEqual(
            [wire.judged(wire.Say("hé")), wire.judged(wire.Join("Bo")), wire.judged(wire.FETCH)],
            ["2 hé".encode(), b"1 Bo", b"5"],
        )

    def test_judged_refuses_with_the_parser_reason(self):
        """L{wire.judged} raises what the parser would; a lone surrogate is not UTF-8."""
        reasons = []
        for request in (wire.Say(" "), wire.Rename("a,b"), wire.Join("Bo\udcff")):
            with self.assertRaises(IllegalMessage) as raised:
                wire.judged(request)
            reasons.append(raised.exception.reason)
        self.assertEqual(
            reasons, [wire.BLANK_TEXT, wire.FORBIDDEN_CHARACTER_IN_NAME, wire.NOT_UTF8]
        )


class ReasonTests(SynchronousTestCase):
    """
    Every refusal carries its reason as a named constant of L{wire}.
    """

    def reason(self, datagram):
        with self.assertRaises(IllegalMessage) as raised:
            parse_request(datagram)
        return raised.exception.reason

    def test_each_refusal_of_the_parser_has_its_reason(self):
        """Each rule the parser applies refuses with its own constant."""
        cases = {
            b"2 " + b"x" * 1027: wire.DATAGRAM_TOO_LONG,
            b"": wire.MALFORMED,
            b"5 ": wire.MALFORMED,
            b"1Bo": wire.MALFORMED,
            b"a x": wire.UNKNOWN_CODE,
            b"6 x": wire.MALFORMED,
            b"4 x": wire.UNKNOWN_CODE,
            b"1 \xff": wire.NOT_UTF8,
            b"2 \xff": wire.NOT_UTF8,
            b"1 " + b"a" * 33: wire.NAME_LENGTH,
            b"1  Bo": wire.PADDED_NAME,
            b"3 and 5 more": wire.RESERVED_NAME,
            b"3 a,b": wire.FORBIDDEN_CHARACTER_IN_NAME,
            b"2 " + b"x" * 1025: wire.TEXT_TOO_LONG,
            b"2  \t": wire.BLANK_TEXT,
            b"2 a\x1b": wire.FORBIDDEN_CHARACTER_IN_TEXT,
        }
        self.assertEqual({datagram: self.reason(datagram) for datagram in cases}, cases)

    def test_reasons_keep_their_strings(self):
        """The constants are the strings the wire and the room have always raised."""
        self.assertEqual(
            [
                wire.DATAGRAM_TOO_LONG, wire.MALFORMED, wire.UNKNOWN_CODE, wire.NOT_UTF8,
                wire.NAME_LENGTH, wire.PADDED_NAME, wire.RESERVED_NAME,
                wire.FORBIDDEN_CHARACTER_IN_NAME, wire.TEXT_TOO_LONG, wire.BLANK_TEXT,
                wire.FORBIDDEN_CHARACTER_IN_TEXT, wire.NOT_A_MEMBER, wire.ALREADY_A_MEMBER,
                wire.NAME_TAKEN, wire.ROOM_FULL, wire.GROUP_FULL,
            ],
            [
                "too long", "malformed request", "unknown code", "not UTF-8",
                "name length", "name padded with whitespace", "reserved name",
                "forbidden character in name", "text too long", "blank text",
                "forbidden character in text", "not a member", "already a member",
                "name taken", "room full", "group full",
            ],
        )

    def test_illegal_message_is_made_from_its_reason(self):
        """C{IllegalMessage(reason)} carries C{reason}, and reads as it."""
        error = IllegalMessage(wire.NOT_A_MEMBER)
        self.assertEqual((error.reason, str(error)), ("not a member", "not a member"))


# Names whose lines no chat line can be taken for: a line that follows a
# name with " has joined" or the like holds ": " if the name holds it or ends
# with ":".
_plain_names = st.text(_chars, min_size=1, max_size=32).filter(
    lambda name: spec_name_ok(name) and ": " not in name + " "
)


class ReadingTests(SynchronousTestCase):
    """
    What a client reads: the server's bytes as text, and the forms of its lines.
    """

    def test_decode_is_strict(self):
        """L{wire.decode} gives the text of UTF-8, and refuses anything else as not UTF-8."""
        self.assertEqual(wire.decode("café".encode()), "café")
        with self.assertRaises(IllegalMessage) as raised:
            wire.decode(b"caf\xe9")
        self.assertEqual(raised.exception.reason, wire.NOT_UTF8)

    def test_readable_replaces_what_is_not_utf8(self):
        """L{wire.readable} shows any bytes, what is not UTF-8 as U+FFFD."""
        self.assertEqual(wire.readable(b"caf\xe9 \xc3\xa9"), "caf\ufffd \xe9")

    def test_reply_lines(self):
        """A reply to 5 is its lines, as text; the empty reply holds none."""
        self.assertEqual(
            [wire.reply_lines(b""), wire.reply_lines(b"Bo: a\nBo: \xff")],
            [[], ["Bo: a", "Bo: \ufffd"]],
        )

    def test_line_kinds(self):
        """Joins, leaves and renames are events, drop notices notices, the rest chat lines."""
        lines = {
            "Bo has joined": wire.EVENT_LINE,
            "Bo has left the group": wire.EVENT_LINE,
            "Bo changed his name to Bob": wire.EVENT_LINE,
            "[1 line dropped]": wire.DROPPED_NOTICE,
            "[12 lines dropped]": wire.DROPPED_NOTICE,
            "Bo: hi": wire.CHAT_LINE,
            "Bo: Cy has joined": wire.CHAT_LINE,
            "Bo: x has left the group": wire.CHAT_LINE,
            "[lines dropped]": wire.CHAT_LINE,
            "has joined": wire.CHAT_LINE,
        }
        self.assertEqual({line: wire.line_kind(line) for line in lines}, lines)

    def test_join_of_a_name_holding_colon_space_reads_as_a_chat_line(self):
        """The one ambiguity: a join of C{a: b} or C{a:} has a chat line's form, and is taken for one."""
        self.assertEqual(
            [wire.line_kind(wire.readable(wire.joined(name))) for name in ("a: b", "a:")],
            [wire.CHAT_LINE] * 2,
        )

    @PROPERTY
    @given(
        st.lists(_plain_names, min_size=2, max_size=2),
        st.text(_chars, min_size=1, max_size=100).filter(spec_text_ok),
        st.integers(1, 10**6),
    )
    def test_kind_of_every_line_the_server_builds(self, names, text, count):
        """Each line builder's output reads as its kind, for any legal name that gives no ": "."""
        name, other = names
        lines = [
            wire.said(other, text),
            wire.joined(name),
            wire.renamed(name, other),
            wire.left(name),
            wire.dropped(count),
        ]
        self.assertEqual(
            [wire.line_kind(line) for line in wire.reply_lines(wire.LINE_SEPARATOR.join(lines))],
            [wire.CHAT_LINE] + [wire.EVENT_LINE] * 3 + [wire.DROPPED_NOTICE],
        )


class RedactedTests(SynchronousTestCase):
    """What a debug log shows of a datagram: never a session's token."""

    def test_token_and_nonce_are_hidden(self):
        """The token (or nonce) of a session request is replaced; everything else is shown as sent."""
        token = b"0123456789abcdef" * 2
        self.assertEqual(
            [wire.redacted(d) for d in (b"7 " + token + b" 3 hi", b"6 " + token + b" Al", b"2 hi", b"5", b"0")],
            [b"7 <token> 3 hi", b"6 <token> Al", b"2 hi", b"5", b"0"],
        )


class SessionParsingTests(SynchronousTestCase):
    """The session requests' parser: canonical, total, and exact to README.rst."""

    @settings(max_examples=300, deadline=None)
    @given(
        st.sampled_from([b"6", b"7", b"8", b"9", b"0"]),
        st.one_of(
            st.binary(max_size=80),
            st.builds(
                lambda token, rest: token + rest,
                st.sampled_from([b"0123456789abcdef" * 2, b"0123456789ABCDEF" * 2, b"f" * 31]),
                st.one_of(
                    st.binary(max_size=30),
                    st.builds(
                        lambda a, b, c: b" %s %s%s" % (a, b, c),
                        st.sampled_from([b"1", b"0", b"01", b"9" * 19, b"9" * 20, b"", b"+1", b"1 "]),
                        st.sampled_from([b"0", b"7", b"007", b"hi", b"Bo", b"", b" "]),
                        st.sampled_from([b"", b" x", b"\n", b"\r\n"]),
                    ),
                ),
            ),
        ),
    )
    def test_accepted_session_requests_encode_back_to_themselves(self, code, argument):
        """Any datagram of a session code is refused with a reason, or parsed to a request that encodes to the same bytes (its line ending aside)."""
        datagram = code + b" " + argument
        try:
            request = wire.parse_request(datagram)
        except wire.IllegalMessage as e:
            self.assertIsNotNone(e.reason)
            return
        if datagram.endswith(b"\r\n"):
            datagram = datagram[:-2]
        elif datagram.endswith(b"\n"):
            datagram = datagram[:-1]
        self.assertEqual(wire.encode_request(request), datagram)

    def test_largest_session_request_is_accepted_and_one_byte_more_refused(self):
        """A say of 1024 bytes with a 19-digit number is 1079 bytes (1081 with CRLF); a longer text is refused."""
        token = b"0123456789abcdef" * 2
        largest = b"7 " + token + b" " + b"9" * 19 + b" " + b"x" * 1024 + b"\r\n"
        refusals = []
        for datagram in (largest + b"x", b"7 " + token + b" 1 " + b"x" * 1025):
            try:
                wire.parse_request(datagram)
            except wire.IllegalMessage as e:
                refusals.append(e.reason)
        self.assertEqual(
            (len(largest), wire.MAX_SESSION_DATAGRAM_BYTES, len(wire.parse_request(largest).text), refusals),
            (1081, 1081, 1024, [wire.DATAGRAM_TOO_LONG, wire.TEXT_TOO_LONG]),
        )

"""GTID sets (MySQL) and GTID lists (MariaDB): parsing, canonical form, arithmetic, errors."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cdc.errors import PositionError
from cdc.model.gtid import (
    MAX_GNO,
    MariadbGtidList,
    MysqlGtidSet,
    looks_like_mariadb,
    parse_gtid,
)

U1 = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
U2 = "8a94f357-aab4-11df-86ab-c80aa9429562"
U3 = "f00dcafe-0000-4000-8000-000000000001"


def S(text: str) -> MysqlGtidSet:
    return MysqlGtidSet.parse(text)


def M(text: str) -> MariadbGtidList:
    return MariadbGtidList.parse(text)


# --- MySQL: parsing and canonical form ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("", ""),
        ("  \n ", ""),
        (f"{U1}:1-100", f"{U1}:1-100"),
        (f"{U1}:5", f"{U1}:5"),
        (f"{U1}:1-5:7-9", f"{U1}:1-5:7-9"),
        (f"{U2}:1-3,{U1}:1-5", f"{U1}:1-5,{U2}:1-3"),
        (f"{U1.upper()}:1-5", f"{U1}:1-5"),
        # MySQL prints gtid_executed with a newline after each comma.
        (f"{U1}:1-5,\n{U2}:1-3,\n{U3}:7", f"{U1}:1-5,{U2}:1-3,{U3}:7"),
        (f"  {U1} : 1 - 5 ,\t{U2}:3 \n", f"{U1}:1-5,{U2}:3"),
        (f"{U1}:1-5:3-8", f"{U1}:1-8"),
        (f"{U1}:1-5:6-9", f"{U1}:1-9"),
        (f"{U1}:7-9:1-3", f"{U1}:1-3:7-9"),
        (f"{U1}:1-10:3-4", f"{U1}:1-10"),
        (f"{U1}:1:2:3:5", f"{U1}:1-3:5"),
        (f"{U1}:1-3,{U2}:1,{U1}:4-6", f"{U1}:1-6,{U2}:1"),
        (f"{U1}:1-{MAX_GNO}", f"{U1}:1-{MAX_GNO}"),
    ],
)
def test_mysql_parse_gives_canonical_string(text: str, canonical: str) -> None:
    parsed = S(text)
    assert str(parsed) == canonical
    assert S(canonical) == parsed
    assert str(S(canonical)) == canonical


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("abc:1-5", "'abc' in 'abc:1-5' is not a server uuid"),
        ("0-1-5", "'0-1-5' in '0-1-5' is not a server uuid"),
        (f"{U1[:-1]}g:1", f"'{U1[:-1]}g' in '{U1[:-1]}g:1' is not a server uuid"),
        (f"{U1.replace('-', '')}:1", "is not a server uuid"),
        (U1, f"'{U1}' has no transactions"),
        (f"{U1}:", f"empty interval in '{U1}:'"),
        (f"{U1}:1-5:", f"empty interval in '{U1}:1-5:'"),
        (f"{U1}:5-3", f"interval '5-3' in '{U1}:5-3' ends before it starts"),
        (f"{U1}:0", f"transaction number 0 in '{U1}:0' is out of range (1 to {MAX_GNO})"),
        (f"{U1}:1-{MAX_GNO + 1}", f"transaction number {MAX_GNO + 1} in '{U1}:1-"),
        (f"{U1}:1x", f"'1x' in '{U1}:1x' is not a transaction number"),
        (f"{U1}:+5", f"'+5' in '{U1}:+5' is not a transaction number"),
        (f"{U1}:1_000", "'1_000' in"),
        (f"{U1}:\u0661", "is not a transaction number"),  # ARABIC-INDIC DIGIT ONE
        (f"{U1}:1-2-3", f"'2-3' in '{U1}:1-2-3' is not a transaction number"),
        (f"{U1}:1,,{U2}:1", "empty entry (a leading, trailing or doubled comma)"),
        (f"{U1}:1,", "empty entry"),
        (f",{U1}:1", "empty entry"),
    ],
)
def test_mysql_malformed_text_is_reported_with_the_bad_part(text: str, message: str) -> None:
    with pytest.raises(PositionError) as caught:
        S(text)
    assert caught.value.message.startswith("malformed MySQL GTID set: ")
    assert message in caught.value.message
    assert caught.value.hint is not None
    assert "gtid_executed" in caught.value.hint


@pytest.mark.parametrize(
    ("text", "item"),
    [
        (f"{U1}:tag:1-5", f"{U1}:tag:1-5"),
        (f"{U2}:1-3,{U1}:1-5:Tag_2:3", f"{U1}:1-5:Tag_2:3"),
        (f"{U1}:_x:1", f"{U1}:_x:1"),
        (f"{U1}:1-5, {U2}:a23456789012345678901234567890bc:1", f"{U2}:a2345"),
    ],
)
def test_mysql_tagged_gtids_are_rejected_with_what_to_do(text: str, item: str) -> None:
    with pytest.raises(PositionError) as caught:
        S(text)
    error = caught.value
    assert item in error.message
    assert "tagged" in error.message
    assert "not supported" in error.message
    assert error.hint is not None
    assert "untagged GTIDs" in error.hint
    assert "binlog file and offset" in error.hint


def test_mysql_overlong_tag_is_malformed_not_tagged() -> None:
    # Tags have at most 32 characters, so this is not a tag: report it as a bad interval.
    with pytest.raises(PositionError, match="is not a transaction number"):
        S(f"{U1}:{'a' * 33}:1")


# --- MySQL: adding one transaction -------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "gtid", "expected"),
    [
        ("", f"{U1}:1", f"{U1}:1"),
        (f"{U1}:1-5", f"{U1}:6", f"{U1}:1-6"),
        (f"{U1}:1-5", f"{U1}:8", f"{U1}:1-5:8"),
        (f"{U1}:1-5:7-9", f"{U1}:6", f"{U1}:1-9"),
        (f"{U1}:1-5:8-9", f"{U1}:6", f"{U1}:1-6:8-9"),
        (f"{U1}:1-5:8-9", f"{U1}:7", f"{U1}:1-5:7-9"),
        (f"{U1}:3-5", f"{U1}:1", f"{U1}:1:3-5"),
        (f"{U1}:2-5", f"{U1}:1", f"{U1}:1-5"),
        (f"{U1}:10:20:30", f"{U1}:25", f"{U1}:10:20:25:30"),
        (f"{U1}:10:20:30", f"{U1}:21", f"{U1}:10:20-21:30"),
        (f"{U2}:1", f"{U1}:1", f"{U1}:1,{U2}:1"),
        (f"{U1}:1,{U3}:1", f"{U2}:4", f"{U1}:1,{U2}:4,{U3}:1"),
        (f"{U1}:1", f"{U1.upper()}:2", f"{U1}:1-2"),
        (f"{U1}:1", f" {U1}:2 ", f"{U1}:1-2"),
    ],
)
def test_mysql_add_merges_intervals(start: str, gtid: str, expected: str) -> None:
    assert str(S(start).add(gtid)) == expected


@pytest.mark.parametrize("gtid", [f"{U1}:1", f"{U1}:3", f"{U1}:5", f"{U1}:9"])
def test_mysql_add_of_a_present_transaction_changes_nothing(gtid: str) -> None:
    before = S(f"{U1}:1-5:9")
    assert before.add(gtid) is before


def test_mysql_add_leaves_the_original_set_unchanged() -> None:
    before = S(f"{U1}:1-5")
    text = str(before)
    after = before.add(f"{U1}:6").add(f"{U2}:1")
    assert str(before) == text
    assert str(after) == f"{U1}:1-6,{U2}:1"


@pytest.mark.parametrize(
    "gtid",
    [f"{U1}:1-5", U1, f"{U1}:", f"{U1}:0", f"{U1}:-1", "abc:1", f"{U1}:1,{U2}:1", f"{U1}:1:2", ""],
)
def test_mysql_add_rejects_anything_but_one_transaction(gtid: str) -> None:
    with pytest.raises(PositionError) as caught:
        S("").add(gtid)
    assert caught.value.message.startswith(f"malformed MySQL GTID {gtid!r}: expected one")


def test_mysql_add_rejects_a_tagged_transaction() -> None:
    with pytest.raises(PositionError, match=r"tagged GTIDs are not supported") as caught:
        S("").add(f"{U1}:tag:5")
    assert f"'{U1}:tag:5'" in caught.value.message


@pytest.mark.parametrize(
    ("gtid", "expected"),
    [
        (f"{U1}:1", True),
        (f"{U1}:5", True),
        (f"{U1}:6", False),
        (f"{U1}:8", False),
        (f"{U1}:9", True),
        (f"{U1}:10", False),
        (f"{U1.upper()}:9", True),
        (f"{U2}:1", False),
    ],
)
def test_mysql_membership(gtid: str, expected: bool) -> None:
    assert (gtid in S(f"{U1}:1-5:9")) is expected


def test_mysql_membership_of_malformed_gtid_raises() -> None:
    with pytest.raises(PositionError):
        _ = "nonsense" in S(f"{U1}:1")


# --- MySQL: set arithmetic ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "union", "difference", "intersection", "subset"),
    [
        ("", "", "", "", "", True),
        ("", f"{U1}:1", f"{U1}:1", "", "", True),
        (f"{U1}:1", "", f"{U1}:1", f"{U1}:1", "", False),
        (f"{U1}:1-5", f"{U1}:6-9", f"{U1}:1-9", f"{U1}:1-5", "", False),
        (f"{U1}:1-5", f"{U1}:1-10", f"{U1}:1-10", "", f"{U1}:1-5", True),
        (f"{U1}:1-10", f"{U1}:3-4:7", f"{U1}:1-10", f"{U1}:1-2:5-6:8-10", f"{U1}:3-4:7", False),
        (
            f"{U1}:1-5:10-15",
            f"{U1}:4-11",
            f"{U1}:1-15",
            f"{U1}:1-3:12-15",
            f"{U1}:4-5:10-11",
            False,
        ),
        (
            f"{U1}:1-100,{U2}:1-5",
            f"{U1}:1-200,{U3}:1",
            f"{U1}:1-200,{U2}:1-5,{U3}:1",
            f"{U2}:1-5",
            f"{U1}:1-100",
            False,
        ),
        (
            f"{U1}:1-100,{U2}:3",
            f"{U1}:1-200,{U2}:1-5",
            f"{U1}:1-200,{U2}:1-5",
            "",
            f"{U1}:1-100,{U2}:3",
            True,
        ),
        (f"{U1}:2:4:6", f"{U1}:1:3:5:7", f"{U1}:1-7", f"{U1}:2:4:6", "", False),
    ],
)
def test_mysql_set_operations(
    a: str, b: str, union: str, difference: str, intersection: str, subset: bool
) -> None:
    left, right = S(a), S(b)
    assert str(left.union(right)) == union
    assert str(right.union(left)) == union
    assert str(left.difference(right)) == difference
    assert str(left.intersection(right)) == intersection
    assert str(right.intersection(left)) == intersection
    assert left.issubset(right) is subset


def _resumable(checkpoint: str, executed: str, purged: str) -> bool:
    """The purge check the connector runs before streaming (as Debezium does)."""
    saved, done, gone = S(checkpoint), S(executed), S(purged)
    return saved.issubset(done) and not done.difference(saved).intersection(gone)


@pytest.mark.parametrize(
    ("checkpoint", "executed", "purged", "resumable"),
    [
        # Everything the connector still needs is in the binlog.
        (f"{U1}:1-100", f"{U1}:1-200", f"{U1}:1-50", True),
        (f"{U1}:1-100", f"{U1}:1-200", f"{U1}:1-100", True),
        (f"{U1}:1-100", f"{U1}:1-100", f"{U1}:1-100", True),
        # Transactions 101-150 were purged before the connector read them.
        (f"{U1}:1-100", f"{U1}:1-200", f"{U1}:1-150", False),
        # A new primary's transactions were purged: the checkpoint never saw them.
        (f"{U1}:1-100", f"{U1}:1-100,{U2}:1-3", f"{U2}:1", False),
        (f"{U1}:1-100", f"{U1}:1-100,{U2}:1-3", f"{U1}:1-100", True),
        # The checkpoint holds transactions this server never executed (wrong server, or a
        # rebuilt one).
        (f"{U1}:1-100,{U3}:1-5", f"{U1}:1-200", "", False),
        (f"{U1}:1-300", f"{U1}:1-200", "", False),
        ("", f"{U1}:1-200", "", True),
        ("", f"{U1}:1-200", f"{U1}:1", False),
    ],
)
def test_mysql_purge_check_building_blocks(
    checkpoint: str, executed: str, purged: str, resumable: bool
) -> None:
    assert _resumable(checkpoint, executed, purged) is resumable


# --- MySQL: value semantics --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("", 0),
        (f"{U1}:7", 1),
        (f"{U1}:1-100,{U2}:5:7-9", 104),
        (f"{U1}:1-10:5-15", 15),
        (f"{U1}:1-{MAX_GNO}", MAX_GNO),
    ],
)
def test_mysql_count(text: str, count: int) -> None:
    assert S(text).count() == count


def test_mysql_truthiness() -> None:
    assert not S("")
    assert not MysqlGtidSet()
    assert S(f"{U1}:1")
    assert not S(f"{U1}:1-5").difference(S(f"{U1}:1-9"))


def test_mysql_equality_and_hash_ignore_notation() -> None:
    a = S(f"{U2}:1-3:4-5,{U1.upper()}:9")
    b = S(f"{U1}:9,{U2}:1-5")
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b, S(f"{U1}:9")}) == 2
    assert a != S(f"{U1}:9,{U2}:1-6")
    assert a != str(b)
    assert MysqlGtidSet() == S("")
    assert S(f"{U1}:1-3").add(f"{U1}:4") == S(f"{U1}:1-4")
    assert hash(S(f"{U1}:1-3").add(f"{U1}:4")) == hash(S(f"{U1}:1-4"))


def test_mysql_uuids_and_intervals() -> None:
    gtids = S(f"{U2}:1-5:9,{U1.upper()}:3")
    assert gtids.uuids() == (U1, U2)
    assert gtids.intervals(U2.upper()) == ((1, 5), (9, 9))
    assert gtids.intervals(U3) == ()
    assert gtids.intervals("nonsense") == ()


def test_mysql_repr_round_trips() -> None:
    gtids = S(f"{U1}:1-5")
    assert repr(gtids) == f"MysqlGtidSet.parse('{U1}:1-5')"


# --- MySQL: properties against a model of plain Python sets -------------------------------------

_UUIDS = (U1, U2, U3)
_gtid_pairs = st.tuples(st.sampled_from(_UUIDS), st.integers(min_value=1, max_value=40))


def _from_pairs(pairs: list[tuple[str, int]]) -> MysqlGtidSet:
    gtids = MysqlGtidSet()
    for uuid, gno in pairs:
        gtids = gtids.add(f"{uuid}:{gno}")
    return gtids


def _to_pairs(gtids: MysqlGtidSet) -> set[tuple[str, int]]:
    return {
        (uuid, gno)
        for uuid in gtids.uuids()
        for first, last in gtids.intervals(uuid)
        for gno in range(first, last + 1)
    }


@given(st.lists(_gtid_pairs, max_size=80))
def test_mysql_adding_one_by_one_equals_parsing_the_canonical_string(
    pairs: list[tuple[str, int]],
) -> None:
    gtids = _from_pairs(pairs)
    assert MysqlGtidSet.parse(str(gtids)) == gtids
    assert gtids.count() == len(set(pairs))
    assert _to_pairs(gtids) == set(pairs)
    # The same transactions written as one comma-separated list of single GTIDs.
    assert MysqlGtidSet.parse(",".join(f"{u}:{n}" for u, n in pairs)) == gtids
    for uuid in gtids.uuids():
        intervals = gtids.intervals(uuid)
        # Merged: neither overlapping nor adjacent, so the canonical form is unique.
        assert all(a[1] + 1 < b[0] for a, b in pairwise(intervals))


@given(
    st.lists(_gtid_pairs, max_size=40),
    st.lists(_gtid_pairs, max_size=40),
    st.lists(_gtid_pairs, max_size=10),
)
def test_mysql_set_operations_match_python_sets(
    left_pairs: list[tuple[str, int]],
    right_pairs: list[tuple[str, int]],
    probes: list[tuple[str, int]],
) -> None:
    left, right = _from_pairs(left_pairs), _from_pairs(right_pairs)
    a, b = set(left_pairs), set(right_pairs)
    assert _to_pairs(left.union(right)) == a | b
    assert _to_pairs(left.difference(right)) == a - b
    assert _to_pairs(left.intersection(right)) == a & b
    assert left.issubset(right) is (a <= b)
    assert left.union(right) == MysqlGtidSet.parse(str(left.union(right)))
    for uuid, gno in probes:
        assert (f"{uuid}:{gno}" in left) is ((uuid, gno) in a)


# --- MariaDB -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("", ""),
        (" \n", ""),
        ("0-1-405", "0-1-405"),
        ("1-2-30,0-1-405", "0-1-405,1-2-30"),
        ("0-1-405,\n 1-2-30 ", "0-1-405,1-2-30"),
        ("7-1-12,0-1-405,3-9-0", "0-1-405,3-9-0,7-1-12"),
        (
            "4294967295-4294967295-18446744073709551615",
            "4294967295-4294967295-18446744073709551615",
        ),
    ],
)
def test_mariadb_parse_gives_canonical_string(text: str, canonical: str) -> None:
    parsed = M(text)
    assert str(parsed) == canonical
    assert M(canonical) == parsed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0-1", "'0-1' is not a GTID (expected domain-server-sequence"),
        ("0-1-2-3", "'0-1-2-3' is not a GTID"),
        ("a-1-2", "'a-1-2' is not a GTID"),
        ("0-1-", "'0-1-' is not a GTID"),
        ("0-1-5, 1-2-x", "'1-2-x' is not a GTID"),
        ("0 - 1 - 5", "'0 - 1 - 5' is not a GTID"),
        (f"{U1}:1-5", f"'{U1}:1-5' is not a GTID"),
        ("0-1-5,,1-2-3", "empty entry (a leading, trailing or doubled comma) in '0-1-5,,1-2-3'"),
        ("0-1-5,", "empty entry"),
        ("0-1-5,0-2-7", "domain 0 appears twice: '0-1-5' and '0-2-7'"),
        ("1-1-1,0-1-5, 0-1-5", "domain 0 appears twice: '0-1-5' and '0-1-5'"),
        ("4294967296-1-5", "domain id 4294967296 in '4294967296-1-5' is out of range"),
        ("0-4294967296-5", "server id 4294967296 in '0-4294967296-5' is out of range"),
        ("0-1-18446744073709551616", "sequence number 18446744073709551616 in"),
    ],
)
def test_mariadb_malformed_text_is_reported_with_the_bad_part(text: str, message: str) -> None:
    with pytest.raises(PositionError) as caught:
        M(text)
    assert caught.value.message.startswith("malformed MariaDB GTID list: ")
    assert message in caught.value.message
    assert caught.value.hint is not None
    assert "gtid_binlog_pos" in caught.value.hint


@pytest.mark.parametrize(
    ("start", "gtid", "expected"),
    [
        ("", "0-1-1", "0-1-1"),
        ("0-1-5,1-2-3", "0-1-6", "0-1-6,1-2-3"),
        ("0-1-5,1-2-3", "1-3-4", "0-1-5,1-3-4"),
        # Binlog order decides, not the number: a lower sequence still replaces the entry.
        ("0-1-5,1-2-3", "0-2-2", "0-2-2,1-2-3"),
        ("0-1-5,7-2-3", "3-1-1", "0-1-5,3-1-1,7-2-3"),
        ("0-1-5", " 9-1-1 ", "0-1-5,9-1-1"),
    ],
)
def test_mariadb_add_replaces_the_entry_of_its_domain(start: str, gtid: str, expected: str) -> None:
    before = M(start)
    after = before.add(gtid)
    assert str(after) == expected
    assert str(before) == str(M(start))


def test_mariadb_add_of_the_current_entry_changes_nothing() -> None:
    before = M("0-1-5,1-2-3")
    assert before.add("1-2-3") is before


@pytest.mark.parametrize("gtid", ["0-1", "0-1-5,1-2-3", "", "x-1-1", f"{U1}:5"])
def test_mariadb_add_rejects_anything_but_one_gtid(gtid: str) -> None:
    with pytest.raises(PositionError, match="is not a GTID"):
        M("0-1-5").add(gtid)


def test_mariadb_get_and_domains() -> None:
    gtids = M("7-1-12,0-1-405")
    assert gtids.domains() == (0, 7)
    assert gtids.get(0) == (1, 405)
    assert gtids.get(7) == (1, 12)
    assert gtids.get(1) is None
    assert M("").domains() == ()


@pytest.mark.parametrize(
    ("a", "b", "union"),
    [
        ("", "", ""),
        ("0-1-5", "", "0-1-5"),
        ("0-1-5", "0-1-7", "0-1-7"),
        ("0-1-9", "0-2-7", "0-1-9"),
        ("0-1-5,1-1-9", "1-2-3,2-1-1", "0-1-5,1-1-9,2-1-1"),
        # Same sequence on two servers (diverged histories): the choice must not depend on order.
        ("0-1-5", "0-2-5", "0-2-5"),
    ],
)
def test_mariadb_union_keeps_the_higher_sequence_per_domain(a: str, b: str, union: str) -> None:
    assert str(M(a).union(M(b))) == union
    assert str(M(b).union(M(a))) == union


@pytest.mark.parametrize(
    ("ours", "theirs", "reached"),
    [
        ("", "", True),
        ("", "0-1-5", True),
        ("0-1-5", "0-1-5", True),
        ("0-1-5", "0-1-6", True),
        ("0-1-5", "0-1-4", False),
        ("0-1-5", "", False),
        ("0-1-5,1-1-3", "0-1-9", False),
        ("0-1-5", "0-1-9,1-1-3", True),
        # A failover changes the server id of a domain; the sequence still counts.
        ("0-1-5", "0-2-6", True),
        ("0-1-5,1-1-3", "0-2-6,1-1-2", False),
    ],
)
def test_mariadb_is_reached_by(ours: str, theirs: str, reached: bool) -> None:
    assert M(ours).is_reached_by(M(theirs)) is reached


def test_mariadb_value_semantics() -> None:
    assert not M("")
    assert not MariadbGtidList()
    assert M("0-1-1")
    assert M("1-2-3,0-1-5") == M("0-1-5, 1-2-3")
    assert hash(M("1-2-3,0-1-5")) == hash(M("0-1-5,1-2-3"))
    assert M("0-1-5") != M("0-2-5")
    assert M("0-1-5") != "0-1-5"
    assert M("0-1-5").add("1-1-1") == M("1-1-1,0-1-5")
    assert repr(M("0-1-5")) == "MariadbGtidList.parse('0-1-5')"


# --- Either flavor -----------------------------------------------------------------------------


def test_parse_gtid_dispatches_on_flavor() -> None:
    assert parse_gtid("mysql", f"{U1}:1-5") == S(f"{U1}:1-5")
    assert parse_gtid("mariadb", "0-1-5") == M("0-1-5")
    assert parse_gtid("mysql", "") == MysqlGtidSet()
    assert parse_gtid("mariadb", "") == MariadbGtidList()
    with pytest.raises(PositionError, match="MariaDB"):
        parse_gtid("mariadb", f"{U1}:1-5")
    with pytest.raises(PositionError, match="MySQL"):
        parse_gtid("mysql", "0-1-5")
    with pytest.raises(ValueError, match="unknown flavor"):
        parse_gtid("postgres", "0/16B3748")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "mariadb"),
    [
        ("0-1-5", True),
        ("0-1-405,\n 1-2-30 ", True),
        ("0-1", True),
        (f"{U1}:1-5", False),
        (f"{U1.upper()}:1-5,\n{U2}:1", False),
        (U1, False),
        ("", False),
        ("  \n", False),
        ("0-1-x", False),
    ],
)
def test_looks_like_mariadb(text: str, mariadb: bool) -> None:
    assert looks_like_mariadb(text) is mariadb

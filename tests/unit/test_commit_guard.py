"""The commit guard's decisions (agents.commit_guard): what Faust may commit and count
as never delivered. The end-to-end proof is the fault suite (kill -9 after a restart)."""

from __future__ import annotations

from agents.commit_guard import next_commit, real_gap


def test_commits_the_run_of_acknowledged_offsets_from_the_committed_one() -> None:
    assert next_commit([10, 11, 12, 14], committed=10, unfinished=None) == 13


def test_repeated_offsets_do_not_cut_the_run_short() -> None:
    # Faust's own bookkeeping, after a gap over acknowledged offsets, looked like this
    # and committed one offset per interval.
    repeats = [733, 734, 734, 735, 735, 736, 736, 737]
    assert next_commit(repeats, committed=733, unfinished=None) == 738


def test_never_passes_a_delivered_message_still_in_a_batch() -> None:
    assert next_commit(range(100, 200), committed=100, unfinished=150) == 150
    assert next_commit(range(100, 200), committed=100, unfinished=100) is None


def test_unacknowledged_head_blocks_the_commit() -> None:
    assert next_commit([105, 106], committed=100, unfinished=None) is None
    # Faust's one-offset tolerance (a record never delivered right after a seek) stays.
    assert next_commit([101, 102], committed=100, unfinished=None) == 103


def test_nothing_acknowledged_commits_nothing() -> None:
    assert next_commit([], committed=5, unfinished=None) is None
    assert next_commit([], committed=None, unfinished=3) is None


def test_first_commit_of_a_partition_needs_no_committed_offset() -> None:
    assert next_commit([0, 1, 2], committed=None, unfinished=None) == 3


def test_a_gap_excludes_the_message_that_revealed_it() -> None:
    # read 10, next message 14: 11..13 were never delivered (14 is being delivered now).
    assert list(real_gap(11, 14, delivered_before_seek=None)) == [11, 12, 13]
    assert not real_gap(11, 11, delivered_before_seek=None)


def test_a_gap_never_covers_offsets_delivered_before_a_seek_moved_the_read_offset_back() -> None:
    # Delivered up to 1498, seek back to the committed 733, then a message fetched before
    # the seek (1499) arrives: nothing between was skipped.
    assert not real_gap(734, 1499, delivered_before_seek=1498)
    # A real hole after what was delivered before the seek still counts.
    assert list(real_gap(734, 1503, delivered_before_seek=1498)) == [1499, 1500, 1501, 1502]

"""Checks of the stored history against the memberships, shared by the tests and the soak.

Each takes `rows`, a function that runs a query and returns its rows, and returns what it found
wrong (empty when all is well), so a test can assert on it and the soak can print it.
"""

from collections.abc import Callable, Sequence

Rows = Callable[[str], Sequence[tuple]]


def history_violations(rows: Rows) -> list[str]:
    """Per (user, segment id) pair the history alternates added/removed, starting with added,
    and ends in `added` exactly when the membership exists now."""
    events: dict[tuple[int, int], list[str]] = {}
    for user_id, segment_id, operation in rows(
        "SELECT user_id, segment_id, operation FROM membership_history ORDER BY at, history_id"
    ):
        events.setdefault((user_id, segment_id), []).append(operation)
    violations = []
    for pair, operations in events.items():
        expected = ["added", "removed"] * len(operations)
        if operations != expected[: len(operations)]:
            violations.append(f"history of (user, segment) {pair} does not alternate: {operations}")
    members = {tuple(row) for row in rows("SELECT user_id, segment_id FROM memberships")}
    ended_added = {pair for pair, operations in events.items() if operations[-1] == "added"}
    violations += [
        f"(user, segment) {pair} is a member but its history does not end in 'added'"
        for pair in sorted(members - ended_added)
    ]
    violations += [
        f"history of (user, segment) {pair} ends in 'added' but it is not a member"
        for pair in sorted(ended_added - members)
    ]
    return violations


def duplicated_history_rows(rows: Rows) -> list[str]:
    """History rows recorded more than once: same user, segment, operation and time."""
    return [
        f"history row {row[:4]} is there {row[4]} times"
        for row in rows(
            "SELECT user_id, segment_id, operation, at, count(*) FROM membership_history"
            " GROUP BY user_id, segment_id, operation, at HAVING count(*) > 1"
            " ORDER BY user_id, segment_id, at"
        )
    ]

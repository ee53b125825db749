"""The history: every join and leave, in order, consistent with the memberships."""

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import assert_history_replays_to_current_state, change_segments, create_segment

USERS = [1000, 1002, 1004]
EXAMPLE_NUMBERS = itertools.count()
SLUGS = ["A", "B", "C"]

patch_operation = st.tuples(
    st.just("patch"),
    st.sampled_from(USERS),
    st.lists(st.sampled_from(SLUGS), unique=True, max_size=3).flatmap(
        lambda chosen: st.tuples(
            st.just(chosen), st.lists(st.booleans(), min_size=len(chosen), max_size=len(chosen))
        )
    ),
)
operations = st.lists(
    st.one_of(
        patch_operation,
        st.tuples(st.just("delete_user"), st.sampled_from(USERS), st.none()),
        st.tuples(st.just("delete_segment"), st.sampled_from(SLUGS), st.none()),
    ),
    max_size=25,
)


def test_every_change_writes_one_row_in_the_same_transaction(client, sql):
    create_segment(client, "A")
    create_segment(client, "B")
    change_segments(client, 1000, add=["A", "B"])
    change_segments(client, 1000, add=["A"], remove=["B"])
    rows = sql.rows(
        "SELECT user_id, s.slug, operation, reason FROM membership_history"
        " JOIN segments s USING (segment_id) ORDER BY at, history_id"
    )
    assert rows == [
        (1000, "A", "added", "manual"),
        (1000, "B", "added", "manual"),
        (1000, "B", "removed", "manual"),
    ]
    times = sql.rows("SELECT DISTINCT at FROM membership_history WHERE operation = 'added'")
    assert len(times) == 1, "rows of one change share its time"


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(operations)
def test_any_sequence_of_changes_replays_to_the_current_state(client, sql, steps):
    """Runs random changes against a model; each example uses its own slugs."""
    prefix = f"X{next(EXAMPLE_NUMBERS)}_"
    model: dict[int, set[str]] = {user: set() for user in USERS}
    active: set[str] = set()
    for slug in SLUGS:
        create_segment(client, prefix + slug)
        active.add(slug)
    for kind, target, argument in steps:
        if kind == "patch":
            chosen, adding = argument
            add = [slug for slug, is_add in zip(chosen, adding, strict=True) if is_add]
            remove = [slug for slug, is_add in zip(chosen, adding, strict=True) if not is_add]
            if not chosen:
                continue
            response = change_segments(
                client, target, add=[prefix + s for s in add], remove=[prefix + s for s in remove]
            )
            if set(chosen) <= active:
                assert response.status_code == 200
                model[target] = (model[target] | set(add)) - set(remove)
            else:
                assert response.status_code == 404
        elif kind == "delete_user":
            response = client.delete(f"/api/v1/users/{target}")
            assert response.status_code in (204, 404)
            model[target] = set()
        else:
            response = client.delete(f"/api/v1/segments/{prefix}{target}")
            assert response.status_code == (204 if target in active else 404)
            active.discard(target)
            for segments in model.values():
                segments.discard(target)
        for user in USERS:
            read = client.get(f"/api/v1/users/{user}/segments").get_json()["segments"]
            assert {s["slug"] for s in read if s["slug"].startswith(prefix)} == {
                prefix + slug for slug in model[user]
            }
    assert_history_replays_to_current_state(sql)

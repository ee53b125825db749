"""Percentage rollouts: deterministic buckets, and the set-based enrolment they drive.

A (slug, user) pair has a bucket 0..9999; a segment at p percent holds the users whose bucket is
below p * 100. The same slug always selects the same users, in every process and database, so a
ramp-up keeps everyone already selected and a ramp-down keeps a subset. Selected users become
real `auto` memberships, so reads never compute anything.
"""

import hashlib
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from psycopg2.extensions import connection as Connection

from . import metrics, queries

BUCKETS = 10000


def bucket(slug: str, user_id: int) -> int:
    """The same function as SQL's `segment_bucket` (migrations/0002): md5, first 32 bits."""
    digest = hashlib.md5(f"{slug}:{user_id}".encode(), usedforsecurity=False).hexdigest()
    return int(digest[:8], 16) % BUCKETS


def bucket_limit(auto_percent: Decimal | float) -> int:
    """Buckets below this are selected; two decimals of a percent make a whole bucket."""
    return int(Decimal(str(auto_percent)) * 100)


def enroll_new_users(connection: Connection, user_ids: Sequence[int], at: Any) -> None:
    """Puts users registered in this transaction into every percentage segment that selects them.

    The caller holds `lock_user_set_shared`, so no percentage changes meanwhile.
    """
    segments = queries.fetch_all(connection, "lock_auto_segments")
    if not segments:
        return
    enrolled = queries.execute(
        connection,
        "enroll_new_users",
        user_ids=list(user_ids),
        segment_ids=[row["segment_id"] for row in segments],
        at=at,
    )
    metrics.AUTO_ENROLLMENTS.labels("registration").inc(enrolled)


def change_percentage(
    connection: Connection,
    segment: dict[str, Any],
    old_percent: Decimal | float,
    new_percent: Decimal | float,
    at: Any,
) -> None:
    """Ramps a locked segment: up adds the users of the new bucket range, down removes the
    automatic members now out of range. Manual memberships are never touched.

    The caller holds `lock_user_set_exclusive` and the segment's row lock (or created it).
    """
    old_limit, new_limit = bucket_limit(old_percent), bucket_limit(new_percent)
    if new_limit > old_limit:
        enrolled = queries.execute(
            connection,
            "enroll_bucket_range",
            segment_id=segment["segment_id"],
            slug=segment["slug"],
            from_bucket=old_limit,
            to_bucket=new_limit,
            at=at,
        )
        metrics.AUTO_ENROLLMENTS.labels("ramp").inc(enrolled)
    elif new_limit < old_limit:
        queries.execute(
            connection,
            "disenroll_from_bucket",
            segment_id=segment["segment_id"],
            slug=segment["slug"],
            from_bucket=new_limit,
            at=at,
        )

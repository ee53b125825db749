-- Who made a change (segsvc/audit.py, migrations/0007): the request's actor and id, for the rows
-- its transaction writes, which take them as column defaults. Local: they end with the
-- transaction, so a pooled connection never carries them into the next one.

-- name: tag_transaction
SELECT set_config('segsvc.actor', coalesce(%(actor)s, ''), true),
       set_config('segsvc.request_id', coalesce(%(request_id)s, ''), true);

-- name: segment_events
-- All segments' events after `after`, in order (GET /api/v1/events); one more than asked tells
-- whether another page follows.
SELECT event_id, segment_id, slug, kind, before, after, actor, request_id, at
  FROM segment_events
 WHERE event_id > %(after)s
 ORDER BY event_id
 LIMIT %(limit)s + 1;

-- name: slug_events
-- The events of every segment that ever had the slug (GET /api/v1/segments/<slug>/events).
SELECT event_id, segment_id, slug, kind, before, after, actor, request_id, at
  FROM segment_events
 WHERE slug = %(slug)s AND event_id > %(after)s
 ORDER BY event_id
 LIMIT %(limit)s + 1;

-- name: slug_ever_used
SELECT EXISTS (SELECT FROM segments WHERE slug = %(slug)s) AS used;

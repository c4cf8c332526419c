-- The large table; the row count is the query parameter so tests can scale it.
INSERT INTO public.events (occurred_at, user_id, kind, payload, score, fingerprint)
SELECT timestamptz '2024-01-01 00:00+00' + i * interval '1 second',
       md5('user' || (1 + i %% 50))::uuid,
       (ARRAY['page_view', 'click', 'signup', 'purchase'])[1 + i %% 4],
       jsonb_build_object('i', i, 'path', '/p/' || i %% 97),
       (i %% 1000) / 7.0,
       md5(i::text)
FROM generate_series(1, %(rows)s) AS i

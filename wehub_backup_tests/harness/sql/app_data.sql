-- Deterministic application rows (every value derives from a counter), inserted as `postgres`.
INSERT INTO public.profiles (user_id, username, display_name, bio, avatar_path, current_mood, tags, lucky_numbers,
                             settings, created_at, updated_at)
SELECT md5('user' || i)::uuid,
       'user_' || i,
       CASE i % 4 WHEN 0 THEN 'Zoë ' || i WHEN 1 THEN '山田 ' || i WHEN 2 THEN 'O''Brien ' || i ELSE NULL END,
       CASE WHEN i % 5 = 0 THEN E'line one\nline two\ttabbed \\ backslash' ELSE 'bio ' || md5(i::text) END,
       md5('user' || i)::uuid::text || '/avatar.png',
       (enum_range(NULL::public.mood))[1 + i % 4],
       ARRAY['tag' || (i % 3), 'with space', 'quote"d', 'comma,here'],
       CASE WHEN i % 7 = 0 THEN NULL ELSE ARRAY[i, i * 2, NULL, -i] END,
       jsonb_build_object('theme', CASE WHEN i % 2 = 0 THEN 'dark' ELSE 'light' END, 'n', i, 'nested',
                          jsonb_build_object('emoji', '🦄', 'nul_escape', E'\\u0000 literal')),
       timestamptz '2024-01-05 00:00+00' + i * interval '1 hour',
       timestamptz '2024-02-05 00:00+00' + i * interval '1 hour'
FROM generate_series(1, 50) AS i;

INSERT INTO public.organizations (id, name, slug, api_key_hash, created_at)
SELECT md5('org' || i)::uuid, 'Organisation ' || i, 'org-' || i, decode(md5('key' || i), 'hex'),
       timestamptz '2024-01-01 00:00+00' + i * interval '1 day'
FROM generate_series(1, 10) AS i;
INSERT INTO public.memberships (org_id, user_id, role, joined_on)
SELECT md5('org' || (1 + i % 10))::uuid, md5('user' || i)::uuid,
       (ARRAY['owner', 'admin', 'member'])[1 + i % 3], date '2024-01-01' + i
FROM generate_series(1, 50) AS i;

SELECT setval('public.ticket_number_seq', 4242);
INSERT INTO public.weird_values (id, label, txt, raw, f8, f4, big, span, day, ts, tstz, words, nums, doc, plain_json,
                                 addr, flags, code)
VALUES
  (1, 'nulls', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
  (2, 'copy escapes', E'tab\there\nnewline\r\ncrlf \\ backslash \\N not-null', '\x00010203ff00'::bytea,
   'NaN', 'NaN', 'NaN', interval '1 year 2 mons 3 days 04:05:06.789', date '2024-02-29',
   timestamp '2024-02-29 23:59:59.999999', timestamptz '2024-02-29 23:59:59.999999+00',
   ARRAY[E'a\tb', E'c\nd', 'NULL', NULL, '', '\N'], ARRAY[1, NULL, 3],
   '{"k": "v\u00e9", "arr": [1, 2.5, null, true], "empty": {}}', '{"dup": 1, "dup": 2}',
   '192.168.0.1/24', B'1010', 'AB '),
  (3, 'infinities', '\N', '\x5c4e'::bytea, 'Infinity', '-Infinity', 123456789012345678901234567890.123456789012345678901234567890,
   interval '-1 day', 'infinity', '-infinity', 'infinity', '{}', '{}', '[]', '[]', '::1', B'', 'x'),
  (4, 'negative zero and tiny', 'quotes '' " and `backticks`', decode(repeat('00', 64), 'hex'),
   '-0', '1.17549435e-38', '-0.000000000000000000000000000001', interval '0', date '0001-01-01',
   timestamp '1999-12-31 23:59:59', timestamptz '1970-01-01 00:00:00+00',
   ARRAY['ünïcødé', '😀🎉', 'Ελληνικά', 'עברית'], ARRAY[2147483647, -2147483648],
   '{"big": 1e308, "small": -1e-308, "unicode": "😀"}', '"just a string"', '10.0.0.0/8', B'1111111111111111', 'Z'),
  (5, E'emoji 😀 and \\ slash', repeat('long text ', 2000), decode(md5('bytes'), 'hex'), 1.7976931348623157e308,
   3.4028235e38, 1e-100, interval '1000000 hours', date '9999-12-31', timestamp '2000-01-01', timestamptz '2038-01-19 03:14:08+00',
   ARRAY['{curly}', 'back\slash', 'comma,'], NULL, 'null', 'null', NULL, NULL, NULL);
INSERT INTO public.weird_values (id, label) VALUES (6, 'sequence default');

INSERT INTO public.audit_log (logged_at, actor, action, details)
SELECT timestamptz '2024-06-01 00:00+00' + (i / 2) * interval '1 minute', md5('user' || (1 + i % 50))::uuid,
       (ARRAY['login', 'logout', 'update'])[1 + i % 3], jsonb_build_object('i', i / 2)
FROM generate_series(1, 400) AS i;

INSERT INTO billing.customers (id, user_id, email, status, tax_rate, created_at)
SELECT md5('customer' || i)::uuid, CASE WHEN i % 10 = 0 THEN NULL ELSE md5('user' || i)::uuid END,
       'customer' || i || '@example.test', (enum_range(NULL::public.subscription_status))[1 + i % 4],
       CASE WHEN i % 3 = 0 THEN NULL ELSE 0.19 END, timestamptz '2024-01-10 00:00+00' + i * interval '1 day'
FROM generate_series(1, 40) AS i;
INSERT INTO billing.invoices (id, customer_id, amount, currency, issued_on, due_in, paid_at, line_items)
SELECT i, md5('customer' || (1 + i % 40))::uuid, round((i * 13.37)::numeric % 9999999999, 2),
       CASE WHEN i % 5 = 0 THEN 'USD' ELSE 'EUR' END, date '2024-01-01' + i % 365, interval '14 days' * (1 + i % 3),
       CASE WHEN i % 4 = 0 THEN NULL ELSE timestamptz '2024-02-01 00:00+00' + i * interval '3 hours' END,
       jsonb_build_array(jsonb_build_object('sku', 'SKU-' || i, 'qty', 1 + i % 4))
FROM generate_series(1, 500) AS i;
SELECT setval(pg_get_serial_sequence('billing.invoices', 'id'), 500);
INSERT INTO public."Order Items" ("invoiceId", "Product Name", "Unit Price", "Quantity")
SELECT 1 + i % 500, 'Product «' || i || '»', round((i * 0.99)::numeric, 2), 1 + i % 9
FROM generate_series(1, 1200) AS i;

INSERT INTO content.posts (author_id, title, body, tags, location, published_at, created_at, updated_at)
SELECT md5('user' || (1 + i % 50))::uuid, 'Post ' || i || ' — ' || md5(i::text),
       repeat(md5('body' || i) || E'\n', 1 + i % 20), ARRAY['t' || i % 5, 't' || i % 7],
       ROW(52.5 + i / 1000.0, 13.4 - i / 1000.0)::content.geo_point,
       CASE WHEN i % 3 = 0 THEN NULL ELSE timestamptz '2024-03-01 00:00+00' + i * interval '1 hour' END,
       timestamptz '2024-02-01 00:00+00' + i * interval '1 hour',
       timestamptz '2024-02-01 00:00+00' + i * interval '1 hour'
FROM generate_series(1, 300) AS i;
INSERT INTO content.comments (post_id, author_id, body, created_at)
SELECT 1 + i % 300, CASE WHEN i % 11 = 0 THEN NULL ELSE md5('user' || (1 + i % 50))::uuid END,
       'Comment ' || i || ': ' || md5('comment' || i), timestamptz '2024-04-01 00:00+00' + i * interval '7 minutes'
FROM generate_series(1, 2000) AS i;
INSERT INTO content.page_views (viewed_at, post_id, visitor, referrer)
SELECT timestamptz '2023-10-01 00:00+00' + i * interval '37 minutes', 1 + i % 300,
       CASE WHEN i % 5 = 0 THEN NULL ELSE md5('visitor' || i % 900)::uuid END,
       CASE WHEN i % 4 = 0 THEN NULL ELSE 'https://example.test/?q=' || i END
FROM generate_series(1, 30000) AS i;

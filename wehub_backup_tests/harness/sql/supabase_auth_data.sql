-- Users, identities, sessions and stored files as Supabase's services would have written them.
INSERT INTO auth.users (instance_id, id, aud, role, email, encrypted_password, email_confirmed_at,
                        raw_app_meta_data, raw_user_meta_data, is_super_admin, created_at, updated_at, phone)
SELECT '00000000-0000-0000-0000-000000000000',
       md5('user' || i)::uuid,
       'authenticated', 'authenticated',
       'user' || i || '@example.test',
       '$2a$10$' || substr(md5('pw' || i), 1, 22) || substr(md5('salt' || i), 1, 31),
       timestamptz '2024-01-01 00:00+00' + i * interval '1 hour',
       jsonb_build_object('provider', 'email', 'providers', jsonb_build_array('email')),
       jsonb_build_object('full_name', 'User Nº' || i || ' — ünïcødé ✓', 'avatar_url', NULL, 'age', 20 + i % 50),
       false,
       timestamptz '2024-01-01 00:00+00' + i * interval '1 hour',
       timestamptz '2024-02-01 00:00+00' + i * interval '1 hour',
       CASE WHEN i % 3 = 0 THEN '+4915' || lpad(i::text, 8, '0') END
FROM generate_series(1, 60) AS i;

INSERT INTO auth.identities (provider_id, user_id, identity_data, provider, last_sign_in_at, created_at, updated_at, id)
SELECT md5('user' || i)::uuid::text, md5('user' || i)::uuid,
       jsonb_build_object('sub', md5('user' || i)::uuid::text, 'email', 'User' || i || '@Example.test'),
       'email',
       timestamptz '2024-03-01 00:00+00' + i * interval '1 minute',
       timestamptz '2024-01-01 00:00+00' + i * interval '1 hour',
       timestamptz '2024-01-01 00:00+00' + i * interval '1 hour',
       md5('identity' || i)::uuid
FROM generate_series(1, 60) AS i;

INSERT INTO auth.refresh_tokens (instance_id, token, user_id, revoked, created_at, updated_at, parent, session_id)
SELECT '00000000-0000-0000-0000-000000000000', substr(md5('token' || i), 1, 12),
       md5('user' || (1 + i % 60))::uuid::text, i % 4 = 0,
       timestamptz '2024-04-01 00:00+00' + i * interval '5 minutes',
       timestamptz '2024-04-01 00:00+00' + i * interval '5 minutes',
       CASE WHEN i > 60 THEN substr(md5('token' || (i - 60)), 1, 12) END,
       md5('session' || (1 + i % 60))::uuid
FROM generate_series(1, 150) AS i;

INSERT INTO storage.buckets (id, name, owner, created_at, updated_at, public, file_size_limit, allowed_mime_types)
VALUES ('avatars', 'avatars', NULL, timestamptz '2024-01-01 00:00+00', timestamptz '2024-01-01 00:00+00', true,
        5242880, ARRAY['image/png', 'image/jpeg']),
       ('documents', 'documents', md5('user1')::uuid, timestamptz '2024-01-02 00:00+00',
        timestamptz '2024-01-02 00:00+00', false, NULL, NULL);

INSERT INTO storage.objects (id, bucket_id, name, owner, created_at, updated_at, last_accessed_at, metadata, version)
SELECT md5('object' || i)::uuid,
       CASE WHEN i % 2 = 0 THEN 'avatars' ELSE 'documents' END,
       md5('user' || (1 + i % 60))::uuid::text || '/' || CASE WHEN i % 2 = 0 THEN 'avatar.png' ELSE 'file ' || i || '.pdf' END,
       md5('user' || (1 + i % 60))::uuid,
       timestamptz '2024-05-01 00:00+00' + i * interval '1 hour',
       timestamptz '2024-05-01 00:00+00' + i * interval '1 hour',
       timestamptz '2024-06-01 00:00+00' + i * interval '1 hour',
       jsonb_build_object('size', 1000 + i, 'mimetype', CASE WHEN i % 2 = 0 THEN 'image/png' ELSE 'application/pdf' END,
                          'eTag', '"' || md5('etag' || i) || '"'),
       md5('version' || i)
FROM generate_series(1, 40) AS i;

INSERT INTO realtime.messages (id, topic, extension, payload, event, private, updated_at, inserted_at)
SELECT md5('message' || i)::uuid, 'room:' || (i % 3), 'broadcast', jsonb_build_object('n', i), 'ping', i % 2 = 0,
       timestamp '2024-07-01 00:00' + i * interval '1 second', timestamp '2024-07-01 00:00' + i * interval '1 second'
FROM generate_series(1, 10) AS i;

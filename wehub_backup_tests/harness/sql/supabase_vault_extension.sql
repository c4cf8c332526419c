-- With an install that offers supabase_vault: the extension and a stored secret whose row pg_dump
-- writes as extension configuration data.
CREATE EXTENSION supabase_vault WITH SCHEMA vault;
GRANT SELECT, INSERT, UPDATE, DELETE ON vault.secrets, vault.decrypted_secrets TO postgres;
GRANT EXECUTE ON FUNCTION vault.create_secret(text, text, text) TO postgres;
INSERT INTO vault.secrets (id, name, description, secret, nonce, created_at, updated_at)
VALUES ('7c2f6c0e-2a36-4d7b-9a51-0d0f3f3e6a11', 'webhook_signing_key', 'HMAC key for outgoing webhooks',
        'c2VjcmV0LXZhbHVlLWZvci10ZXN0cw==', '\x00ff10', timestamptz '2024-02-02 02:02+00', timestamptz '2024-02-02 02:02+00');

-- Stand-in for pg_jsonschema: the same function signatures; every document passes (the tests
-- need the objects and their dependencies, not the validation).
CREATE FUNCTION json_matches_schema(schema json, instance json) RETURNS boolean
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS 'SELECT true';
CREATE FUNCTION jsonb_matches_schema(schema json, instance jsonb) RETURNS boolean
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS 'SELECT true';
CREATE FUNCTION jsonschema_is_valid(schema json) RETURNS boolean
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS 'SELECT true';

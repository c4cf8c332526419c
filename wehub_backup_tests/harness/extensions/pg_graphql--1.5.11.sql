\echo Use "CREATE EXTENSION pg_graphql" to load this file. \quit
CREATE FUNCTION graphql.resolve(query text, variables jsonb DEFAULT '{}', "operationName" text DEFAULT NULL,
                                extensions jsonb DEFAULT NULL)
RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT jsonb_build_object('data', NULL, 'errors', jsonb_build_array(jsonb_build_object('message', 'no schema')))
$$;
CREATE FUNCTION graphql.comment_directive(comment_ text) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
  SELECT NULL::jsonb
$$;

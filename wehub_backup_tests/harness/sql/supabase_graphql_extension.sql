-- With an install that offers pg_graphql: the extension plus the public entry point PostgREST calls.
CREATE EXTENSION pg_graphql WITH SCHEMA graphql;
CREATE FUNCTION graphql_public.graphql("operationName" text DEFAULT NULL, query text DEFAULT NULL,
                                       variables jsonb DEFAULT NULL, extensions jsonb DEFAULT NULL)
RETURNS jsonb LANGUAGE sql AS $$
  SELECT graphql.resolve(query := query, variables := coalesce(variables, '{}'),
                         "operationName" := "operationName", extensions := extensions)
$$;
GRANT EXECUTE ON FUNCTION graphql_public.graphql(text, text, jsonb, jsonb) TO postgres, anon, authenticated, service_role;
CREATE FUNCTION extensions.grant_pg_graphql_access() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_event_trigger_ddl_commands() AS ev
             JOIN pg_extension AS e ON ev.objid = e.oid WHERE e.extname = 'pg_graphql') THEN
    GRANT USAGE ON SCHEMA graphql TO anon, authenticated, service_role;
  END IF;
END $$;
CREATE EVENT TRIGGER issue_pg_graphql_access ON ddl_command_end WHEN TAG IN ('CREATE EXTENSION')
  EXECUTE FUNCTION extensions.grant_pg_graphql_access();

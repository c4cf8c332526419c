"""The migration's script rewrites: privileges Supabase can run, references to relocated extensions (no server)."""

from __future__ import annotations

from wehub_backup.migration.checks import Relocation
from wehub_backup.migration.scripts import filter_privileges, relocation_rewriter


def test_privilege_script_keeps_only_what_supabase_can_run() -> None:
    script = "\n".join([
        "SET statement_timeout = 0;",
        "GRANT SELECT ON TABLE public.customers TO authenticated;",
        'GRANT SELECT ON TABLE public."x TO y" TO "Odd Role" WITH GRANT OPTION;',
        "REVOKE ALL ON FUNCTION public.f() FROM PUBLIC;",
        "SET SESSION AUTHORIZATION wehub_app;",
        "GRANT SELECT ON TABLE public.orders TO vps_only_reader;",
        "RESET SESSION AUTHORIZATION;",
        "ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public GRANT ALL ON TABLES TO anon;",
        "ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT ALL ON TABLES TO anon;",
    ]) + "\n"

    kept, left_out = filter_privileges(script, frozenset({"authenticated", "anon", "postgres", "Odd Role",
                                                                     "supabase_admin"}), frozenset({"postgres"}))

    assert kept.splitlines() == [
        "SET statement_timeout = 0;",
        "GRANT SELECT ON TABLE public.customers TO authenticated;",
        'GRANT SELECT ON TABLE public."x TO y" TO "Odd Role" WITH GRANT OPTION;',
        "REVOKE ALL ON FUNCTION public.f() FROM PUBLIC;",
        "ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT ALL ON TABLES TO anon;",
    ]
    assert left_out == ["GRANT SELECT ON TABLE public.orders TO vps_only_reader;",
                        "ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public GRANT ALL ON TABLES TO anon;"]


def test_extension_references_are_rewritten_only_where_qualified_by_the_old_schema() -> None:
    rewrite = relocation_rewriter([
        Relocation("uuid-ossp", "public", "extensions", ("uuid_generate_v4",))])

    text, count = rewrite("id uuid DEFAULT public.uuid_generate_v4() NOT NULL,\n"
                          'x uuid DEFAULT "public"."uuid_generate_v4"(),\n'
                          "y text DEFAULT public.uuid_generate_v4x(),\n"
                          "z uuid DEFAULT extensions.uuid_generate_v4(),\n"
                          "CREATE TABLE mypublic.uuid_generate_v4 (id int);\n")

    assert count == 2
    assert text.splitlines() == [
        'id uuid DEFAULT "extensions".uuid_generate_v4() NOT NULL,',
        'x uuid DEFAULT "extensions"."uuid_generate_v4"(),',
        "y text DEFAULT public.uuid_generate_v4x(),",
        "z uuid DEFAULT extensions.uuid_generate_v4(),",
        "CREATE TABLE mypublic.uuid_generate_v4 (id int);",
    ]


def test_references_to_operators_and_operator_classes_of_a_moved_extension_are_rewritten() -> None:
    rewrite = relocation_rewriter([
        Relocation("pg_trgm", "public", "extensions", ("%", "<->", "gin_trgm_ops", "similarity"))])

    text, count = rewrite("WHERE (name OPERATOR(public.%) 'x'::text) AND a OPERATOR(public.<->) b\n"
                          "USING gin (name public.gin_trgm_ops);\n"
                          "x OPERATOR(public.%>) y, public.similarity(a, b), public.similarity_x(a)\n")

    assert count == 4
    assert text.splitlines() == [
        """WHERE (name OPERATOR("extensions".%) 'x'::text) AND a OPERATOR("extensions".<->) b""",
        'USING gin (name "extensions".gin_trgm_ops);',
        'x OPERATOR(public.%>) y, "extensions".similarity(a, b), public.similarity_x(a)',
    ]

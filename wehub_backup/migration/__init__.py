"""The migration, VPS -> Supabase, as plain functions: plan (with its checks), restore in one
transaction from scripts, verify.

On Supabase the login role ``postgres`` is not a superuser, and the project's managed schemas
(auth, storage, ...), roles, grants and extensions must come out untouched. So only the app's
schemas are copied, without owners; extensions are never created or dropped (references to
functions of extensions that live in another schema on Supabase are rewritten); privileges are
kept for roles Supabase has; and everything a non-superuser cannot do is found before anything
changes. Emptying the app schemas and restoring them run in one transaction: any error leaves
Supabase exactly as it was.
"""

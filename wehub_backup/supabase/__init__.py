"""What Supabase is, as far as a copy is concerned: its managed schemas and roles, and what a
vanilla PostgreSQL server can hold of a Supabase database.
"""

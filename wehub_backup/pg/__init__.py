"""PostgreSQL plumbing with no Supabase knowledge: connections, the password file, client
programs and their processes, the catalog, fingerprints, the held snapshot, the archive listing.
"""

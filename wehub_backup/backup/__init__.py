"""The backup, Supabase -> VPS, as plain functions, one module per step:
plan, extract, stage, load, verify, promote. Each is callable without Dagster, and each raises
an exception whose message is one line an operator can act on.
"""

"""Fault injection for the reliability suite: relays that slow or cut a connection, runs in a
process of their own that can be killed, and the evidence a fault left nothing behind."""

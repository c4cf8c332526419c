"""Helpers the tests share: the session's environment, backup runs, polling, loopback servers."""

"""How a failed client program is explained in one line (the run's cause and the alert's)."""

from __future__ import annotations

SERVER_ERROR = 'pg_restore: error: could not execute query: ERROR:  relation "vault.decrypted_secrets" does not exist'
LEADER_ERROR = "pg_restore: error: a worker process died unexpectedly"



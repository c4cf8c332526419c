"""The history of verified copies: archives of the VPS copy made after each successful backup,
kept by a retention policy, restorable into a new VPS database, optionally copied off the VPS."""

"""The benchmark: the backup job against the tools an operator would otherwise pick (``make bench``)."""

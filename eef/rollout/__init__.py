"""Rollouts: sequential episodes (``episode``), the batched engine and one policy played over
an env's tasks (``run``: what ``eef eval`` and ``eef expert collect`` do)."""

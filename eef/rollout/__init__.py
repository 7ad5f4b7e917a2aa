"""Rollouts: sequential episodes (``episode``) and the batched engine."""

"""eef: agent tuning with EEF (Exploring Expert Failures, Lan et al., arXiv 2504.13145).

Layers, lowest first (a module imports only its own layer and those below; README, "Layers"):
errors/config/progress -> envs -> trajectory/react/policy -> experts -> models -> rollout ->
presets -> algorithms -> report -> cli.
"""

__version__ = "0.1.0"

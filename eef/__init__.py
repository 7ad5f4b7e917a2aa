"""eef: agent tuning with EEF (Exploring Expert Failures, Lan et al., arXiv 2504.13145).

Layers, data flowing one way: envs -> trajectories -> datasets -> models -> rollouts -> algorithms.
"""

__version__ = "0.1.0"

"""Training on labels: reward models, policies through TRL, reward callables, the RL monitor, the probe.

Needs torch (and TRL for policies); nothing in the labeling core imports this package.
"""

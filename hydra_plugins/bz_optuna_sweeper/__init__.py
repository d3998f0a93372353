"""bz's Optuna sweeper for Hydra: ``hydra/sweeper=bz_optuna`` (see ``config.py``).

Hydra imports every module of the ``hydra_plugins`` namespace package at start-up, so
nothing here imports optuna or torch; the sweeper does when a sweep starts.
"""

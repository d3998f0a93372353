"""Adds a bz-train project's ``./conf`` to bz-train's config search path (``searchpath.py``).

Hydra imports every module of the ``hydra_plugins`` namespace package at start-up, so
nothing here imports more than Hydra's plugin base.
"""

"""Thin Hydra entry points: ``python -m experiments.<name>``."""

"""Thin Hydra entry points (``python -m experiments.<name>``) and the workflows behind them."""

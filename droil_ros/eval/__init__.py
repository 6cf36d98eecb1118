"""Robustness evaluation: policies swept over perturbation grids (``config/grids/``)."""

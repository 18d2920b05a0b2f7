"""Simulation kernels: sky models, predicted visibilities, instrumental corruptions and thermal noise."""

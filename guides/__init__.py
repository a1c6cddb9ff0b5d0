"""Guides (encoders, forward processes, enumeration) matching :mod:`probdiff.models`."""

"""Data: random-access audio sources, augmentations and the Grain two-view pipeline.

Nothing in this package imports model or training code.
"""

"""Evaluation: string metrics, edit-distance retrieval, the sweep probe, baselines and reports."""

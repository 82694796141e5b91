"""Evaluation: per-video scores under an eval protocol, their metrics and the written reports."""

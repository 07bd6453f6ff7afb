"""Evaluation: metrics with intervals, cross-validation with resume, the HTML report."""

"""Evaluation, above the methods: metrics with intervals, cross-validation with resume, decision rules fitted on
inner folds (`operating_point`), the printed tables."""

"""The methods as scikit-learn estimators, above training: the LBP and clinical baselines (`baselines`) and
`HeadClassifier`, `Baseline`, `make_estimator` (`estimators`)."""

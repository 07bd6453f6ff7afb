"""Features computed once per cohort, above data and models: frozen CNN features of every patch (`frozen`, cached
on disk) and LBP texture histograms for the baselines (`lbp`)."""

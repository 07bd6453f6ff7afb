"""Training the CNN methods.

- `config`: TrainConfig, everything that defines a fit;
- `fitted`: the fitted-model record and the steps both modes share;
- `head_loop`: frozen mode, one fold, a plain loop (the reference);
- `stacked`: frozen mode, many folds as one vmapped computation (the fast path, tested against the loop);
- `finetune`: the paper's protocol, the whole network trained;
- `fit`: `fit` and `predict_proba`, one surface over both modes.
"""

"""A trained model in use, above every method and evaluation layer: `model` (Model: fit, save, load, predict,
screen), `model_info` (model.json checked field by field), `model_card`, `novelty` (the "unlike the training
data" check), `screening` (`osteoscreen predict`) and its outputs (`prediction_writers`)."""

"""`osteoscreen serve`: a local web page to place the 8 landmarks on a radiograph and screen it (with a model),
or to annotate a dataset's radiographs (with a dataset directory). app.py builds the FastAPI application,
uploads.py checks and decodes uploaded images, annotations.py keeps a dataset's landmarks.csv."""

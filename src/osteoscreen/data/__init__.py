"""Data: reading radiographs, datasets, landmark patches and the synthetic phantom cohort."""

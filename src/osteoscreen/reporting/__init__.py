"""What people read, above evaluation: a cv run's folder (`runs`: config.json, metrics.json, predictions.csv and
the HTML report of `report`), screening figures (`visualise`) and `osteoscreen patches` (`patch_export`)."""

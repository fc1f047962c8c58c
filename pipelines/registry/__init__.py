"""registry stage of the pipeline."""

"""The chat store: what the regulation service writes and the pipeline reads."""

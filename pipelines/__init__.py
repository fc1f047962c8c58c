"""Typed step functions of the retraining pipeline.

Each step (ingest, validate, prepare, ...) is a plain function importable without Airflow and
runnable as ``python -m pipelines STEP``. Importing this package has no side effects.
"""

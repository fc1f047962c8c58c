-- The chat store uses the default database; MLflow's tracking store gets its own.
CREATE DATABASE mlflow;

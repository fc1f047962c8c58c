-- Runs once, when the postgres service starts on an empty volume (docker-entrypoint-initdb.d).
-- The chat store uses the default database (POSTGRES_DB=emoreg); MLflow's tracking store and
-- Airflow's metadata get a database each, owned by the same role.
CREATE DATABASE mlflow;
CREATE DATABASE airflow;

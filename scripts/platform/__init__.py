"""The local platform: Airflow (api-server, scheduler, dag-processor, triggerer) and the MLflow UI.

Run it as ``.venv/bin/python -m scripts.platform COMMAND`` from the repository root (``make run``,
``make quick``, ``make status``, ``make stop``). Never as ``python scripts/platform/...``: a
module named ``platform`` on ``sys.path`` would shadow the standard library's.

Every process is started in its own session, bound to 127.0.0.1, with a PID file under
``var/platform/pids/`` and a log under ``var/platform/logs/``; a second start reuses what runs.
"""

"""Airflow for the DAG tests: a throw-away AIRFLOW_HOME with its own metadata database.

Airflow reads its configuration once, at its first import, so the environment is set here, when
pytest collects this folder (nothing imported Airflow before: ``pipelines`` never does). The
dags folder is the repository's ``dags/`` (``dag.test()`` needs the DAG inside the configured
folder); examples are off. The metadata database is created once per session (``airflow db
migrate`` creates the same tables; initdb from the models is faster), with the one-slot
``model_promotion`` pool that the platform's start script creates.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from tests.dags.dagrun import DAGS_FOLDER

PROMOTION_POOL = "model_promotion"

# Airflow's dag-processor and task runner put the DAG bundle's folder on sys.path (BundleDagBag),
# so the DAG files import their shared module `emoreg_dag_support` by name; a plain DagBag does
# not, so the tests do it, for subprocesses too.
sys.path.insert(0, str(DAGS_FOLDER))
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(DAGS_FOLDER), os.environ.get("PYTHONPATH", "")) if p
)

_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="emoreg-airflow-home-"))
atexit.register(shutil.rmtree, _AIRFLOW_HOME, ignore_errors=True)
os.environ.update(
    {
        "AIRFLOW_HOME": str(_AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(_AIRFLOW_HOME / "logs"),
    }
)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """An initialised metadata database with the promotion pool."""
    from airflow.models.pool import Pool
    from airflow.utils import db

    db.initdb()
    Pool.create_or_update_pool(
        PROMOTION_POOL, slots=1, description="one promotion at a time", include_deferred=False
    )
    return _AIRFLOW_HOME / "airflow.db"

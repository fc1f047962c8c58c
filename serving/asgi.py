"""The ASGI app for uvicorn (``serving.asgi:app``): settings from the environment."""

from serving.app import create_app
from serving.logs import configure_logging

configure_logging()
app = create_app()

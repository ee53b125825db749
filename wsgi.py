"""Gunicorn's entry point: `gunicorn wsgi:app`."""

from segsvc import create_app

app = create_app()

"""The Celery worker: thin tasks over :mod:`core.services` and :mod:`clr`.

``celery -A worker.celery_app worker --pool=solo --concurrency=1 -Q jobs`` runs
one job at a time per GPU; see :mod:`worker.celery_app` for the configuration.
"""

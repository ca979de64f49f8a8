"""Celery tasks of the profiles app: thin callers of services, taking ids."""

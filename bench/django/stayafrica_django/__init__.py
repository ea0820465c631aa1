# Celery is loaded with Django, as its documentation advises, so that
# `shared_task` uses this app (and its Redis broker).
from .celery import app as celery_app

__all__ = ("celery_app",)

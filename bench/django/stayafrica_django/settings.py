"""Settings of the Django version of the guide (seed/redis-usage-guide.md).

Only what the measured endpoints need. The environment gives the places
(REDIS_URL without a DB number, DATABASE_URL of PostgreSQL) and the rates,
under the same names and with the same format as the Rust service
(`STAYAFRICA_THROTTLE_ANON` / `_USER` / `_BOOKING`, e.g. `100/hour`).
"""

import os
from urllib.parse import urlparse

DEBUG = False
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "bench-only-not-a-secret")
ALLOWED_HOSTS = ["*"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "stayafrica_django.urls"
WSGI_APPLICATION = "stayafrica_django.wsgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "rest_framework",
    "bookings",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
# Our users table (bookings.models.User, managed = False).
AUTH_USER_MODEL = "bookings.User"

_db = urlparse(os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/stayafrica"))
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _db.path.lstrip("/"),
        "USER": _db.username or "postgres",
        "PASSWORD": _db.password or "",
        "HOST": _db.hostname or "127.0.0.1",
        "PORT": str(_db.port or 5432),
        # Persistent connections, as in any production setup (the default 0
        # would open a PostgreSQL connection per request).
        "CONN_MAX_AGE": 600,
    }
}

# Three Redis databases for different purposes (the guide), django-redis.
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")


def _redis_cache(db):
    return {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": f"{REDIS_URL}/{db}",
        "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"},
        "KEY_PREFIX": "stayafrica",
    }


CACHES = {
    "default": _redis_cache(1),  # DB 1: general caching
    "session": _redis_cache(2),  # DB 2: session storage
    "ratelimit": _redis_cache(3),  # DB 3: rate limiting
}

# Sessions now stored in Redis.
SESSION_ENGINE = "django.contrib.sessions.backends.cache"
SESSION_CACHE_ALIAS = "session"

THROTTLE_ANON = os.environ.get("STAYAFRICA_THROTTLE_ANON", "100/hour")
THROTTLE_USER = os.environ.get("STAYAFRICA_THROTTLE_USER", "1000/hour")
# The booking limit of the guide's `is_rate_limited('booking:{user}', limit=5,
# period=3600)`, raised by the benchmark like the Rust service's.
THROTTLE_BOOKING = os.environ.get("STAYAFRICA_THROTTLE_BOOKING", "5/hour")

# API rate limiting enabled (DRF's throttles, their state in the ratelimit
# cache: bookings/throttles.py).
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_THROTTLE_CLASSES": [
        "bookings.throttles.AnonRateThrottle",
        "bookings.throttles.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {"anon": THROTTLE_ANON, "user": THROTTLE_USER},
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "bookings.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

# Celery: the broker (and result storage) on Redis DB 0.
CELERY_BROKER_URL = f"{REDIS_URL}/0"
CELERY_RESULT_BACKEND = f"{REDIS_URL}/0"
CELERY_TASK_SERIALIZER = "json"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}

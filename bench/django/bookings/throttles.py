"""DRF's anon/user throttles with their state in the ratelimit cache (DB 3)
instead of the default cache."""

from django.core.cache import caches
from rest_framework import throttling


class AnonRateThrottle(throttling.AnonRateThrottle):
    cache = caches["ratelimit"]


class UserRateThrottle(throttling.UserRateThrottle):
    cache = caches["ratelimit"]

"""The guide's `utils.cache_helpers` (seed/redis-usage-guide.md): the
helpers its examples import, written the plain way with Django's cache API
(django-redis underneath). The guide shows how they are called, not their
bodies; these are the usual ones."""

import hashlib
from functools import wraps

from django.core.cache import cache, caches
from rest_framework.response import Response


def cache_query_result(key, fn, timeout=300):
    """Cache-aside: the cached value, or `fn()` stored for `timeout` s."""
    value = cache.get(key)
    if value is None:
        value = fn()
        cache.set(key, value, timeout=timeout)
    return value


def cache_view_result(timeout=300, key_prefix="view"):
    """Caches a DRF view's 200 response data per path and query (not per
    user: for public views only)."""

    def decorator(view_func):
        @wraps(view_func)
        def wrapper(request, *args, **kwargs):
            digest = hashlib.md5(request.get_full_path().encode()).hexdigest()
            key = f"{key_prefix}:{digest}"
            data = cache.get(key)
            if data is not None:
                return Response(data)
            response = view_func(request, *args, **kwargs)
            if response.status_code == 200:
                cache.set(key, response.data, timeout=timeout)
            return response

        return wrapper

    return decorator


def is_rate_limited(key, limit=10, period=60):
    """Fixed window of `period` s: True once `limit` attempts were made."""
    rl = caches["ratelimit"]
    current = rl.get(key)
    if current is None:
        rl.set(key, 1, timeout=period)
        return False
    if current >= limit:
        return True
    rl.incr(key)
    return False


def _user_key(user_id):
    return f"user:dashboard:{user_id}"


def cache_user_data(user_id, data, timeout=3600):
    cache.set(_user_key(user_id), data, timeout=timeout)


def get_user_data(user_id):
    return cache.get(_user_key(user_id))


def invalidate_user_cache(user_id):
    cache.delete(_user_key(user_id))


def cache_temporary_data(key, value, timeout=300):
    cache.set(key, value, timeout=timeout)


def increment_counter(key, timeout=None):
    try:
        return cache.incr(key)
    except ValueError:  # no such key yet
        cache.set(key, 1, timeout=timeout)
        return 1


def invalidate_cache_pattern(pattern):
    """django-redis's delete_pattern (SCAN over the whole keyspace)."""
    cache.delete_pattern(pattern)

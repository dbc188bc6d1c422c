"""The shared Redis cache stores JSON, never pickle: a value planted in Redis cannot run code when it is read."""

import pickle
import uuid
from typing import Any

import pytest
import redis
from django.core.cache import caches

REDIS = "redis://127.0.0.1:6379/14"


class Boom:
    def __reduce__(self) -> Any:
        return (exec, ("raise SystemExit('unpickled')",))


@pytest.fixture
def redis_cache(settings: Any) -> Any:
    prefix = f"serializer-{uuid.uuid4().hex}"
    settings.CACHES = {**settings.CACHES, "shared": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS, "KEY_PREFIX": prefix,
        "OPTIONS": {"serializer": "apps.core.cache.JSONSerializer"}}}
    cache = caches["shared"]
    yield cache
    cache.clear()


def test_counters_stay_atomic_integers_and_markers_round_trip(redis_cache: Any) -> None:
    assert redis_cache.add("count", 1) and redis_cache.incr("count") == 2
    redis_cache.set("marker", {"jti": "abc", "seen": True})

    assert redis_cache.get("count") == 2 and redis_cache.get("marker") == {"jti": "abc", "seen": True}


def test_a_pickle_planted_in_redis_is_not_unpickled(redis_cache: Any) -> None:
    redis.Redis.from_url(REDIS).set(redis_cache.make_key("planted"), pickle.dumps(Boom()))

    with pytest.raises(ValueError):  # not JSON: refused, never executed
        redis_cache.get("planted")


def test_a_cache_url_gives_redis_with_the_json_serializer() -> None:
    import os
    import subprocess
    import sys

    code = ("from django.conf import settings; c = settings.CACHES['default']; "
            "print(c['BACKEND'], c['OPTIONS']['serializer'])")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "clinpredict.settings.test", "CACHE_URL": REDIS}
    result = subprocess.run([sys.executable, "-c", f"import django; django.setup(); {code}"], env=env,
                            capture_output=True, text=True, timeout=60, check=True)

    assert result.stdout.split() == ["django.core.cache.backends.redis.RedisCache", "apps.core.cache.JSONSerializer"]

"""One Celery beat per deployment, enforced: beat takes a lock in the broker's Redis when it starts and keeps it while
it runs, so a second beat (a scaled-up compose service, two pods during a botched rollout) cannot send every
scheduled task a second time. A second beat waits up to CLINPREDICT_BEAT_LOCK_WAIT_SECONDS for the lock (long enough
for a crashed beat's lock to expire), then exits with one message.

redis-py's own Lock does the locking (a token under SET NX with a time-out, released only by its holder); a daemon
thread extends it while beat lives, and it is released when beat exits.
"""

import atexit
import threading

import redis

LOCK_SECONDS = 30  # how long the lock outlives a beat that died without releasing it
REFRESH_SECONDS = 10


class BeatLockHeld(Exception):
    pass


def beat_lock_acquire(*, broker_url: str, key: str, wait_seconds: float) -> redis.lock.Lock:
    client = redis.Redis.from_url(broker_url, socket_connect_timeout=5, socket_timeout=5)
    lock = client.lock(key, timeout=LOCK_SECONDS, thread_local=False)
    if not lock.acquire(blocking=wait_seconds > 0, blocking_timeout=wait_seconds or None):
        raise BeatLockHeld(
            f"Another Celery beat holds the schedule lock '{key}' in the broker's Redis: exactly one beat may run per "
            f"deployment, so this one exits (waited {wait_seconds:g} s; a crashed beat's lock expires within "
            f"{LOCK_SECONDS} s)."
        )
    stop = threading.Event()

    def keep() -> None:
        while not stop.wait(REFRESH_SECONDS):
            lock.extend(LOCK_SECONDS, replace_ttl=True)

    threading.Thread(target=keep, name="beat-lock", daemon=True).start()

    def release() -> None:
        stop.set()
        try:
            lock.release()
        except redis.exceptions.LockError:
            pass  # expired meanwhile: nothing of ours to release

    atexit.register(release)
    return lock

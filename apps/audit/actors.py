"""Who asked: a person (session), an OAuth2 client (token), or the system itself (tasks, commands)."""

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Actor:
    type: str  # one of AuditEvent.ActorType
    id: str
    user_id: int | None = None

    @property
    def label(self) -> str:
        return f"{self.type}:{self.id}"


SYSTEM = Actor(type="system", id="clinpredict")


def actor_from_request(request: Any) -> Actor:
    """The actor behind a Django or DRF request. An OAuth2 token names its application (and user, if any)."""
    auth = getattr(request, "auth", None)
    application = getattr(auth, "application", None)
    user = getattr(request, "user", None)
    if application is not None:
        if user is not None and user.is_authenticated:
            return Actor(type="client", id=f"{application.client_id}/{user.get_username()}", user_id=user.pk)
        return Actor(type="client", id=application.client_id)
    if user is not None and user.is_authenticated:
        return Actor(type="user", id=user.get_username(), user_id=user.pk)
    return Actor(type="anonymous", id="")


def source_ip_from_request(request: Any) -> str | None:
    from apps.core.net import client_ip

    return client_ip(request)

"""Demo bootstrap writes: the three demo users and the demo OAuth2 client. Safe to rerun; every change audited."""

import secrets
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from oauth2_provider.models import get_application_model

from apps.audit.actors import SYSTEM
from apps.audit.services import audit_event_record

DEMO_USERS = (
    # username, group, is_staff
    ("clinician", "Clinicians", False),
    ("modeladmin", "Model admins", True),
    ("auditor", "Auditors", False),
)
DEMO_CLIENT_NAME = "ClinPredict demo client"


@dataclass(frozen=True)
class DemoUsers:
    created: list[str]
    password: str | None  # set only when this call chose or applied a password


@dataclass(frozen=True)
class DemoClient:
    client_id: str
    client_secret: str | None  # shown once: the database keeps only its hash
    created: bool


@transaction.atomic
def demo_users_ensure(*, password: str | None) -> DemoUsers:
    """Create the demo users in their groups. An explicit password is (re)applied; otherwise new users get a
    generated one and existing users keep theirs."""
    User = get_user_model()
    chosen = password or secrets.token_urlsafe(12)
    created: list[str] = []
    applied = False
    for username, group_name, is_staff in DEMO_USERS:
        user = User.objects.filter(username=username).first()
        if user is None:
            user = User.objects.create_user(username=username, password=chosen, is_staff=is_staff)
            created.append(username)
            applied = True
            audit_event_record(actor=SYSTEM, action="user.create", object_type="user", object_id=str(user.pk),
                               output={"username": username, "groups": [group_name], "is_staff": is_staff})
        elif password:
            user.set_password(password)
            user.save(update_fields=["password"])
            applied = True
        user.groups.add(Group.objects.get(name=group_name))
    return DemoUsers(created=created, password=chosen if applied else None)


@transaction.atomic
def demo_oauth_client_ensure(*, client_id: str | None, client_secret: str | None) -> DemoClient:
    """The demo client-credentials application. A given secret is (re)applied; a new app without one gets a
    generated secret, returned once."""
    Application = get_application_model()
    app = Application.objects.filter(name=DEMO_CLIENT_NAME).first()
    if app is not None:
        if client_secret:
            app.client_secret = client_secret  # hashed on save
            app.save()
        return DemoClient(app.client_id, client_secret, created=False)
    secret = client_secret or secrets.token_urlsafe(32)
    app = Application(
        name=DEMO_CLIENT_NAME,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
        client_secret=secret,
        hash_client_secret=True,
    )
    if client_id:
        app.client_id = client_id
    app.save()
    audit_event_record(actor=SYSTEM, action="oauth2_application.create", object_type="oauth2_application",
                       object_id=str(app.pk), output={"client_id": app.client_id, "name": app.name,
                                                      "grant_type": app.authorization_grant_type})
    return DemoClient(app.client_id, secret, created=True)

"""Audit adapters for authentication and account administration. Each only translates an event into one
`audit_event_record` call; none holds business logic.

Why signals here, against the house rule: Django's `user_logged_in`, `user_logged_out` and `user_login_failed`
are fired by `django.contrib.auth` itself on every login path (the sign-in page, the admin login, any future
backend, django-oauth-toolkit's password grant), and django-oauth-toolkit's `app_authorized` on every token the
token endpoint issues. Subclassing each view would miss paths and take ownership of views other issues harden.

Why wrap the registered admin classes at start-up rather than register our own: other apps may customise the User,
Group or Application admin; wrapping whatever is registered once every admin module has loaded keeps their
customisation and adds auditing to it. Admin writes its change, our event and its own LogEntry in one transaction.
"""

from typing import Any

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db import models, transaction
from django.http import HttpRequest, HttpResponse
from oauth2_provider.models import get_application_model
from oauth2_provider.signals import app_authorized

from .actors import Actor, actor_from_request, source_ip_from_request
from .services import audit_event_record

ANONYMOUS = Actor(type="anonymous", id="")


def _source_ip(request: HttpRequest | None) -> str | None:
    return source_ip_from_request(request) if request is not None else None


def _user_actor(user: Any) -> Actor:
    if user is None or not getattr(user, "is_authenticated", False):
        return ANONYMOUS
    return Actor(type="user", id=user.get_username(), user_id=user.pk)


def _record(**kwargs: Any) -> None:
    # Joins the caller's transaction when there is one (admin views), else commits on its own (a login).
    with transaction.atomic():
        audit_event_record(**kwargs)


def on_user_logged_in(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    _record(actor=_user_actor(user), action="auth.login", object_type="user", object_id=str(user.pk),
            output={"backend": getattr(user, "backend", "")}, source_ip=_source_ip(request))


def on_user_logged_out(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    _record(actor=_user_actor(user), action="auth.logout", object_type="user",
            object_id=str(user.pk) if user is not None else "", source_ip=_source_ip(request))


def on_user_login_failed(sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None,
                         **kwargs: Any) -> None:
    # `credentials` has the password already masked by Django; keep only the username that was tried.
    username = str(credentials.get(get_user_model().USERNAME_FIELD) or credentials.get("username") or "")[:150]
    _record(actor=ANONYMOUS, action="auth.login_failed", object_type="user",
            inputs={"username": username}, source_ip=_source_ip(request))


def on_token_issued(sender: Any, request: HttpRequest, token: Any, **kwargs: Any) -> None:
    """An access token left the token endpoint. The token value itself is never recorded."""
    application = token.application
    user = token.user
    actor_id = application.client_id if user is None else f"{application.client_id}/{user.get_username()}"
    _record(
        actor=Actor(type="client", id=actor_id[:150], user_id=getattr(user, "pk", None)),
        action="oauth2.token.issue",
        object_type="oauth2_access_token",
        object_id=str(token.pk),
        output={"client_id": application.client_id, "scope": token.scope, "expires": token.expires,
                "grant_type": request.POST.get("grant_type", ""), "user": user.get_username() if user else None},
        source_ip=_source_ip(request),
    )


def on_user_locked_out(sender: Any, request: HttpRequest | None = None, username: str | None = None,
                       ip_address: str | None = None, **kwargs: Any) -> None:
    _record(actor=ANONYMOUS, action="auth.lockout", object_type="user", object_id="",
            inputs={"username": str(username or "")[:150]}, output={"locked_out": True}, source_ip=ip_address)


def connect_signals() -> None:
    from axes.signals import user_locked_out

    user_locked_out.connect(on_user_locked_out, dispatch_uid="audit.auth.lockout")
    user_logged_in.connect(on_user_logged_in, dispatch_uid="audit.auth.login")
    user_logged_out.connect(on_user_logged_out, dispatch_uid="audit.auth.logout")
    user_login_failed.connect(on_user_login_failed, dispatch_uid="audit.auth.login_failed")
    app_authorized.connect(on_token_issued, dispatch_uid="audit.oauth2.token_issued")


# --- Admin changes to users, groups and OAuth2 applications -----------------------------------------------------


def _names(related: Any, attribute: str = "name") -> list[str]:
    return sorted(getattr(item, attribute) for item in related.all())


def _permission_names(related: Any) -> list[str]:
    return sorted(f"{p.content_type.app_label}.{p.codename}" for p in related.select_related("content_type"))


def _user_snapshot(user: Any) -> dict[str, Any]:
    # Never the password hash: only whether the account can use a password at all.
    return {"username": user.get_username(), "is_active": user.is_active, "is_staff": user.is_staff,
            "is_superuser": user.is_superuser, "has_usable_password": user.has_usable_password(),
            "groups": _names(user.groups), "user_permissions": _permission_names(user.user_permissions)}


def _group_snapshot(group: Any) -> dict[str, Any]:
    return {"name": group.name, "permissions": _permission_names(group.permissions)}


def _application_snapshot(app: Any) -> dict[str, Any]:
    # Never the client secret.
    return {"name": app.name, "client_id": app.client_id, "client_type": app.client_type,
            "authorization_grant_type": app.authorization_grant_type, "redirect_uris": app.redirect_uris,
            "post_logout_redirect_uris": getattr(app, "post_logout_redirect_uris", ""),
            "allowed_origins": getattr(app, "allowed_origins", ""), "skip_authorization": app.skip_authorization,
            "algorithm": getattr(app, "algorithm", ""), "hash_client_secret": getattr(app, "hash_client_secret", None),
            "user": app.user.get_username() if app.user_id else None}


def _audited_models() -> dict[type[models.Model], tuple[str, Any]]:
    return {
        get_user_model(): ("user", _user_snapshot),
        Group: ("group", _group_snapshot),
        get_application_model(): ("oauth2_application", _application_snapshot),
    }


class AuditedAdminMixin:
    """Adds one audit event to every add, change (including a password change) and deletion made in admin."""

    audit_object_type: str = ""

    def _audit_snapshot(self, obj: Any) -> dict[str, Any]:
        return _audited_models()[self.model][1](obj)  # type: ignore[attr-defined]

    def _audit(self, request: HttpRequest, verb: str, obj: Any, message: Any = None) -> None:
        _record(actor=actor_from_request(request), action=f"{self.audit_object_type}.{verb}",
                object_type=self.audit_object_type, object_id=str(obj.pk),
                inputs={"change_message": message} if message else None,
                output=self._audit_snapshot(obj), source_ip=_source_ip(request))

    def log_addition(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        entry = super().log_addition(request, obj, message)  # type: ignore[misc]
        self._audit(request, "create", obj, message)
        return entry

    def log_change(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        entry = super().log_change(request, obj, message)  # type: ignore[misc]
        self._audit(request, "change", obj, message)
        return entry

    def log_deletions(self, request: HttpRequest, queryset: Any) -> Any:
        # Called before the rows go: the snapshot records what was deleted.
        entries = super().log_deletions(request, queryset)  # type: ignore[misc]
        for obj in queryset:
            self._audit(request, "delete", obj)
        return entries

    def response_action(self, request: HttpRequest, queryset: Any) -> HttpResponse | None:
        # Bulk actions (delete selected) are not atomic in Django admin; make the change and its events one unit.
        with transaction.atomic():
            return super().response_action(request, queryset)  # type: ignore[misc]

    def user_change_password(self, request: HttpRequest, id: str, form_url: str = "") -> HttpResponse:
        with transaction.atomic():
            return super().user_change_password(request, id, form_url)  # type: ignore[misc]


def audit_admin_changes(site: admin.AdminSite = admin.site) -> None:
    """Re-register the User, Group and OAuth2 Application admins as audited subclasses of what is registered."""
    for model, (object_type, _snapshot) in _audited_models().items():
        current = site._registry.get(model)
        if current is None or isinstance(current, AuditedAdminMixin):
            continue
        base = type(current)
        audited = type(f"Audited{base.__name__}", (AuditedAdminMixin, base), {
            "audit_object_type": object_type, "__module__": __name__,
        })
        site.unregister(model)
        site.register(model, audited)

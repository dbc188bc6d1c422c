"""Which OAuth2 scopes an application may be granted. django-oauth-toolkit grants any scope in `SCOPES` to any
application that asks; a scope listed in `CLINPREDICT_RESTRICTED_SCOPES` is granted only to an application whose
owner (admin: Applications -> User) is an active account holding the permission named there, so a client cannot
widen its own reach by asking. Restricted today: `predictions:read:all` (every application's predictions), which
needs an owner with `patients.view_all_predictions` (auditors, model admins)."""

from typing import Any

from django.conf import settings
from oauth2_provider.scopes import SettingsScopes


def restricted_scope_granted(application: Any, scope: str) -> bool:
    permission = settings.CLINPREDICT_RESTRICTED_SCOPES.get(scope)
    if permission is None:
        return True
    owner = getattr(application, "user", None)
    return owner is not None and owner.is_active and owner.has_perm(permission)


class ClinPredictScopes(SettingsScopes):
    def get_available_scopes(self, application: Any = None, request: Any = None, *args: Any,
                             **kwargs: Any) -> list[str]:
        scopes = list(super().get_available_scopes(application, request, *args, **kwargs))
        if application is None:  # the server's metadata: every scope it knows
            return scopes
        return [scope for scope in scopes if restricted_scope_granted(application, scope)]

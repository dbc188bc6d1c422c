"""The OAuth2 protocol endpoints we offer, and no others (django-oauth-toolkit's base URLs also carry the device
flow, which no client here uses). The token endpoint is our throttled, audited subclass."""

from django.urls import path
from oauth2_provider import views

from .oauth import TokenView

app_name = "oauth2_provider"

urlpatterns = [
    path("authorize/", views.AuthorizationView.as_view(), name="authorize"),
    path("token/", TokenView.as_view(), name="token"),
    path("revoke_token/", views.RevokeTokenView.as_view(), name="revoke-token"),
    path("introspect/", views.IntrospectTokenView.as_view(), name="introspect"),
]

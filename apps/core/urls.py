from django.urls import path

from . import views
from .oauth import TokenView

urlpatterns = [
    # Matched before django-oauth-toolkit's own /o/token/: throttled on failed client authentication, audited.
    path("o/token/", TokenView.as_view(), name="oauth2-token"),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
]

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

urlpatterns = [
    path("", include("apps.core.urls")),
    path("", include("apps.monitoring.metrics_urls")),  # /metrics: all gunicorn workers + stored state
    path("accounts/login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    # Only the protocol endpoints; OAuth2 applications are managed by staff in Django admin.
    path("o/", include("apps.core.oauth_urls", namespace="oauth2_provider")),
    path("api/v1/", include("apps.predictions.api_urls")),
    path("api/v1/", include("apps.patients.api_urls")),
    path("api/v1/", include("apps.registry.api_urls")),
    path("fhir/", include("apps.predictions.fhir_urls")),
    path("", include("apps.predictions.cds_urls")),
    path("api/v1/", include("apps.audit.api_urls")),
    path("audit/", include("apps.audit.urls")),
    path("registry/", include("apps.registry.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("monitoring/", include("apps.monitoring.urls")),
    path("", include("apps.patients.urls")),
    path("", include("apps.predictions.urls")),
]

# Errors Django answers itself (no route, a body too large before any view, an unhandled exception) answer in the API
# error shape under the API prefixes, HTML elsewhere.
handler400 = "apps.core.views.bad_request"
handler403 = "apps.core.views.permission_denied"
handler404 = "apps.core.views.not_found"
handler500 = "apps.core.views.server_error"

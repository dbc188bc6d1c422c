from django.urls import path

from . import cds_views

urlpatterns = [
    path("cds-services", cds_views.CdsDiscoveryApi.as_view(), name="cds-discovery"),
    path("cds-services/<slug:service>", cds_views.CdsServiceApi.as_view(), name="cds-service"),
]

from django.urls import path

from . import apis

urlpatterns = [
    path("audit/events", apis.AuditEventListApi.as_view(), name="api-audit-events"),
]

from django.urls import path

from . import views

app_name = "audit"

urlpatterns = [
    path("", views.event_list, name="events"),
    path("events/<int:seq>/", views.event_detail, name="event-detail"),
    path("export.<slug:export_format>", views.export, name="export"),
]

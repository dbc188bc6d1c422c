from django.urls import path

from . import views

app_name = "monitoring"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("<str:use_case>/", views.use_case_detail, name="use-case"),
]

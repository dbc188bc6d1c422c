from django.urls import path

from . import views

urlpatterns = [
    path("history/", views.champion_history, name="registry-champion-history"),
]

"""URLs of the example; /events (sseproto's EventStreamApp) is mounted in front, in wsgi.py."""

from django.urls import path

from . import views

urlpatterns = [
    path("", views.page),
    path("stream/<str:channel>", views.stream),
    path("publish/<str:channel>", views.publish),
]

from django.urls import path

from hub.alerts import apis

urlpatterns = [
    path("alerts/", apis.AlertListApi.as_view(), name="alert-list"),
]

from django.urls import path

from hub.pipeline import apis

urlpatterns = [
    path("jobs/", apis.JobListApi.as_view(), name="job-list"),
    path("jobs/<int:pk>/", apis.JobDetailApi.as_view(), name="job-detail"),
    path("jobs/<int:pk>/retry/", apis.JobRetryApi.as_view(), name="job-retry"),
    path("jobs/<int:pk>/cancel/", apis.JobCancelApi.as_view(), name="job-cancel"),
]

from django.urls import path

from rollouts import apis

urlpatterns = [
    path("releases/", apis.ReleaseListApi.as_view(), name="release-list"),
    path("releases/<int:pk>/", apis.ReleaseDetailApi.as_view(), name="release-detail"),
    path("rollouts/", apis.RolloutListApi.as_view(), name="rollout-list"),
    path("rollouts/<int:pk>/", apis.RolloutDetailApi.as_view(), name="rollout-detail"),
    path("rollouts/<int:pk>/plan/", apis.RolloutPlanApi.as_view(), name="rollout-plan"),
    path("rollouts/<int:pk>/updates/", apis.RolloutUpdateListApi.as_view(), name="rollout-updates"),
    path("rollouts/<int:pk>/start/", apis.RolloutStartApi.as_view(), name="rollout-start"),
    path("rollouts/<int:pk>/pause/", apis.RolloutPauseApi.as_view(), name="rollout-pause"),
    path("rollouts/<int:pk>/resume/", apis.RolloutResumeApi.as_view(), name="rollout-resume"),
    path("rollouts/<int:pk>/promote/", apis.RolloutPromoteApi.as_view(), name="rollout-promote"),
    path("rollouts/<int:pk>/abort/", apis.RolloutAbortApi.as_view(), name="rollout-abort"),
    path("rollouts/<int:pk>/rollback/", apis.RolloutRollbackApi.as_view(), name="rollout-rollback"),
    path("rollouts/<int:pk>/retry/", apis.RolloutRetryApi.as_view(), name="rollout-retry"),
]

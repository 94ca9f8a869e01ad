from drf_spectacular.utils import extend_schema
from rest_framework import generics
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from hub.db.filters import matches_no_row
from hub.pipeline.selectors import jobs_with_steps
from hub.pipeline.serializers import JobOutputSerializer
from hub.pipeline.services import job_cancel, job_retry


class JobListApi(generics.ListAPIView):
    serializer_class = JobOutputSerializer

    def get_queryset(self):
        queryset = jobs_with_steps()
        status = self.request.query_params.get("status")
        if matches_no_row(status):
            return queryset.none()
        return queryset.filter(status=status) if status else queryset


class JobDetailApi(generics.RetrieveAPIView):
    serializer_class = JobOutputSerializer
    queryset = jobs_with_steps()


class JobRetryApi(APIView):
    @extend_schema(request=None, responses=JobOutputSerializer)
    def post(self, request: Request, pk: int) -> Response:
        job_retry(job_id=pk, actor=request.user.get_username())
        return Response(JobOutputSerializer(jobs_with_steps().get(pk=pk)).data)


class JobCancelApi(APIView):
    @extend_schema(request=None, responses=JobOutputSerializer)
    def post(self, request: Request, pk: int) -> Response:
        job_cancel(job_id=pk, actor=request.user.get_username())
        return Response(JobOutputSerializer(jobs_with_steps().get(pk=pk)).data)

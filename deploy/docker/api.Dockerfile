# The API tier (`hark api`): the base package only, no inference engine, no compilers.
#   docker build -f deploy/docker/api.Dockerfile -t hark-api .
# Build context: the repository root (.dockerignore keeps only what the package needs).
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/hark
WORKDIR /src
COPY . .
# Base dependencies only: PyAV, Flask, gunicorn, Celery... ship wheels, so nothing is compiled here.
RUN /opt/hark/bin/pip install .

FROM python:3.11-slim-bookworm
ENV PATH=/opt/hark/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 \
    HARK_API_HOST=0.0.0.0 HARK_API_PORT=7100 HARK_LOG_FORMAT=json
COPY --from=build /opt/hark /opt/hark
RUN useradd --system --create-home --uid 10001 --user-group hark
USER 10001:10001
EXPOSE 7100
# Liveness of the process (GET /health); readiness (GET /ready: a worker of the deployment is live) is
# for the orchestrator, which must not restart an API only because its workers are scaling up.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os,urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('HARK_API_PORT', '7100'), timeout=2)"]
CMD ["hark", "api"]

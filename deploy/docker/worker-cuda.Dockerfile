# A GPU worker host: CUDA 12 + cuDNN 9 runtime (CTranslate2 needs cuBLAS and cuDNN), torch's CUDA build.
#   docker build -f deploy/docker/worker-cuda.Dockerfile -t hark-worker-cuda .
# Run with a GPU: `docker run --gpus all ...` (compose: deploy/docker-compose.cuda.yml; Kubernetes:
# the chart's `device: cuda` packs request nvidia.com/gpu).
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.8

FROM ${UV_IMAGE} AS uv

FROM ${CUDA_IMAGE} AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
COPY --from=uv /uv /usr/local/bin/uv
# A standalone CPython 3.11 (the CUDA images ship another Python) under /opt/python, readable by all.
ENV UV_PYTHON_INSTALL_DIR=/opt/python UV_NO_CACHE=1 UV_LINK_MODE=copy
RUN uv python install 3.11 && uv venv --python 3.11 /opt/hark
RUN uv pip install --python /opt/hark/bin/python --index-url "$TORCH_INDEX_URL" "torch==2.13.0"
WORKDIR /src
COPY . .
ARG HARK_EXTRAS=worker
RUN uv pip install --python /opt/hark/bin/python ".[${HARK_EXTRAS}]"

FROM ${CUDA_IMAGE}
ENV PATH=/opt/hark/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 \
    MODEL_CACHE_DIR=/models HARK_DEVICE=cuda HARK_WORKER_METRICS_PORT=9101 HARK_LOG_FORMAT=json \
    PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True \
    NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility
COPY --from=build /opt/python /opt/python
COPY --from=build /opt/hark /opt/hark
RUN useradd --system --create-home --uid 10001 --user-group hark && mkdir -p /models && chown 10001:10001 /models
USER 10001:10001
VOLUME ["/models"]
EXPOSE 9101
HEALTHCHECK --interval=15s --timeout=3s --start-period=600s --retries=3 \
    CMD ["python", "-c", "import os,urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('HARK_WORKER_METRICS_PORT', '9101'), timeout=2)"]
CMD ["hark", "worker"]

# The license proxy (`hark license-proxy`, one per installation): base package only.
#   docker build -f deploy/docker/license-proxy.Dockerfile -t hark-license-proxy .
# LICENSE_KEY comes from the environment at run time, never from the image.
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/hark
WORKDIR /src
COPY . .
RUN /opt/hark/bin/pip install .

FROM python:3.11-slim-bookworm
ENV PATH=/opt/hark/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HARK_LICENSE_PROXY_PORT=6699 HARK_LOG_FORMAT=json
COPY --from=build /opt/hark /opt/hark
RUN useradd --system --create-home --uid 10001 --user-group hark
USER 10001:10001
EXPOSE 6699
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os,urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('HARK_LICENSE_PROXY_PORT', '6699'), timeout=2)"]
CMD ["hark", "license-proxy"]

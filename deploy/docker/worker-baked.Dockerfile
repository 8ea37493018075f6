# A worker image with its checkpoint inside ("baked image" strategy, docs/model-storage.md): starts at
# load speed with no network or shared volume. Build it FROM a worker image, with a directory holding
# the unpacked checkpoint (`hark checkpoints pack DIR -o OUT_DIR`, or a cache's <name>/<version>/) as
# the build context:
#   docker build -f deploy/docker/worker-baked.Dockerfile \
#       --build-arg WORKER_IMAGE=hark-worker:latest --build-arg CHECKPOINT=whisper-base/1.0.0 \
#       -t hark-worker-whisper-base:1.0.0 ~/.cache/hark/checkpoints
# For a GPU image pass WORKER_IMAGE=hark-worker-cuda:latest.
ARG WORKER_IMAGE=hark-worker:latest
FROM ${WORKER_IMAGE}
# <name>/<version> of the checkpoint directory inside the build context.
ARG CHECKPOINT=whisper-base/1.0.0
COPY --chown=10001:10001 ${CHECKPOINT} /opt/hark/models/${CHECKPOINT}
# Verify every file now and write the verification marker (the layer keeps mtimes), so workers do
# not re-hash the checkpoint on every start.
RUN hark checkpoints verify /opt/hark/models/${CHECKPOINT} --full
# MODEL_PATH wins over MODEL_URL and never downloads; MODEL_URL names the same directory for tools
# that read it (`hark checkpoints pull` without arguments).
ENV MODEL_PATH=/opt/hark/models/${CHECKPOINT} MODEL_URL=/opt/hark/models/${CHECKPOINT}

# syntax=docker/dockerfile:1
# Two images from one file:
#   docker build --target api    -t spotlight-api .      # FastAPI, no torch (the `server` extra); also runs
#                                                        #   `spotlight worker --callbacks-only` (webhooks)
#   docker build --target worker -t spotlight-worker .   # RQ worker on a CUDA PyTorch base; also runs
#                                                        #   `spotlight worker --reports-only` on a CPU node
# docker-compose.yml builds both; tests/test_packaging.py checks this file against the code.

ARG PYTHON_IMAGE=python:3.11-slim
# The worker's torch is the minor version the tests run on (the Makefile's TORCH); a test checks it.
ARG TORCH_IMAGE=pytorch/pytorch:2.13.0-cuda12.8-cudnn9-runtime

# ---- the project's source, shared by both targets ----
FROM ${PYTHON_IMAGE} AS source
WORKDIR /src
COPY pyproject.toml README.md ./
COPY spotlight/ spotlight/
COPY service/ service/
COPY worker/ worker/

# ---- api: the server and s3 extras (no torch) ----
FROM ${PYTHON_IMAGE} AS api
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    SPOTLIGHT_DATA_DIR=/data
COPY --from=source /src /app
WORKDIR /app
RUN pip install "/app[server,s3]" \
    && useradd --uid 1000 --create-home spotlight \
    && mkdir -p /data/store \
    && chown -R spotlight /data
USER spotlight
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"
CMD ["spotlight", "api", "--host", "0.0.0.0", "--port", "8000"]

# ---- worker: torch and CUDA from the base image, plus the worker and s3 extras ----
FROM ${TORCH_IMAGE} AS worker
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    SPOTLIGHT_DATA_DIR=/data
COPY --from=source /src /app
WORKDIR /app
RUN pip install "/app[worker,s3]" \
    && useradd --uid 1000 --create-home spotlight \
    && mkdir -p /data/store \
    && chown -R spotlight /data
USER spotlight
CMD ["spotlight", "worker"]

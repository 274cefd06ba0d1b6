# The secsync demo participant (python -m secsync.apps.participant), built from this repository for
# docker-compose.yml. Options come from SECSYNC_* environment variables (see
# secsync/apps/participant.py), e.g.
#   docker build -t secsync-participant:dev .
#   docker run --rm -e SECSYNC_NAME=dave -e SECSYNC_SERVERS=nats://host.docker.internal:4222 \
#       -e SECSYNC_KEY_FILE=/secrets/demo-document.key -v demo-key:/secrets secsync-participant:dev
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Only what the package build needs (BuildKit sends just these files of the context).
COPY pyproject.toml README.md ./
COPY secsync ./secsync
COPY broker-config ./broker-config
RUN pip install . \
    && useradd --create-home --uid 10001 secsync \
    && mkdir /secrets \
    && chown secsync /secrets

# Not root. A named volume mounted at /secrets starts with this directory's owner, so the first
# participant can create the shared document key there.
USER secsync
ENTRYPOINT ["python", "-m", "secsync.apps.participant"]

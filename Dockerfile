# syntax=docker/dockerfile:1
# The `shredline` image: the built wheel installed (not an editable checkout) into a virtualenv,
# run as an unprivileged user. One image for every process; docker-compose.yml picks the command
# (`worker`, `sink`, `topics apply`, ...). Nothing secret is in it: certificates, the master key
# and the key store's password reach a container at run time (see the README, "Running on
# several machines"). Checked with hadolint (tests/unit/test_deploy_files.py); no Docker engine
# runs where the tests run, so the image has not been built there.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# Only what the wheel is built from (the .dockerignore admits nothing else).
COPY pyproject.toml README.md ./
COPY streams/ streams/
COPY processors/ processors/
COPY analytics/ analytics/
COPY schemas/ schemas/
COPY keystore/ keystore/
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/shredline \
 && /opt/shredline/bin/python -m pip install /wheels/shredline-*.whl

FROM ${PYTHON_IMAGE}
# A fixed uid, so files a one-shot writes into a shared volume belong to every service's user.
RUN groupadd --system --gid 10001 shredline \
 && useradd --system --uid 10001 --gid shredline --home-dir /var/lib/shredline --no-create-home \
      --shell /usr/sbin/nologin shredline \
 && install -d -o shredline -g shredline -m 0700 /var/lib/shredline
COPY --from=build /opt/shredline /opt/shredline
COPY --chmod=0755 deploy/compose-init.sh /usr/local/bin/shredline-compose-init
ENV PATH=/opt/shredline/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SHREDLINE_DATA_DIR=/var/lib/shredline
USER 10001:10001
WORKDIR /var/lib/shredline
# No HEALTHCHECK in the image: it runs one-shots (`topics apply`), the worker and the sink, and
# none of them serves a port to probe (the worker's Faust web server is off). A worker or sink
# that fails exits non-zero, and Compose's restart policy starts it again.
HEALTHCHECK NONE
ENTRYPOINT ["shredline"]
CMD ["--help"]

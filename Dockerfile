# touchflow: one image for every role (`touchflow worker | sink | topics | migrate | sql`).
#
# The project is installed in *editable* mode from /app on purpose: pipeline/codec.py finds
# the Avro schemas at Path(__file__).parent.parent / "schemas", i.e. next to the packages,
# and schemas/ is not package data. A regular wheel install would put the packages in
# site-packages where no schemas/ directory exists.

ARG PYTHON_IMAGE=python:3.11.10-slim-bookworm

# --- build: a virtualenv with the dependencies and the editable install of /app ----------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /app

# gcc for the compiled domain core (below); the image's Python has its headers.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

# Dependencies first (this layer is reused until pyproject.toml changes): every runtime
# dependency ships manylinux wheels for CPython 3.11; the `compiled` extra (Cython) only
# builds the core, and is uninstalled once it has.
COPY pyproject.toml ./
RUN python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb")); print("\n".join(p["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
    && python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb")); print("\n".join(p["project"]["optional-dependencies"]["compiled"]))' \
        > /tmp/build-requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && pip install -r /tmp/build-requirements.txt

# Then the source, installed editable (no dependency resolution: already done above), and
# the domain core compiled in place beside its .py files (docs/compiled-core.md).
COPY . /app
RUN pip install --no-deps -e . \
    && python -m pipeline.compiled_core \
    && pip uninstall -y cython \
    && python -m compileall -q /app/pipeline /app/agents /app/sinks \
    && test -f /app/schemas/registry.json

# --- runtime ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="touchflow" \
      org.opencontainers.image.description="Real-time customer segments: Faust worker and ClickHouse sink"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TOUCHFLOW_DATA_DIR=/var/lib/touchflow

RUN groupadd --system --gid 10001 touchflow \
    && useradd --system --uid 10001 --gid touchflow --create-home --home-dir /home/touchflow \
       --shell /usr/sbin/nologin touchflow \
    && install -d -o touchflow -g touchflow -m 0750 /var/lib/touchflow

# Same paths as in the build stage: the editable finder in /opt/venv points at /app.
# Code stays root-owned (read-only for the service user); only the data dir is writable.
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app

WORKDIR /app
USER touchflow:touchflow

# Faust web server (`touchflow worker`, Settings.web_port: /metrics, /healthz, /readyz) and
# the sink's /metrics (`touchflow sink`, Settings.sink_metrics_port as set in deploy/).
EXPOSE 6066 9108

# Fail the build early if the install does not resolve the schemas next to the packages,
# or if the core it runs (or the Avro coders) is not the compiled one.
RUN python -c "import pipeline.codec as c; assert (c.SCHEMAS_DIR / 'registry.json').is_file(), c.SCHEMAS_DIR" \
    && python -c "from pipeline.core_loader import core_is_compiled as c; assert c(), 'core not compiled'" \
    && python -c "from pipeline.codec import Codecs as C; c = C(); assert c.events.reader_prebuilt and c.state.writers_prebuilt, 'Avro coders not compiled'" \
    && python -c "from pipeline.rules import compile_rules as r; assert type(r(None).default.compiled).__name__ != 'function', 'rules not compiled'"

ENTRYPOINT ["touchflow"]
CMD ["--help"]

# The one image of every clr-sweep service: `docker compose` passes the CLI
# arguments (`db upgrade`, `api ...`, `worker --gpus 0`, `reaper`) as the command.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CLR_DATA_DIR=/data

RUN groupadd --system clr \
    && useradd --system --gid clr --create-home --home-dir /home/clr clr \
    && mkdir -p /data \
    && chown clr:clr /data

# torch first and pinned (the same version as the Makefile's): on Linux the default
# PyPI wheel is the CUDA build the GPU workers need. Installed before the project,
# so its loose `torch>=2.4` requirement is already met and never re-resolved.
ARG TORCH_VERSION=2.13.0
RUN pip install "torch==${TORCH_VERSION}"

# The dependencies alone, from pyproject.toml (the client's and the `service` extra's):
# this layer is rebuilt only when they change, not on every source edit.
WORKDIR /src
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['service']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY clr/ clr/
COPY clr_sweep/ clr_sweep/
COPY cli/ cli/
COPY core/ core/
COPY api/ api/
COPY worker/ worker/
COPY migrations/ migrations/

# The wheel ships migrations/ (see pyproject); the check fails the build if
# `clr-sweep db upgrade` could not find them. Run from / so the installed packages,
# not /src, are imported.
RUN pip install --no-deps . \
    && cd / \
    && python -c "from core.migrate import head_revision; print('migrations head:', head_revision())" \
    && rm -rf /src

WORKDIR /home/clr
USER clr
EXPOSE 8000
ENTRYPOINT ["clr-sweep"]
CMD ["--help"]

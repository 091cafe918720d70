# The BrowserPhone application image: web (daphne), sipworker, celery worker and beat all run
# from it (compose.yaml picks the command).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends gettext \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /app --no-create-home browserphone

WORKDIR /app
# Dependencies first, in their own layer: a code change does not reinstall aiortc and friends.
COPY pyproject.toml ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt

COPY . .
# Last, the folder of prometheus_client's multiprocess files: a volume that every app container
# shares takes its owner from here.
RUN pip install --no-deps -e . \
    && DEBUG=true python manage.py compilemessages --ignore=.venv \
    && DEBUG=true python manage.py collectstatic --noinput \
    && mkdir -p /var/lib/browserphone/metrics \
    && chown browserphone:browserphone /var/lib/browserphone/metrics

USER browserphone
ENV DEBUG=false \
    PROMETHEUS_MULTIPROC_DIR=/var/lib/browserphone/metrics
EXPOSE 8000
CMD ["daphne", "-b", "0.0.0.0", "-p", "8000", "portal.asgi:application"]

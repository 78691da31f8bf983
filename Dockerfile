# The foot-drop CDS service: python -m cds_service serve (gunicorn) on port 8080.
#   docker build -t foot-drop-cds:local .
# The same image runs the other commands (load-fixtures, feedback-report, ...).

# The SMART timeline app (app/): npm ci + esbuild bundle; only app/dist goes into the image.
FROM node:20-slim AS smart-app
WORKDIR /build
COPY app/package.json app/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY app/build.mjs ./
COPY app/src ./src
COPY app/public ./public
RUN npm run build

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# An editable install keeps cards/, config/ and fhir_fixtures/ next to the package, where the
# service looks for them (cds_service.config.PROJECT_ROOT).
COPY pyproject.toml README.md* ./
COPY cds_service ./cds_service
COPY cards ./cards
COPY config ./config
COPY fhir_fixtures ./fhir_fixtures
COPY --from=smart-app /build/dist ./app/dist
RUN pip install -e '.[postgres]' \
    && useradd --system --uid 10001 --no-create-home --home-dir /app cds \
    && mkdir -p /app/var /tmp/prometheus \
    && chown cds /app/var /tmp/prometheus

USER cds
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
CMD ["python", "-m", "cds_service", "serve", "--host", "0.0.0.0", "--port", "8080"]

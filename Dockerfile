# The outbox image: `outbox` is the entrypoint; `worker` the default command.
# Build: docker build -t outbox .
FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY alembic ./alembic
COPY outbox ./outbox
# What production runs: the runtime dependencies only (a deployment talks to a
# real PostgreSQL). EXTRAS adds the tools, e.g. "[demo]" for the example
# receiver in compose.yaml.
ARG EXTRAS=""
RUN pip install --no-cache-dir ".${EXTRAS}"

RUN useradd --system --no-create-home outbox
USER outbox

# `outbox worker` stops gracefully on SIGTERM within OUTBOX_SHUTDOWN_GRACE (30 s).
STOPSIGNAL SIGTERM
EXPOSE 9464
ENTRYPOINT ["outbox"]
CMD ["worker", "--metrics-port", "9464"]

# segsvc served by gunicorn; the database comes from DATABASE_URL (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SEGSVC_LOG_LEVEL=INFO \
    SEGSVC_LOG_FORMAT=json \
    PORT=8080

# A home directory, because gunicorn puts its control socket in ~/.gunicorn.
RUN useradd --create-home --shell /usr/sbin/nologin segsvc

WORKDIR /app
# The whole tree: sql/, migrations/ and wsgi.py are found relative to the package.
COPY . /app
# No [embedded] extra: the image always runs against DATABASE_URL.
RUN pip install --constraint constraints.txt --editable .

USER segsvc
EXPOSE 8080
# Applies pending migrations, then runs gunicorn; SIGTERM stops it gracefully.
CMD ["python", "-m", "segsvc.launcher"]

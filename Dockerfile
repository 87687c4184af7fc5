# The serving image of imgclf: `imgclf serve /model` on port 8000, as a non-root user.
#
#   docker build --build-arg MODEL_DIR=path/to/bundle -t imgclf-serve .
#   docker run --rm -p 8000:8000 imgclf-serve
#
# MODEL_DIR is a bundle written by `imgclf export` (or a run directory), inside the build
# context. With a .tflite file in it the image gets LiteRT, NumPy, Pillow and the web stack and
# no TensorFlow (RUNTIME=auto picks this); without one, TensorFlow and Keras are added to run
# model.keras. A bundle mounted at /model (`-v "$PWD/bundle:/model:ro"`) replaces the copied one.
# docs/serving.md describes every setting.

ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS build
ARG MODEL_DIR=model
# auto, litert or tensorflow.
ARG RUNTIME=auto
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# A virtual environment of its own works on Debian's python3 (no pip on PATH) and on the
# official Python images alike, and copies into the final stage as one folder.
RUN python3 -m venv /opt/venv
WORKDIR /build
COPY pyproject.toml README.md ./
COPY src ./src
COPY ${MODEL_DIR} /build/model
RUN /opt/venv/bin/pip install --no-deps . \
    && /opt/venv/bin/python src/imgclf/serving/requirements.py --runtime "${RUNTIME}" --bundle /build/model \
       > /build/requirements.txt \
    && /opt/venv/bin/pip install -r /build/requirements.txt \
    && /opt/venv/bin/pip uninstall --yes pip setuptools \
    && find /opt/venv -name __pycache__ -prune -exec rm -rf {} +

FROM ${BASE_IMAGE}
ARG MODEL_DIR=model
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin imgclf
COPY --from=build /opt/venv /opt/venv
COPY ${MODEL_DIR} /model
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    IMGCLF_HOST=0.0.0.0 \
    IMGCLF_PORT=8000
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ['IMGCLF_PORT'], timeout=4)"]
ENTRYPOINT ["imgclf", "serve", "/model"]

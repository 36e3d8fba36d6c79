# chromagent_proxy: slim Python, non-root, configured by GATEWAY_* env vars or a mounted file.
#   docker build -t chromagent-gateway .
#   docker run -p 3000:3000 -e GEMINI_API_KEY=... \
#     -v $PWD/config.json:/etc/chromagent/config.json:ro \
#     -e GATEWAY_CONFIG=/etc/chromagent/config.json chromagent-gateway
# Without GATEWAY_CONFIG the packaged demo config (the mock "echo" model) runs.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=3000

WORKDIR /app
COPY pyproject.toml README.md ./
COPY chromagent_proxy ./chromagent_proxy
RUN pip install '.[tracing]' \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin gateway

USER 10001
EXPOSE 3000
# SIGTERM drains: in-flight requests and streams finish (shutdownTimeoutMs, default 30 s),
# so give `docker stop -t` / stop_grace_period / terminationGracePeriodSeconds a bit more.
STOPSIGNAL SIGTERM
# /health answers 200 "ok", and 503 "draining" during shutdown. No curl in slim: Python.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('GATEWAY_PORT', '3000') + '/health', timeout=2)"]
ENTRYPOINT ["chromagent-gateway"]
CMD []

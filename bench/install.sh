#!/bin/sh
# Bench-only dependencies. Never fails the build: what cannot be installed is
# reported here and again in the results table ("could not run: ...").
#   bench/install.sh          matplotlib (into the project venv) and nginx (apt-get)
#   bench/install.sh --peers  also LiteLLM proxy (own venv) and Portkey gateway (npm)
set -u
cd "$(dirname "$0")/.."
PY=${PY:-python3}
.venv/bin/python -c "import matplotlib" 2>/dev/null || .venv/bin/python -m pip install --quiet matplotlib \
  || echo "bench: matplotlib could not be installed: no chart"
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  echo "bench: installing nginx with apt-get (the proxy_pass baseline)"
  if command -v apt-get >/dev/null 2>&1; then
    { apt-get install -y -qq nginx-light || { apt-get update -qq && apt-get install -y -qq nginx-light; } \
      || apt-get install -y -qq nginx; } >/dev/null 2>&1
  fi
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] \
    || echo "bench: nginx could not be installed (no apt-get, no root or no registry): no nginx rows"
fi
[ "${1:-}" = "--peers" ] || exit 0
if [ ! -x bench/.peers/litellm/bin/litellm ]; then
  echo "bench: installing LiteLLM proxy into bench/.peers/litellm (pip)"
  { $PY -m venv bench/.peers/litellm && bench/.peers/litellm/bin/pip install --quiet 'litellm[proxy]'; } \
    >bench/.peers/litellm-install.log 2>&1 || echo "bench: LiteLLM could not be installed, see bench/.peers/litellm-install.log"
fi
if [ ! -f bench/.peers/portkey/node_modules/@portkey-ai/gateway/build/start-server.js ]; then
  echo "bench: installing Portkey gateway into bench/.peers/portkey (npm)"
  mkdir -p bench/.peers/portkey
  { cd bench/.peers/portkey && { [ -f package.json ] || npm init -y; } && npm install @portkey-ai/gateway; } \
    >bench/.peers/portkey-install.log 2>&1 || echo "bench: Portkey could not be installed, see bench/.peers/portkey-install.log"
fi
exit 0

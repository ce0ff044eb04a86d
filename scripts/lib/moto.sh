# Starts a moto server for ./scripts/test and ./scripts/bench (sourced by both).
#   start_moto VENV LOG
# Sets moto_port, proxy_port and moto_pid, stops moto when the calling script exits, and exports
# what the tests' emulator (tests/aws/emulator.rs) and the SDK read. moto's Step Functions
# executor calls Lambda back at localhost:$MOTO_PORT: that port is the tests' proxy, which runs
# the real handlers and forwards everything else to moto.
start_moto() {
  local venv="$1" log="$2"
  read -r moto_port proxy_port < <("$venv/bin/python" - <<'PY'
import socket
ports = []
sockets = [socket.socket() for _ in range(2)]
for s in sockets:
    s.bind(("127.0.0.1", 0))
    ports.append(s.getsockname()[1])
print(*ports)
PY
)
  # tests/moto_server.py: moto_server with SendTaskFailure's cause passed on, as on AWS.
  MOTO_PORT="$proxy_port" "$venv/bin/python" tests/moto_server.py -H 127.0.0.1 -p "$moto_port" >"$log" 2>&1 &
  moto_pid=$!
  trap 'kill $moto_pid 2>/dev/null || true' EXIT
  for _ in $(seq 1 100); do
    if "$venv/bin/python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$moto_port/moto-api/')" 2>/dev/null; then break; fi
    kill -0 $moto_pid 2>/dev/null || { cat "$log"; echo "moto did not start" >&2; exit 1; }
    sleep 0.2
  done
  export DELTADROP_MOTO_ENDPOINT="http://127.0.0.1:$moto_port"
  export DELTADROP_MOTO_PROXY_PORT="$proxy_port"
  export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
  unset AWS_PROFILE AWS_SESSION_TOKEN
}

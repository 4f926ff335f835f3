#!/usr/bin/env bash
# The HA pair of README.md in network namespaces: two lbframe nodes (VRRP), a
# client, two members and a Redis for the shared persistence table, on one
# bridge in 198.18.0.0/24 with no default route and no link to the host.
# Shows a failover (SIGKILL of the master) and a failback (preemption) while
# the client keeps asking; everything is removed on exit, even on failure.
#
#   sudo examples/ha-pair/run.sh            (from the repository root or anywhere)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
P=${HA_PAIR_PREFIX:-hapair$$}        # namespace prefix, unique to this run
WORK="$(mktemp -d /tmp/ha-pair.XXXXXX)"
NS=(sw a b client m1 m2 redis)
PIDS=()

cleanup() {
  set +e
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null; done
  wait 2>/dev/null
  for n in "${NS[@]}"; do ip netns delete "$P-$n" 2>/dev/null; done
  echo "cleaned up (logs were in $WORK)"
}
trap cleanup EXIT INT TERM

[ "$(id -u)" = 0 ] || { echo "run as root (network namespaces)"; exit 1; }
for tool in ip redis-server; do
  command -v $tool >/dev/null || { echo "needs $tool (apt install iproute2 redis-server)"; exit 1; }
done
# lbframe and its Redis store from this checkout (an installed one works too)
export PYTHONPATH="$ROOT:$ROOT/plugins/lbframe-redis/src${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" -c "import lbframe, lbframe_redis, txredisapi" 2>/dev/null || {
  echo "needs lbframe's dependencies and txredisapi: pip install '$ROOT[test]'"; exit 1; }

nsx() { local n=$1; shift; ip netns exec "$P-$n" "$@"; }
# in the background; $! is the program's pid (ip netns exec execs it)
bg() { local n=$1 log=$2; shift 2; ip netns exec "$P-$n" "$@" >"$WORK/$log" 2>&1 & PIDS+=($!); }

echo "== building the LAN"
for n in "${NS[@]}"; do ip netns add "$P-$n"; ip -n "$P-$n" link set lo up; done
ip -n "$P-sw" link add br0 type bridge
ip -n "$P-sw" link set br0 up
i=0
declare -A ADDR=([a]=198.18.0.1 [b]=198.18.0.2 [client]=198.18.0.100 [m1]=198.18.0.51
                 [m2]=198.18.0.52 [redis]=198.18.0.60)
for n in a b client m1 m2 redis; do
  i=$((i + 1))
  ip link add "p$i" netns "$P-sw" type veth peer name eth0 netns "$P-$n"
  ip -n "$P-sw" link set "p$i" master br0 up
  ip -n "$P-$n" link set eth0 up
  ip -n "$P-$n" addr add "${ADDR[$n]}/24" dev eth0
done

echo "== members and Redis"
for m in m1 m2; do
  mkdir -p "$WORK/$m"; echo "$m" > "$WORK/$m/index.html"
  bg $m $m.log "$PYTHON" -m http.server 8080 --bind "${ADDR[$m]}" --directory "$WORK/$m"
done
bg redis redis.log redis-server --bind 198.18.0.60 --port 6379 --save "" --appendonly no \
   --protected-mode no
sleep 1

TWISTD=("$PYTHON" -c "import sys; sys.argv[0] = 'twistd'; from twisted.scripts.twistd import run; run()")
start_node() { bg "$1" "node-$1.log" "${TWISTD[@]}" -n --pidfile= lbframe --config "$HERE/node-$1.ini"; eval "PID_$1=\$!"; }
state() { nsx "$1" "$PYTHON" -c "import json, urllib.request
print(json.load(urllib.request.urlopen('http://127.0.0.1:8404/api/status', timeout=1))['redundancy']['state'])" 2>/dev/null || echo down; }
wait_state() {
  for _ in $(seq 100); do [ "$(state "$1")" = "$2" ] && return 0; sleep 0.2; done
  echo "node $1 never became $2; see $WORK/node-$1.log"; exit 1
}
vip_on() { nsx "$1" ip -4 -o addr show dev eth0 | grep -q ' 198.18.0.10/' && echo yes || echo no; }

echo "== starting node a (priority 200) and node b (priority 100)"
cd "$ROOT"
start_node a
start_node b
wait_state a master
wait_state b backup
echo "a: $(state a), VIP on a: $(vip_on a);  b: $(state b), VIP on b: $(vip_on b)"

echo "== the client asks http://198.18.0.10/ every 200 ms (answer: the member)"
ip netns exec "$P-client" "$PYTHON" -u -c "
import time, urllib.request
end = time.time() + 24
while time.time() < end:
    t = time.time()
    try:
        ans = urllib.request.urlopen('http://198.18.0.10/', timeout=0.5).read().decode().strip()
    except Exception as e:
        ans = 'FAILED (' + type(e).__name__ + ')'
    print(time.strftime('%H:%M:%S', time.localtime(t)) + '.%03d  %s' % (t % 1 * 1000, ans))
    time.sleep(max(0, 0.2 - (time.time() - t)))
" > "$WORK/client.log" 2>&1 & CLIENT=$!; PIDS+=($CLIENT)
sleep 4

echo "== $(date +%T.%3N) kill -9 node a (the master)"
kill -9 "$PID_a"
wait_state b master
echo "== $(date +%T.%3N) b: $(state b), VIP on b: $(vip_on b)"
sleep 4

echo "== $(date +%T.%3N) node a starts again: it removes the VIP its crash left, then preempts"
start_node a
wait_state a master
echo "== $(date +%T.%3N) a: $(state a), VIP on a: $(vip_on a);  b: $(state b), VIP on b: $(vip_on b)"
wait "$CLIENT" || true

echo "== what the client saw (one line a second, and every failure)"
awk '/FAILED/ || NR % 5 == 1' "$WORK/client.log"
fails=$(grep -c FAILED "$WORK/client.log" || true)
members=$(grep -v FAILED "$WORK/client.log" | awk '{print $2}' | sort -u | tr '\n' ' ')
echo "== $(wc -l < "$WORK/client.log") requests, $fails failed (during the takeovers); members seen: $members"
echo "   (one member only: the source-ip table in Redis is shared by both nodes)"

#!/usr/bin/env bash
# Runs inside Scripts/lib/systemd-vm (systemd as PID 1 on a pure cgroup v2 kernel), from the
# checkout: installs Config/systemd/petreld.service as it ships (ExecStart pointed at this
# checkout's build), and checks that petreld runs under it as the unit promises: started
# when READY=1 says so, its sandboxes in the cgroup subtree systemd delegated to it, a
# function invoked, reloaded, restarted after a kill -9, and stopped cleanly.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo="$PWD"
fail() { echo "under-systemd: FAILED: $*" >&2; journalctl -u petreld --no-pager -n 60 >&2 || true; exit 1; }
step() { echo "under-systemd: $*"; }

[ "$(cat /proc/1/comm)" = systemd ] || fail "PID 1 is $(cat /proc/1/comm), not systemd"
grep -q cgroup2 <(stat -fc %T /sys/fs/cgroup) || fail "/sys/fs/cgroup is not cgroup2"

mkdir -p /etc/petrel
cat > /etc/petrel/petreld.toml <<'EOF'
[api]
listen = "127.0.0.1:9000"
[urls]
listen = "127.0.0.1:9002"
[instances]
prepared_sandboxes = 0
EOF
sed "s|^ExecStart=/usr/bin/petreld|ExecStart=$repo/.build/debug/petreld|" Config/systemd/petreld.service > /etc/systemd/system/petreld.service
systemctl daemon-reload

step "systemctl start petreld (Type=notify: returns once petreld says READY=1)"
systemctl start petreld || fail "the unit did not start"
[ "$(systemctl is-active petreld)" = active ] || fail "not active after start"
cg=$(systemctl show -p ControlGroup --value petreld)
[ "$cg" = /system.slice/petreld.service ] || fail "ControlGroup is $cg"
for c in memory cpu pids; do
  grep -qw "$c" "/sys/fs/cgroup$cg/cgroup.subtree_control" || fail "$c is not enabled below $cg (Delegate=yes)"
done

step "a function, deployed and invoked with petrel"
export AWS_SHARED_CREDENTIALS_FILE=/var/lib/petrel/admin-credentials AWS_REGION=us-east-1
[ "$(stat -c %a /var/lib/petrel)" = 700 ] || fail "/var/lib/petrel is not 0700 (StateDirectoryMode)"
fn=$(mktemp -d)
printf 'def handler(event, context):\n    return {"hello": event.get("name")}\n' > "$fn/app.py"
.build/debug/petrel deploy "$fn" --name hello --runtime python3.11 --handler app.handler --endpoint http://127.0.0.1:9000 >/dev/null \
  || fail "deploy"
out=$(.build/debug/petrel invoke hello --payload '{"name": "systemd"}' --endpoint http://127.0.0.1:9000 2>/tmp/invoke.err) || fail "invoke: $(cat /tmp/invoke.err)"
[ "$out" = '{"hello": "systemd"}' ] || fail "the function answered $out"
sandboxes=$(find "/sys/fs/cgroup$cg/petrel" -maxdepth 1 -name 'sb-*' | wc -l)
[ "$sandboxes" -ge 1 ] || fail "no sandbox cgroup below $cg/petrel"

step "systemctl reload petreld"
systemctl reload petreld || fail "reload"
sleep 1
[ "$(systemctl is-active petreld)" = active ] || fail "not active after the reload"
journalctl -u petreld --no-pager | grep -q "configuration reloaded" || fail "no reload in the journal"

step "kill -9 of petreld: systemd starts it again (Restart=on-failure)"
pid=$(systemctl show -p MainPID --value petreld)
kill -9 "$pid"
for _ in $(seq 1 120); do
  now=$(systemctl show -p MainPID --value petreld)
  [ "$now" != 0 ] && [ "$now" != "$pid" ] && [ "$(systemctl is-active petreld)" = active ] && break
  sleep 1
done
[ "$(systemctl is-active petreld)" = active ] && [ "$now" != "$pid" ] || fail "not restarted after kill -9"
out=$(.build/debug/petrel invoke hello --payload '{"name": "again"}' --endpoint http://127.0.0.1:9000 2>/dev/null) || fail "invoke after the restart"
[ "$out" = '{"hello": "again"}' ] || fail "after the restart the function answered $out"

step "systemctl stop petreld: a clean exit, nothing left"
systemctl stop petreld
[ "$(systemctl show -p Result --value petreld)" = success ] || fail "Result=$(systemctl show -p Result --value petreld)"
[ "$(systemctl show -p ExecMainStatus --value petreld)" = 0 ] || fail "petreld exited $(systemctl show -p ExecMainStatus --value petreld)"
left=$(find /sys/fs/cgroup/system.slice -name 'sb-*' 2>/dev/null | wc -l)
[ "$left" = 0 ] || fail "$left sandbox cgroups left"
pgrep -x petreld >/dev/null && fail "a petreld process is left"
rm -rf "$fn"
step "passed"

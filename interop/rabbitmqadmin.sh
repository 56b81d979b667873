#!/usr/bin/env bash
# rabbitmqadmin (the management plugin's own command-line client, from Debian's
# rabbitmq-server) against a broker's management API: list, declare, publish, get,
# export and import, delete. Usage: interop/rabbitmqadmin.sh HOST PORT
set -euo pipefail
host=$1
port=$2
admin() { rabbitmqadmin -H "$host" -P "$port" -u guest -p guest "$@"; }
expect() {
  local what=$1 output=$2 wanted=$3
  if ! grep -q -- "$wanted" <<<"$output"; then
    echo "rabbitmqadmin $what: '$wanted' not in:"
    echo "$output"
    exit 1
  fi
}

suffix=$$
queue="admin-q-$suffix"
exchange="admin-x-$suffix"
vhost="admin-vhost-$suffix"
user="admin-user-$suffix"

expect "show overview" "$(admin show overview)" "rabbitmq_version"
expect "declare vhost" "$(admin declare vhost name="$vhost")" "vhost declared"
expect "declare user" "$(admin declare user name="$user" password=secret tags=monitoring)" "user declared"
expect "declare permission" "$(admin declare permission vhost="$vhost" user="$user" configure='.*' write='.*' read='.*')" "permission declared"
expect "list users" "$(admin list users name tags)" "$user"
expect "declare queue" "$(admin declare queue name="$queue" durable=true)" "queue declared"
expect "declare exchange" "$(admin declare exchange name="$exchange" type=topic)" "exchange declared"
expect "declare binding" "$(admin declare binding source="$exchange" destination="$queue" routing_key='orders.*')" "binding declared"
expect "list bindings" "$(admin list bindings source destination routing_key)" "orders\.\*"
expect "publish" "$(admin publish exchange="$exchange" routing_key=orders.new payload="hello from rabbitmqadmin")" "Message published"
expect "publish unrouted" "$(admin publish exchange="$exchange" routing_key=nowhere payload=x)" "Message published but NOT routed"
expect "list queues" "$(admin list queues name messages)" "$queue"
expect "get" "$(admin get queue="$queue" ackmode=ack_requeue_false)" "hello from rabbitmqadmin"
expect "list exchanges" "$(admin list exchanges name type)" "$exchange"
expect "list vhosts" "$(admin list vhosts name)" "$vhost"
expect "list nodes" "$(admin list nodes name)" "@"
definitions=$(mktemp)
expect "export" "$(admin export "$definitions")" "Exported definitions"
expect "import" "$(admin import "$definitions")" "Uploaded definitions"
rm -f "$definitions"
expect "delete binding" "$(admin delete binding source="$exchange" destination="$queue" destination_type=queue properties_key='orders.*')" "binding deleted"
expect "delete queue" "$(admin delete queue name="$queue")" "queue deleted"
expect "delete exchange" "$(admin delete exchange name="$exchange")" "exchange deleted"
expect "delete user" "$(admin delete user name="$user")" "user deleted"
expect "delete vhost" "$(admin delete vhost name="$vhost")" "vhost deleted"
if admin delete queue name="$queue" 2>/dev/null; then
  echo "rabbitmqadmin delete of a queue that is gone succeeded"
  exit 1
fi
echo "rabbitmqadmin: list, declare, publish, get, export, import and delete all work"

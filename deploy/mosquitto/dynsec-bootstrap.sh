#!/bin/sh
# Creates the broker accounts of one central instance on a Mosquitto running
# the dynamic security plugin (postern.conf), through mosquitto_ctrl, as
# the administrator made by `mosquitto_ctrl dynsec init` (README.md):
#
#   <instance>         role postern-central: read and write the Postern
#                      topics (plain and $share/<group>/ subscriptions);
#                      mqtt.username / mqtt.client_id / mqtt.password
#   <instance>-dynsec  role postern-dynsec: only the plugin's control topic
#                      and its response topic, to create and delete edge
#                      accounts; mqtt.dynsec_username / mqtt.dynsec_password
#
# Usage (run once per central instance; safe to run again):
#
#   ADMIN_PASSWORD=… CENTRAL_PASSWORD=… DYNSEC_PASSWORD=… \
#     dynsec-bootstrap.sh postern-central
#
# Environment: MQTT_HOST (127.0.0.1), MQTT_PORT (1883), ADMIN_USER (admin),
# TOPIC_PREFIX (postern/v1; central's mqtt.topic_prefix). Passwords are
# passed to mosquitto_ctrl on its command line: run this on the broker host,
# over the loopback listener, not from a shared machine.
set -eu

instance=${1:?usage: dynsec-bootstrap.sh INSTANCE-NAME (e.g. postern-central)}
: "${ADMIN_PASSWORD:?set ADMIN_PASSWORD (the dynsec administrator's)}"
: "${CENTRAL_PASSWORD:?set CENTRAL_PASSWORD (mqtt.password of $instance)}"
: "${DYNSEC_PASSWORD:?set DYNSEC_PASSWORD (mqtt.dynsec_password of $instance)}"
host=${MQTT_HOST:-127.0.0.1}
port=${MQTT_PORT:-1883}
admin=${ADMIN_USER:-admin}
prefix=${TOPIC_PREFIX:-postern/v1}
prefix=${prefix#/}
prefix=${prefix%/}

# mosquitto_ctrl exits 0 even when the plugin refuses a command: look at
# what it prints. "already exists" is fine (a second run).
ctrl() {
	out=$(mosquitto_ctrl -h "$host" -p "$port" -u "$admin" -P "$ADMIN_PASSWORD" dynsec "$@" 2>&1 |
		grep -v -e 'running mosquitto_ctrl without encryption' -e 'configuration changes you are making' -e '^$' || true)
	case $out in
	*"already exists"*) ;;
	*Error*|*rror:*|*"Connection refused"*|*"not authorised"*|*"Problem"*)
		echo "dynsec-bootstrap: mosquitto_ctrl dynsec $1 $2: $out" >&2
		exit 1
		;;
	esac
}

ctrl createRole postern-central
ctrl addRoleACL postern-central publishClientSend "$prefix/#" allow
ctrl addRoleACL postern-central subscribePattern "$prefix/#" allow
ctrl addRoleACL postern-central publishClientReceive "$prefix/#" allow
ctrl addRoleACL postern-central subscribePattern "\$share/+/$prefix/#" allow

ctrl createRole postern-dynsec
ctrl addRoleACL postern-dynsec publishClientSend '$CONTROL/dynamic-security/v1' allow
ctrl addRoleACL postern-dynsec subscribeLiteral '$CONTROL/dynamic-security/v1/response' allow
# The plugin's default access does not cover $ topics: without this line
# the answers never arrive.
ctrl addRoleACL postern-dynsec publishClientReceive '$CONTROL/dynamic-security/v1/response' allow

ctrl createClient "$instance" -p "$CENTRAL_PASSWORD"
ctrl setClientPassword "$instance" "$CENTRAL_PASSWORD"
ctrl addClientRole "$instance" postern-central
ctrl createClient "$instance-dynsec" -p "$DYNSEC_PASSWORD"
ctrl setClientPassword "$instance-dynsec" "$DYNSEC_PASSWORD"
ctrl addClientRole "$instance-dynsec" postern-dynsec
echo "dynsec-bootstrap: $instance (role postern-central) and $instance-dynsec (role postern-dynsec) are ready"

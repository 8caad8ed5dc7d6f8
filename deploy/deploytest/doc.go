// Package deploytest checks the deployment kit in deploy/ against the real
// programs it configures: Mosquitto started with the shipped
// deploy/mosquitto configuration (TLS listener, password file, ACL), and
// the systemd units in deploy/systemd verified and scored by
// systemd-analyze. The packages themselves are tested by
// deploy/test/packages-test.sh (it needs root and dpkg).
//
// Tests skip when a tool is missing, unless the CI environment variable is
// set (then a missing tool is a failure).
package deploytest

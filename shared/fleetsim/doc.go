// Package fleetsim holds the fleet simulation (TestFleetSimulation, run by
// `make bench`): a `postern-central serve` process on PostgreSQL, a
// private Mosquitto with the shipped configuration, and hundreds of edge
// sync clients in one process, each a real paho MQTT client with a
// persistent session and the real verification, delta and apply code.
// It measures approve-to-enforced latency across the fleet, broker bytes
// per change, central's CPU and memory, and the rate at which central
// stores the edges' events in PostgreSQL.
package fleetsim

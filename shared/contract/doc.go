// Package contract tests the edge↔central sync contract (docs/CONTRACT.md)
// with both real sides in one process: central's fleet service and store,
// and edges' central clients, device tables and spools, over the embedded
// broker and Mosquitto (brokertest.Each). It is the one place where tests
// import both edge and central packages; edge/e2e runs the same contract
// through the built binaries.
package contract

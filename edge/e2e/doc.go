// Package e2e holds end-to-end tests of the edge: they build the
// postern-edge binary, run it as a child process in a throwaway folder with
// a loopback miekg/dns server as its resolver, and talk SMTP to it over
// real TCP from different 127.0.0.x source addresses. The crash test
// kill -9s the binary mid-traffic and checks that every message that got
// "250" is in the spool intact. The sync test also builds postern-central
// and runs it with two enrolled edges (registration, approval and an
// edge-reported suspension reaching the other edge). There is no non-test
// code here.
package e2e

package contract_test

import "github.com/postern/postern/central/broker"

func brokerHash(pw string) string { return broker.HashPassword(pw) }

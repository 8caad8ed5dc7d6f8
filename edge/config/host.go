package config

import "os"

var osHostname = os.Hostname

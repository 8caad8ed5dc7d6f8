// Package configfile decodes Postern's TOML configuration files strictly:
// a key the program does not know is an error that names the key, so a typo
// never silently falls back to a default.
package configfile

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
)

// Error is a configuration error about one key. Key uses the dotted TOML
// path (for example "smtp.listen" or "devices[2].status").
type Error struct {
	Key string
	Msg string
}

func (e *Error) Error() string { return fmt.Sprintf("config: %s: %s", e.Key, e.Msg) }

// Errorf builds an *Error for key.
func Errorf(key, format string, args ...any) *Error {
	return &Error{Key: key, Msg: fmt.Sprintf(format, args...)}
}

// Decode reads the TOML text in data into dst, which must already hold the
// defaults. Unknown keys and type mismatches are reported by key name.
func Decode(data string, dst any) error {
	md, err := toml.Decode(data, dst)
	if err != nil {
		var perr toml.ParseError
		if errors.As(err, &perr) {
			return fmt.Errorf("config: %s", perr.ErrorWithPosition())
		}
		return fmt.Errorf("config: %w", err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, 0, len(und))
		for _, k := range und {
			keys = append(keys, k.String())
		}
		sort.Strings(keys)
		return &Error{Key: keys[0], Msg: "unknown key" + others(keys)}
	}
	return nil
}

func others(keys []string) string {
	if len(keys) == 1 {
		return ""
	}
	return fmt.Sprintf(" (also unknown: %s)", strings.Join(keys[1:], ", "))
}

// Load reads the file at path into dst (see Decode).
func Load(path string, dst any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if err := Decode(string(b), dst); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

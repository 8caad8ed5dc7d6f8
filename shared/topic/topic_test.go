package topic

import (
	"testing"
	"time"
)

func TestNames(t *testing.T) {
	tp := New("/org/x/")
	if got := tp.Allowlist(); got != "org/x/allowlist" {
		t.Errorf("Allowlist = %q", got)
	}
	if got := tp.AllowlistDelta(); got != "org/x/allowlist/delta" {
		t.Errorf("AllowlistDelta = %q", got)
	}
	if got := tp.Events("e1"); got != "org/x/edges/e1/events" {
		t.Errorf("Events = %q", got)
	}
	if New("").Prefix() != DefaultPrefix {
		t.Error("empty prefix is not the default")
	}
}

func TestParseEdge(t *testing.T) {
	tp := New("")
	cases := []struct {
		in         string
		edge, kind string
		ok         bool
	}{
		{"postern/v1/edges/e1/events", "e1", KindEvents, true},
		{"postern/v1/edges/e-2_x/status", "e-2_x", KindStatus, true},
		{"postern/v1/edges/e1/other", "", "", false},
		{"postern/v1/edges/E1/events", "", "", false},
		{"postern/v1/edges/+/events", "", "", false},
		{"postern/v1/edges/a/b/events", "", "", false},
		{"postern/v2/edges/e1/events", "", "", false},
		{"postern/v1/allowlist", "", "", false},
	}
	for _, c := range cases {
		edge, kind, ok := tp.ParseEdge(c.in)
		if edge != c.edge || kind != c.kind || ok != c.ok {
			t.Errorf("ParseEdge(%q) = %q %q %v", c.in, edge, kind, ok)
		}
	}
}

func TestValidEdgeID(t *testing.T) {
	for id, ok := range map[string]bool{
		"edge1": true, "b-12_x": true, "0a": true,
		"": false, "-a": false, "_a": false, "A": false, "a/b": false, "a+": false, "a#": false, "a b": false,
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa": false, // 65
	} {
		if err := ValidEdgeID(id); (err == nil) != ok {
			t.Errorf("ValidEdgeID(%q) = %v", id, err)
		}
	}
}

func TestStatusRoundTrip(t *testing.T) {
	s := Status{Edge: "e1", Online: true, Time: time.Unix(1, 0).UTC(), AllowlistVersion: 3, Counters: map[string]int64{"x": 1}}
	b, err := MarshalStatus(s)
	if err != nil {
		t.Fatal(err)
	}
	got, err := UnmarshalStatus(b)
	if err != nil || got.AllowlistVersion != 3 || got.Counters["x"] != 1 {
		t.Fatalf("%+v %v", got, err)
	}
	if _, err := UnmarshalStatus([]byte(`{"edge":"../x"}`)); err == nil {
		t.Error("bad edge id accepted")
	}
}

package policy

import (
	"bufio"
	"bytes"
	"io"
	"mime"
	"net/mail"
	"net/textproto"
	"strings"
)

// lenientParser parses address lists and passes RFC 2047 words in charsets
// Go does not know through undecoded: the check is about structure, and a
// display name in windows-1252 from an old copier is no reason to refuse
// its mail.
var lenientParser = mail.AddressParser{
	WordDecoder: &mime.WordDecoder{
		CharsetReader: func(_ string, input io.Reader) (io.Reader, error) { return input, nil },
	},
}

// CheckHeader checks the RFC 5322 header section of msg (the message as
// received, CRLF line ends): there must be exactly one From header and it
// must parse as an address list with at least one address. The SMTP layer
// calls it at the end of DATA, before the message is stored.
func CheckHeader(msg []byte) *Reply {
	hdr := msg
	if i := bytes.Index(msg, []byte("\r\n\r\n")); i >= 0 {
		hdr = msg[:i+4]
	} else if bytes.HasPrefix(msg, []byte("\r\n")) {
		return FromMissing() // empty header section
	}
	h, err := textproto.NewReader(bufio.NewReader(bytes.NewReader(hdr))).ReadMIMEHeader()
	if err != nil && (err != io.EOF || len(h) == 0) {
		if err == io.EOF {
			return FromMissing()
		}
		return HeaderInvalid()
	}
	from := h.Values("From")
	switch len(from) {
	case 0:
		return FromMissing()
	case 1:
	default:
		return FromMultiple()
	}
	if strings.TrimSpace(from[0]) == "" {
		return FromInvalid()
	}
	list, err := lenientParser.ParseList(from[0])
	if err != nil || len(list) == 0 {
		return FromInvalid()
	}
	return nil
}

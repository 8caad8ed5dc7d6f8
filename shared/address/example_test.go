package address_test

import (
	"errors"
	"fmt"

	"github.com/postern/postern/shared/address"
)

func ExampleParsePath() {
	for _, p := range []string{
		"<Scanner.3F@Example.EDU.>",
		"<user%evil.com@example.edu>",
		`<"user@evil.com"@example.edu>`,
		"<user@bücher.example>",
		"<@relay.example:user@example.edu>",
	} {
		a, err := address.ParsePath(p)
		switch {
		case errors.Is(err, address.ErrSourceRoute):
			fmt.Println("refused:", err)
		case err != nil:
			fmt.Println("error:", err)
		default:
			fmt.Printf("local %s domain %s\n", a.Local, a.Domain)
		}
	}
	// Output:
	// local Scanner.3F domain example.edu
	// local user%evil.com domain example.edu
	// local "user@evil.com" domain example.edu
	// local user domain xn--bcher-kva.example
	// refused: source route not accepted: "<@relay.example:user@example.edu>": send to the final mailbox without the @relay: prefix
}

func ExampleDomainList() {
	// ".example.edu" covers subdomains only; list the apex as well.
	l, err := address.NewDomainList([]string{"example.edu", ".example.edu"})
	if err != nil {
		panic(err)
	}
	for _, d := range []string{"example.edu.", "Mail.Example.Edu", "evilexample.edu", "example.edu.evil.com", "ex\u0430mple.edu", "[192.0.2.1]"} {
		fmt.Printf("%q %v\n", d, l.Contains(d))
	}
	// Output:
	// "example.edu." true
	// "Mail.Example.Edu" true
	// "evilexample.edu" false
	// "example.edu.evil.com" false
	// "exаmple.edu" false
	// "[192.0.2.1]" false
}

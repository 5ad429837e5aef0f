package domain_test

import (
	"strings"
	"testing"

	"orderd/domain"
)

// The characters SQS refuses in a message, and those refused in names although SQS takes
// them; each must be refused in every text field of a placement.
var (
	queueRefused = map[string]string{
		"U+0000": "\x00", "U+0008": "\b", "U+001F": "\x1f", "U+FFFE": "\uFFFE", "U+FFFF": "\uFFFF",
	}
	nameRefused = map[string]string{
		"tab": "\t", "LF": "\n", "CR": "\r", "DEL": "\x7f", "C1 U+0085": "\u0085", "C1 U+009B": "\u009b",
		"LRE U+202A": "\u202a", "RLE U+202B": "\u202b", "PDF U+202C": "\u202c", "LRO U+202D": "\u202d", "RLO U+202E": "\u202e",
		"LRI U+2066": "\u2066", "RLI U+2067": "\u2067", "FSI U+2068": "\u2068", "PDI U+2069": "\u2069",
		"LRM U+200E": "\u200e", "RLM U+200F": "\u200f", "ALM U+061C": "\u061c",
		"ZWSP U+200B": "\u200b", "ZWNJ U+200C": "\u200c", "ZWJ U+200D": "\u200d", "WJ U+2060": "\u2060", "BOM U+FEFF": "\ufeff",
		"soft hyphen U+00AD": "\u00ad", "tag U+E0041": "\U000E0041",
		"LS U+2028": "\u2028", "PS U+2029": "\u2029",
		"noncharacter U+FDD0": "\uFDD0", "noncharacter U+1FFFF": "\U0001FFFF", "noncharacter U+10FFFE": "\U0010FFFE",
		"invalid UTF-8": "\xff", "truncated UTF-8": "\xe2\x82", "encoded surrogate": "\xed\xa0\x80",
	}
	// nameAccepted are characters a real name may hold.
	nameAccepted = []string{
		"Zoë Müller", "O'Brien-Smith", "José María", "Łukasz", "Сергей", "李小龙", "محمد", "שרה", "Nguyễn Thị",
		"Ann\u00a0Lee", "Ann\u3000Lee", "😀", "\U00010348", "\uE000 private use", "\uFFFD",
	}
)

func TestNameCharacters(t *testing.T) {
	refused := map[string]string{}
	for k, v := range queueRefused {
		refused[k] = v
	}
	for k, v := range nameRefused {
		refused[k] = v
	}
	for what, c := range refused {
		t.Run(what, func(t *testing.T) {
			for _, name := range []string{"Ann" + c + "Lee", c + "Ann", "Ann" + c} {
				// Whitespace (tab, LF, CR, U+0085, U+2028, U+2029) at either end is trimmed
				// away with the rest; only inside is it refused.
				if strings.TrimSpace(name) == name {
					assertInvalid(t, with(func(p *domain.Placement) { p.CustomerName = name }).Validate(), "customerName")
				}
				sku := with(func(p *domain.Placement) { p.Items[1].SKU = "SKU" + c + "1" })
				assertInvalid(t, sku.Validate(), "items[1].sku")
			}
		})
	}
	for _, name := range nameAccepted {
		if err := with(func(p *domain.Placement) { p.CustomerName = name }).Validate(); err != nil {
			t.Errorf("name %q: %v", name, err)
		}
	}
}

func TestLengthsCountCharacters(t *testing.T) {
	tests := []struct {
		name  string
		p     domain.Placement
		field string // "" when accepted
	}{
		{"name of 100 four-byte characters (400 bytes)", with(func(p *domain.Placement) { p.CustomerName = strings.Repeat("😀", 100) }), ""},
		{"name of 101 ASCII characters", with(func(p *domain.Placement) { p.CustomerName = strings.Repeat("a", 101) }), "customerName"},
		{"name of 101 three-byte characters", with(func(p *domain.Placement) { p.CustomerName = strings.Repeat("龍", 101) }), "customerName"},
		{"SKU of 64 two-byte characters (128 bytes)", with(func(p *domain.Placement) { p.Items[0].SKU = strings.Repeat("é", 64) }), ""},
		{"SKU of 65 characters", with(func(p *domain.Placement) { p.Items[0].SKU = strings.Repeat("é", 65) }), "items[0].sku"},
		{"email of 254 bytes", with(func(p *domain.Placement) { p.CustomerEmail = emailOfLen(254) }), ""},
		{"email of 255 bytes", with(func(p *domain.Placement) { p.CustomerEmail = emailOfLen(255) }), "customerEmail"},
		{"local part of 64", with(func(p *domain.Placement) { p.CustomerEmail = strings.Repeat("a", 64) + "@example.com" }), ""},
		{"local part of 65", with(func(p *domain.Placement) { p.CustomerEmail = strings.Repeat("a", 65) + "@example.com" }), "customerEmail"},
		{"domain label of 63", with(func(p *domain.Placement) { p.CustomerEmail = "a@" + strings.Repeat("b", 63) + ".com" }), ""},
		{"domain label of 64", with(func(p *domain.Placement) { p.CustomerEmail = "a@" + strings.Repeat("b", 64) + ".com" }), "customerEmail"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.p.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			assertInvalid(t, err, tc.field)
		})
	}
}

// TestEmailsAShopNeverDeliversTo: placement refuses addresses whose mail could never arrive,
// so that no order waits on an email that cannot be sent.
func TestEmailsAShopNeverDeliversTo(t *testing.T) {
	refused := map[string]string{
		"IPv4 literal":                 "a@[127.0.0.1]",
		"IPv6 literal":                 "a@[IPv6:::1]",
		"dotted IP, no brackets":       "a@127.0.0.1",
		"numeric top level":            "a@example.123",
		"dot-less domain":              "a@shop",
		"localhost":                    "a@localhost",
		"LOCALHOST":                    "a@LOCALHOST",
		"*.localhost":                  "a@shop.localhost",
		"*.local":                      "a@printer.local",
		"*.invalid":                    "a@example.invalid",
		"display name":                 "Ann <ann@example.com>",
		"angle brackets":               "<ann@example.com>",
		"comment":                      "ann@example.com (Ann)",
		"quoted local part":            `"ann lee"@example.com`,
		"two addresses":                "ann@example.com,bob@example.com",
		"group":                        "friends: ann@example.com;",
		"underscore in domain":         "a@ex_ample.com",
		"hyphen-led label":             "a@-example.com",
		"hyphen-ended label":           "a@example-.com",
		"empty label":                  "a@example..com",
		"trailing dot":                 "a@example.com.",
		"non-ASCII local part":         "jörg@example.com",
		"non-ASCII domain":             "a@exämple.com",
		"punycode look-alike with NUL": "a@example.com\x00",
		"CRLF":                         "a@example.com\r\nBcc: x@example.com",
		"no @":                         "ann.example.com",
	}
	for what, addr := range refused {
		t.Run(what, func(t *testing.T) {
			assertInvalid(t, with(func(p *domain.Placement) { p.CustomerEmail = addr }).Validate(), "customerEmail")
		})
	}
	for _, addr := range []string{
		"ann@example.com", "Ann.Lee+orders@Example.COM", "a@b.co", "x@mail.xn--p1ai", "o'brien@example.ie",
		"a@sub.domain-with-hyphen.example", "1234@example.com", "a@123.example.com",
	} {
		if err := with(func(p *domain.Placement) { p.CustomerEmail = addr }).Validate(); err != nil {
			t.Errorf("%q: %v", addr, err)
		}
	}
}

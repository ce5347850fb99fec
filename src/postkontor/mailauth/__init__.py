"""Message authentication: SPF (`spf`, RFC 7208), DMARC (`dmarc`, RFC 7489), Authentication-Results (`results`,
RFC 8601), DKIM and ARC (`dkim`, `arc`).

Pure apart from DNS, which comes in through an injectable resolver (`dnsview.Lookup`, normally
`postkontor.dns.MailResolver`).
"""

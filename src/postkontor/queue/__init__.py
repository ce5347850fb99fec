"""The outbound queue: mail for remote recipients, kept until delivered or bounced (RFC 5321 §4.5.4)."""

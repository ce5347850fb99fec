"""Message-level pieces that need no IO: envelope addresses (RFC 5321 §4.1.2) and trace headers
(RFC 5321 §4.4)."""

from postkontor.message.address import Address, AddressError, parse_path, parse_reverse_path

__all__ = ["Address", "AddressError", "parse_path", "parse_reverse_path"]

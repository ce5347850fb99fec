"""Authentication support: password hashing (Argon2id, RFC 9106) for SMTP AUTH and IMAP/POP3 logins."""

from postkontor.auth.passwords import PasswordHasher

__all__ = ["PasswordHasher"]

"""postkontor: a complete, self-hosted mail server (SMTP reception and submission, queue, Maildir, IMAP/POP3)."""

__version__ = "0.1.0"

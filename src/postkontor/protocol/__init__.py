"""Sans-IO protocol engines (SMTP now; IMAP and POP3 later) and the SASL mechanisms they share.

Nothing in this package does IO or reads the clock: bytes in, events out, replies to bytes (h11 style).
"""

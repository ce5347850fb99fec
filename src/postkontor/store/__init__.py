"""State behind small interfaces: accounts (SQLite by default) and mailboxes (Maildir++)."""

"""The durable spool: journal with group commit, replayed after a crash."""

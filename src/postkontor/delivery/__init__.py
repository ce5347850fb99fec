"""Delivery agents: local (Maildir, outbound queue hand-off); remote delivery and bounces come with the queue."""

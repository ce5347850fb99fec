"""Suite-wide settings.

Hypothesis' per-example deadline is a timed assertion, and this suite runs on shared, noisy machines (a first
example that loads modules has taken 300 ms here): examples are bounded by count, never by time.
"""

from __future__ import annotations

from hypothesis import settings

settings.register_profile("postkontor", deadline=None)
settings.load_profile("postkontor")

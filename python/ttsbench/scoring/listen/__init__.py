"""Blind A/B identity listening: a session (seeded order, progress on disk), a loopback web page, a terminal mode."""

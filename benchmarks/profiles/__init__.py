"""Profiling scripts behind `improv bench`'s notes; run by hand (see README.md here), never by the bench."""

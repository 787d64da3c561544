"""Tests that reach into the SQLite adapter itself: its writer, its files, its disk."""

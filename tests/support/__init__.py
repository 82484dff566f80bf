"""Test helpers shared by the suites and the scripts that record reference transcripts."""

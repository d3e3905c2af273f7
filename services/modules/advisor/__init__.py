"""The optional advisor: proposes module weights when backlogs are out of balance (off by default)."""

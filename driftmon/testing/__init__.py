"""Test and demo infrastructure, never imported by the daemon: a local webhook
receiver (:mod:`.receiver`)."""

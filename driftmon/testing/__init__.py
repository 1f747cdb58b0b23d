"""Test, demo and benchmark infrastructure, never imported by the daemon: an
embedded Kafka-compatible broker (:mod:`.embedded`) with a local S3 for storage
that survives restarts (:mod:`.s3`), synthetic recommender traffic
(:mod:`.synth`) and a local webhook receiver (:mod:`.receiver`)."""

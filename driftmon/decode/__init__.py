"""The decode stage: raw JSON events to columns (:mod:`.events`), optionally in a
second process that overlaps kafka-python's parsing (:mod:`.worker`)."""
